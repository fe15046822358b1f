"""The front's HTTP/1.1 connections: uvicorn's httptools protocol with bounds on the request head
and on how slowly a client may send its body or read its answer.

uvicorn puts no limit on a request's line or headers, nor on how long they may take to arrive: one
client could make the front buffer megabytes of headers (and hand them all to MLflow), or hold
connections open by sending a byte a minute. These bounds refuse such requests before any
routing, with a 414, 431 or 408 in MLflow's error shape.

Nor does uvicorn bound a request's body or a client's reading: while a body streams to MLflow, or
a large answer streams back, the front holds one of its connections to MLflow, so 512 clients that
sent part of a body and then nothing took them all. A client that owes body bytes and sends none
for `client_idle_seconds` (or, past that time, sends them slower than `client_min_bytes_per_second`
on average) gets 408; one that reads nothing of its answer for `client_idle_seconds` is cut off. A
timer per connection watches, armed only while a body is owed or writing is paused: a request whose
body came with its head costs nothing but a byte count. Time when the front itself is not reading
(flow control, a pipelined request waiting, an unanswered `Expect: 100-continue`) is not counted.
The request's scope then says what the client got, for the request log: `CUT_OFF_EXTENSION`.

And uvicorn writes a response's head and its body in two system calls; `HeldWrites` makes them one.

The one module that touches uvicorn's internals (uvicorn.protocols.http.httptools_impl and
flow_control): it subclasses HttpToolsProtocol and relies on its parser callbacks (`on_message_begin`,
`on_url`, `on_headers_complete`), `data_received`, `connection_made`, `connection_lost`, `shutdown`,
`self.url`, `self.headers`, `self.cycle` (and the cycle's `transport`, through which it writes a
response's status line first, `scope`, `body`, `more_body`, `response_started`, `response_complete`,
`disconnected`, `message_event` and `waiting_for_100_continue`), `self.flow` (`read_paused`,
`write_paused`), `pause_writing` (called by the transport), `self.transport`, `self.loop`,
`self.client`, `self.server_state.default_headers`, `send_400_response` and
`_unsupported_upgrade_warning`, as in uvicorn 0.54 (`UVICORN_CHECKED`). Importing it with another
uvicorn release raises `UntestedUvicorn` (an ImportError) in one line, so the front does not start
on internals it was not tested with; tests/proxy/edge/test_http_protocol.py holds uvicorn to all of
the above.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.errors import error_body
from proxy.exchange import CUT_OFF_EXTENSION

log = logging.getLogger("mlflow_app.front")

UVICORN_CHECKED = "0.54"  # the uvicorn release (major.minor) this module was read against and tested with


class UntestedUvicorn(ImportError):
    """The installed uvicorn is not the release this module was tested with."""


def untested_uvicorn(installed: str | None) -> str | None:
    """The one line that refuses `installed` (a uvicorn version); None for the tested release."""
    if installed and ".".join(installed.split(".")[:2]) == UVICORN_CHECKED:
        return None
    return (
        f"mlflow-app's front HTTP edge was tested with uvicorn {UVICORN_CHECKED}; installed: {installed}. Install uvicorn=={UVICORN_CHECKED}.* or an mlflow-app release made for {installed}."
    )


if _refusal := untested_uvicorn(importlib.metadata.version("uvicorn")):
    raise UntestedUvicorn(_refusal)

MAX_TARGET_BYTES = 32 * 1024  # the request target: path and query string
MAX_HEAD_BYTES = 64 * 1024  # the request line and every header together
MAX_HEADER_FIELDS = 128
HEAD_TIMEOUT_SECONDS = 60.0  # from a connection's opening, or a head's first byte, to the head's end
CLIENT_IDLE_SECONDS = 60.0  # longest time a client may send nothing it owes, or read nothing it is sent
CLIENT_MIN_BYTES_PER_SECOND = 1024  # a request body's least average rate, once CLIENT_IDLE_SECONDS have passed
STALL_CHECK_SECONDS = 1.0  # how often a watched connection is looked at (more often for a short idle limit)

REASONS = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


class HeadRefused(Exception):
    """Raised in a parser callback to stop parsing; uvicorn then calls `send_400_response`."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses oversized or slow request heads with 414, 431 or 408, answers
    408 to a request body that stalls or trickles, and cuts off a client that stops reading.

    The limits are class attributes, so that a subclass (or a test) can change them; `with_limits`
    makes such a subclass.
    """

    max_target_bytes = MAX_TARGET_BYTES
    max_head_bytes = MAX_HEAD_BYTES
    max_header_fields = MAX_HEADER_FIELDS
    head_timeout_seconds = HEAD_TIMEOUT_SECONDS
    client_idle_seconds = CLIENT_IDLE_SECONDS
    client_min_bytes_per_second = CLIENT_MIN_BYTES_PER_SECOND  # 0: no rate check, the idle limit alone

    @classmethod
    def with_limits(
        cls,
        *,
        client_idle_seconds: float | None = None,
        client_min_bytes_per_second: float | None = None,
    ) -> type[BoundedHttpToolsProtocol]:
        """A subclass with these client limits (None keeps this class's), to pass as uvicorn's `http`.

        `client_idle_seconds` must be positive; `client_min_bytes_per_second` at least 0 (0 turns the
        rate check off)."""
        limits: dict[str, float] = {}
        if client_idle_seconds is not None:
            if not client_idle_seconds > 0:
                raise ValueError(f"client_idle_seconds must be positive, not {client_idle_seconds!r}")
            limits["client_idle_seconds"] = float(client_idle_seconds)
        if client_min_bytes_per_second is not None:
            if not client_min_bytes_per_second >= 0:
                raise ValueError(f"client_min_bytes_per_second must be 0 or more, not {client_min_bytes_per_second!r}")
            limits["client_min_bytes_per_second"] = client_min_bytes_per_second
        return type(cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__, **limits})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # from a message's first byte to the end of its headers
        self._unparsed_bytes = 0  # bytes read since a head began, while it is still incomplete
        self._head_deadline = 0.0  # loop time by which the head now arriving must be whole
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None
        # Slow clients: one timer per connection, armed only while there is something to watch.
        self._received = 0  # bytes read on this connection
        self._stall_timer: asyncio.TimerHandle | None = None
        self._write_paused_at = 0.0  # loop time the transport last asked us to stop writing
        self._body_cycle = None  # the request whose body is owed, while it is
        self._body_bytes = 0  # `_received` when that body began (less its bytes already here)
        self._body_seen = 0  # `_received` when the body last made progress
        self._body_clock = 0.0  # loop time the body's time was last counted up to
        self._body_seconds = 0.0  # time the body has been owed, the front reading
        self._body_quiet = 0.0  # of that, time since the body last made progress

    # --- the connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a request is not kept forever

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._body_cycle = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        size = len(data)
        self._received += size
        if self._in_head:
            self._unparsed_bytes += size
        super().data_received(data)
        # A header still arriving is buffered whole by the parser, unseen by the callbacks; a head
        # still incomplete after this chunk holds all of the chunk's bytes.
        if self._in_head and self._unparsed_bytes > self.max_head_bytes and not self.transport.is_closing():
            self._refusal = (431, f"The request's headers exceed {self.max_head_bytes} bytes.")
            self.send_400_response("")
        cycle = self.cycle
        # The usual request is whole by now (more_body False): nothing more to do for it.
        if cycle is not None and cycle.more_body and cycle is not self._body_cycle:
            if not cycle.response_complete and not self.transport.is_closing():
                self._watch_body(cycle)

    def pause_writing(self) -> None:
        """Called by the transport when what we write piles up unsent: the client is not reading."""
        super().pause_writing()
        self._write_paused_at = self.loop.time()
        if self._stall_timer is None:
            self._arm_stall_timer()

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
        refusal = self._refusal
        status, message = refusal or (400, "Invalid HTTP request: the front could not parse it.")
        self._refusal = None
        if refusal is not None:  # one of ours: the request log never sees it, so say here what was answered
            log.warning("refused a request from %s with %s: %s", self._client_host(), status, message)
        self._answer_and_close(status, message)

    def _answer_and_close(self, status: int, message: str) -> None:
        """Our own answer, in MLflow's error shape, and the end of the connection."""
        self._flush_held()  # an answer still held for the request before this one goes first
        body = error_body(status, message)
        head = [f"HTTP/1.1 {status} {REASONS[status]}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
        self._in_head = False
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            self.transport.close()

    def _client_host(self) -> str:
        return self.client[0] if self.client else "?"

    # --- slow clients ------------------------------------------------------------------------

    def _watch_body(self, cycle) -> None:
        """Start the clock on a request body still owed once its first chunk has been read."""
        now = self.loop.time()
        self._body_cycle = cycle
        self._body_bytes = self._received - len(cycle.body)  # the body bytes already here count
        self._body_seen = self._received
        self._body_clock = now
        self._body_seconds = 0.0
        self._body_quiet = 0.0
        if self._stall_timer is None:
            self._arm_stall_timer()

    def _arm_stall_timer(self) -> None:
        self._stall_timer = self.loop.call_later(min(STALL_CHECK_SECONDS, self.client_idle_seconds / 4), self._stall_check)

    def _stall_check(self) -> None:
        """Every second or so while a body is owed or writing is paused; disarms itself otherwise."""
        self._stall_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        idle = self.client_idle_seconds
        flow = self.flow
        if flow.write_paused and now - self._write_paused_at >= idle:
            self._cut_off_reader()
            return
        cycle = self._body_cycle
        if cycle is not None:
            if cycle is not self.cycle or not cycle.more_body or cycle.response_complete or cycle.disconnected:
                self._body_cycle = None  # arrived whole, answered, or gone: nothing owed any more
            else:
                elapsed = now - self._body_clock
                self._body_clock = now
                # Not the client's fault: the front is not reading (the app has not taken what came,
                # or a pipelined request waits), or the client waits for our 100 Continue.
                if not flow.read_paused and not cycle.waiting_for_100_continue:
                    self._body_seconds += elapsed
                    if self._received != self._body_seen:
                        self._body_seen = self._received
                        self._body_quiet = 0.0
                    else:
                        self._body_quiet += elapsed
                    if self._body_quiet >= idle:
                        self._cut_off_body(
                            cycle,
                            f"sent no bytes of its request body for {idle:g} s",
                            f"The request's body stopped arriving: no bytes for {idle:g} s.",
                        )
                        return
                    rate = self.client_min_bytes_per_second
                    if rate and self._body_seconds >= idle:
                        got = (self._received - self._body_bytes) / self._body_seconds
                        if got < rate:
                            self._cut_off_body(
                                cycle,
                                f"sent its request body at {got:.0f} bytes/s, under the {rate:g} required",
                                f"The request's body arrived too slowly: {got:.0f} bytes/s, under the {rate:g} bytes/s required.",
                            )
                            return
        if self._body_cycle is not None or flow.write_paused:
            self._arm_stall_timer()

    def _cut_off_body(self, cycle, why: str, message: str) -> None:
        scope = cycle.scope
        if not cycle.response_started:
            scope.setdefault("extensions", {})[CUT_OFF_EXTENSION] = 408
            log.warning("cut off a slow client at %s: %s %s %s; answered 408", self._client_host(), scope["method"], scope["path"], why)
            self._release_app(cycle)
            self._answer_and_close(408, message)
            return
        self._mark_status_sent(cycle)
        log.warning("cut off a slow client at %s: %s %s %s; its answer was under way", self._client_host(), scope["method"], scope["path"], why)
        self._release_app(cycle)
        self.transport.abort()  # the answer is cut short anyway: nothing of it is worth flushing

    def _cut_off_reader(self) -> None:
        cycle = self.cycle
        what = "(between requests)"
        if cycle is not None:
            what = f"{cycle.scope['method']} {cycle.scope['path']}"
            if not cycle.response_complete:
                self._mark_status_sent(cycle)
        log.warning(
            "cut off a slow client at %s: %s read nothing of its answer for %g s",
            self._client_host(),
            what,
            self.client_idle_seconds,
        )
        # close() would wait to flush what the client is not reading; uvicorn's connection_lost
        # then marks the request disconnected and releases the app's send() and receive().
        self.transport.abort()

    @staticmethod
    def _mark_status_sent(cycle) -> None:
        held = cycle.transport
        first = held.first if isinstance(held, HeldWrites) else None
        # The status line uvicorn wrote first (STATUS_LINE); unknown before it left, or after an
        # interim 100 Continue: then the request log keeps its own.
        if first and first.startswith(b"HTTP/1.1 ") and first[9:12].isdigit() and first[9:10] != b"1":
            cycle.scope.setdefault("extensions", {})[CUT_OFF_EXTENSION] = int(first[9:12])

    @staticmethod
    def _release_app(cycle) -> None:
        # What connection_lost would do, now rather than when our answer has been flushed: the
        # app's receive() returns http.disconnect and its send() writes nothing more.
        cycle.disconnected = True
        cycle.message_event.set()

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

    __slots__ = ("transport", "loop", "held", "held_bytes", "first")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.transport = transport
        self.loop = loop
        self.held: list[bytes] | None = None
        self.held_bytes = 0
        self.first: bytes | None = None  # the first write that left: the answer's head (or a 100 Continue)

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
            if self.first is None:  # kept to tell a client cut off later what status it got
                self.first = held[0]
            if not self.transport.is_closing():
                self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()
