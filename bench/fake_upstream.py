"""A fixed, fast HTTP/1.1 server standing in for MLflow, so a proxy is measured and nothing else.

    uv run python -m bench.fake_upstream --port 5001 --unix /tmp/fake.sock

One asyncio Protocol per connection with httptools parsing and keep-alive; every answer is
prepared bytes with a Content-Length, written in one call. What it answers:

| request | answer |
|---|---|
| `GET /big` | a JSON body of 64 KiB (BIG_BYTES) |
| `POST` anything | the request body read and dropped, then the small JSON body |
| anything else | a small JSON body of about 200 bytes (SMALL_BYTES), shaped like experiments/get |

It listens on loopback TCP and, with `--unix`, on a Unix socket too (both served by one loop), so
a proxy's TCP and Unix-socket paths to its upstream are measured against the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

import httptools

SMALL_BYTES = 200
BIG_BYTES = 64 * 1024


def json_body(size: int) -> bytes:
    """A JSON object of exactly `size` bytes, an experiment as MLflow answers experiments/get."""
    head = {"experiment": {"experiment_id": "1", "name": "bench", "artifact_location": "mlflow-artifacts:/1", "lifecycle_stage": "active"}}
    body = json.dumps({**head, "padding": ""}, separators=(",", ":")).encode()
    if len(body) > size:
        raise ValueError(f"{size} bytes is too small for the JSON body")
    return body.replace(b'"padding":""', b'"padding":"' + b"x" * (size - len(body)) + b'"')


def response(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode("ascii") + body


SMALL = response(json_body(SMALL_BYTES))
BIG = response(json_body(BIG_BYTES))
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class FakeUpstreamProtocol(asyncio.Protocol):
    """One connection: parse requests as they arrive and answer each when its body has been read."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    # httptools callbacks: the URL may arrive in pieces; the body is read and dropped.
    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        if self.transport.is_closing():
            return
        big = self.parser.get_method() == b"GET" and self.url.split(b"?", 1)[0] == b"/big"
        self.transport.write(BIG if big else SMALL)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int, unix_socket: str | None) -> None:
    """Serve on 127.0.0.1:`port` (and `unix_socket`) until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(FakeUpstreamProtocol, "127.0.0.1", port, backlog=1024)]
    if unix_socket:
        servers.append(await loop.create_unix_server(FakeUpstreamProtocol, unix_socket, backlog=1024))
        os.chmod(unix_socket, 0o777)  # nginx's workers run as another user
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def run(port: int, unix_socket: str | None) -> None:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(port, unix_socket))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="loopback TCP port to listen on")
    parser.add_argument("--unix", type=Path, help="also listen on this Unix socket")
    args = parser.parse_args()
    run(args.port, str(args.unix) if args.unix else None)


if __name__ == "__main__":
    main()
