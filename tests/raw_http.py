"""HTTP requests written byte for byte, for what a client library would normalise or refuse."""

from __future__ import annotations

import socket
import time


def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send `data` to 127.0.0.1:`port`, read until the server closes; returns (answer, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before we finished sending: the answer is already waiting
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer, time.monotonic() - started
