"""The front's HTTP/1.1 connections: uvicorn's httptools protocol with bounds on the request head.

uvicorn puts no limit on a request's line or headers, nor on how long they may take to arrive: one
client could make the front buffer megabytes of headers (and hand them all to MLflow), or hold
connections open by sending a byte a minute. These bounds refuse such requests before any
routing, with a 414, 431 or 408 in MLflow's error shape. And uvicorn writes a response's head
and its body in two system calls; `HeldWrites` makes them one.

The one module that touches uvicorn's internals (uvicorn.protocols.http.httptools_impl): it
subclasses HttpToolsProtocol and relies on its parser callbacks, `self.url`, `self.headers`,
`self.cycle` (and the cycle's `transport` and `response_complete`), `self.transport`,
`self.loop`, `self.server_state.default_headers` and `send_400_response`, as in uvicorn 0.54;
tests/launcher/test_http_protocol.py holds it to them.
"""

from __future__ import annotations

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("mlflow_app.front")

MAX_TARGET_BYTES = 32 * 1024  # the request target: path and query string
MAX_HEAD_BYTES = 64 * 1024  # the request line and every header together
MAX_HEADER_FIELDS = 128
HEAD_TIMEOUT_SECONDS = 60.0  # from a connection's opening, or a head's first byte, to the head's end

REASONS = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


class HeadRefused(Exception):
    """Raised in a parser callback to stop parsing; uvicorn then calls `send_400_response`."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses oversized or slow request heads with 414, 431 or 408.

    The limits are class attributes, so that a subclass (or a test) can change them.
    """

    max_target_bytes = MAX_TARGET_BYTES
    max_head_bytes = MAX_HEAD_BYTES
    max_header_fields = MAX_HEADER_FIELDS
    head_timeout_seconds = HEAD_TIMEOUT_SECONDS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # from a message's first byte to the end of its headers
        self._unparsed_bytes = 0  # bytes read since a head began, while it is still incomplete
        self._head_deadline = 0.0  # loop time by which the head now arriving must be whole
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None

    # --- the connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a request is not kept forever

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._unparsed_bytes += len(data)
        super().data_received(data)
        # A header still arriving is buffered whole by the parser, unseen by the callbacks; a head
        # still incomplete after this chunk holds all of the chunk's bytes.
        if self._in_head and self._unparsed_bytes > self.max_head_bytes and not self.transport.is_closing():
            self._refusal = (431, f"The request's headers exceed {self.max_head_bytes} bytes.")
            self.send_400_response("")

    # --- parser callbacks ------------------------------------------------------------------
    # Each runs once per request; the headers are counted when the head is whole (its bytes are
    # bounded meanwhile by data_received), not in a Python override called for every header.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._unparsed_bytes = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_target_bytes:
            self._refusal = (414, f"The request's URL exceeds {self.max_target_bytes} bytes.")
            raise HeadRefused

    def on_headers_complete(self) -> None:
        self._in_head = False
        headers = self.headers
        if len(headers) > self.max_header_fields:
            self._refusal = (431, f"The request has more than {self.max_header_fields} header fields.")
            raise HeadRefused
        if len(self.url) + sum(len(name) + len(value) + 4 for name, value in headers) > self.max_head_bytes:
            self._refusal = (431, f"The request's headers exceed {self.max_head_bytes} bytes.")
            raise HeadRefused
        codings = [value for name, value in headers if name == b"transfer-encoding"]
        if codings and (len(codings) > 1 or codings[0].strip().lower() != b"chunked"):
            # uvicorn would start the app before llhttp refuses such framing further on (and
            # `gzip, chunked` it accepts, still encoded): refused here, before anything runs.
            shown = b", ".join(codings).decode("latin-1")[:100]
            self._refusal = (
                400,
                f"Transfer-Encoding '{shown}' is not supported: send the body with Content-Length, or chunked alone.",
            )
            raise HeadRefused
        super().on_headers_complete()
        # The cycle uvicorn just made writes through this: a response's head and body in one send.
        self.cycle.transport = HeldWrites(self.transport, self.loop)

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn's warning advises installing a WebSocket library; the front has none on purpose
        # (ws="none") and answers an Upgrade request as plain HTTP.
        log.debug("Upgrade request answered as plain HTTP")

    # --- refusals ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        self._flush_held()  # uvicorn may close an idle connection now: what is held goes first
        super().shutdown()

    def _flush_held(self) -> None:
        if self.cycle is not None and isinstance(self.cycle.transport, HeldWrites):
            self.cycle.transport.flush()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request its parser rejects, and ours to one over a limit: JSON."""
        self._flush_held()  # an answer still held for the request before this one goes first
        refusal = self._refusal
        status, message = refusal or (400, "Invalid HTTP request: the front could not parse it.")
        self._refusal = None
        if refusal is not None:  # one of ours: the request log never sees it, so say here what was answered
            log.warning("refused a request from %s with %s: %s", self.client[0] if self.client else "?", status, message)
        body = json.dumps({"error_code": "BAD_REQUEST", "message": message}).encode()
        head = [f"HTTP/1.1 {status} {REASONS[status]}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
        self._in_head = False
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            self.transport.close()

    def _arm_head_timer(self) -> None:
        # One timer per connection, not one per request: a new head only moves the deadline, and
        # the timer, when it fires, looks at where the connection is then.
        self._head_deadline = self.loop.time() + self.head_timeout_seconds
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_timer_fired)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timer_fired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._in_head:
            if self.cycle is None:
                self.transport.close()  # opened, never used: there is no one to answer
            return  # between requests: keep-alive's timeout is in charge
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head behind a response still under way
            return
        if self.loop.time() < self._head_deadline:
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_timer_fired)
            return  # this head began after the timer was set: it has until its own deadline
        self._refusal = (408, f"The request's headers did not arrive within {self.head_timeout_seconds:g} s.")
        self.send_400_response("")


HELD_WRITE_LIMIT_BYTES = 64 * 1024


class HeldWrites:
    """The transport as one request's response sees it: writes wait for the event loop's next turn
    (or 64 KiB), so the status line and headers uvicorn writes at `http.response.start` leave in one
    system call, and one packet, with a body sent right after them. Closing writes what is held first."""

    __slots__ = ("transport", "loop", "held", "held_bytes")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.transport = transport
        self.loop = loop
        self.held: list[bytes] | None = None
        self.held_bytes = 0

    def write(self, data: bytes) -> None:
        if self.held is None:
            self.held = [data]
            self.held_bytes = len(data)
            self.loop.call_soon(self.flush)
        else:
            self.held.append(data)
            self.held_bytes += len(data)
        if self.held_bytes > HELD_WRITE_LIMIT_BYTES:
            self.flush()  # streaming: hold nothing back from flow control

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            if not self.transport.is_closing():
                self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()
