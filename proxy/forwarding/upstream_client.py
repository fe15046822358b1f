"""HTTP/1.1 to the MLflow child: a small pool of kept-alive connections to one loopback upstream.

Why not a general HTTP client (docs/benchmarks.md, "The upstream client"): httpx cost ~450 µs of
CPU per call here and aiohttp ~41 µs, and aiohttp's writer encodes header values as UTF-8 text, so
a header byte above 0x7f that is not UTF-8 (legal obs-text) cannot be forwarded as received. This
client writes the request head as the bytes the front already holds, parses answers with httptools
(the parser uvicorn uses), and keeps the idle connections in a stack: the most recently used one is
taken first and nothing is scanned.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

# Above this many unread answer bytes the connection stops reading from MLflow (backpressure).
READ_HIGH_WATER_BYTES = 1024 * 1024
# MLflow's uvicorn closes a connection idle for 5 s (its --timeout-keep-alive default): a pooled
# connection older than this is closed rather than raced against that close.
IDLE_REUSE_SECONDS = 4.0
MAX_IDLE_CONNECTIONS = 64
MAX_CONNECTIONS = 512
CONNECT_TIMEOUT_SECONDS = 5.0
_FRAMING_OR_CONNECTION = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class UpstreamError(Exception):
    """The exchange with MLflow failed; the connection is unusable."""


class UpstreamTimeout(UpstreamError):
    """MLflow took longer than the timeout to connect, take the body or answer."""


class UpstreamUnreachable(UpstreamError):
    """No connection could be made (nothing listening, or the socket is gone)."""


class UpstreamClosed(UpstreamError):
    """MLflow closed the connection (or sent something unparseable) before the answer was whole."""

    def __init__(self, message: str, answered: bool):
        super().__init__(message)
        self.answered = answered  # whether any part of an answer arrived


class UpstreamConnection(asyncio.Protocol):
    """One connection to MLflow: writes a request, then parses one answer at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.opened_for: AddressTally | None = None  # the child it was opened to
        self.idle_since = 0.0
        self._write_paused = False
        self._drained: asyncio.Future | None = None
        self._waiter: asyncio.Future | None = None
        self._begin_answer(expect_body=True)

    def _begin_answer(self, expect_body: bool) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.error: UpstreamError | None = None
        self._expect_body = expect_body  # False for HEAD: headers only, whatever they announce
        self._interim = False  # parsing a 1xx answer, which precedes the real one
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._framed = False  # Content-Length or chunked; else the body ends when MLflow closes
        self.has_length = False  # a Content-Length header came
        self.names_connection = False  # a Connection header came (it may list more hop-by-hop names)

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(UpstreamClosed("MLflow sent an answer the front could not parse", self.head_done))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and not self.complete and not self._framed:
            self.complete = True  # a close-delimited body ends here
            self._wake()
        elif not self.complete:
            self._fail(UpstreamClosed("MLflow closed the connection", self.head_done))
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # --- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _FRAMING_OR_CONNECTION:
            if name == b"content-length":
                self._framed = self.has_length = True
            elif name == b"connection":
                self.names_connection = True
            elif value.lower().endswith(b"chunked"):
                self._framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self._interim = True  # 100 Continue and the like: wait for the real answer
            self.headers = []
            self._framed = self.has_length = self.names_connection = False
            return
        self.status = status
        self.head_done = True
        if not self._expect_body:
            # An answer to HEAD announces a body it does not send; the parser cannot be told, so
            # this connection is not reused.
            self.complete = True
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH_WATER_BYTES and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.complete:
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # --- used by the forwarder ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise self.error or UpstreamClosed("MLflow closed the connection", False)
        self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait until MLflow has taken what was written (it reads uploads at its own pace)."""
        if self._write_paused and not self.closed:
            self._drained = self.loop.create_future()
            await self._wait_for(self._drained, timeout)
        if self.closed and self.error:
            raise self.error

    async def answer_head(self, timeout: float) -> None:
        """Wait for the status line and headers of MLflow's answer."""
        while not self.head_done:
            if self.error:
                raise self.error
            await self._wait(timeout)

    def take_body(self) -> bytes:
        """Everything of the body received so far, joined."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._reading_paused and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def read(self, timeout: float) -> bytes:
        """The next part of the body (whatever has arrived, joined); b"" once it is complete."""
        while not self._chunks:
            if self.complete:
                return b""
            if self.error:
                raise self.error
            await self._wait(timeout)
        return self.take_body()

    def expect(self, has_body: bool) -> None:
        """Prepare for the next answer (`has_body=False` for a HEAD request)."""
        self._begin_answer(expect_body=has_body)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # --- waiting -----------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    async def _wait(self, timeout: float) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._wait_for(self._waiter, timeout)
        finally:
            self._waiter = None

    async def _wait_for(self, future: asyncio.Future, timeout: float) -> None:
        # A timer per wait instead of asyncio.wait_for: no extra task or future on the hot path.
        timeout_handle = TimeoutHandle(self.loop, future, timeout)
        try:
            await future
        finally:
            timeout_handle.cancel()


class TimeoutHandle:
    """Fails `future` with UpstreamTimeout once `timeout` seconds have passed by the monotonic clock.
    (uvloop's timers run on a loop time cached at the start of an iteration, so one can fire a
    little before its delay has really passed; this one then waits out the rest.)"""

    __slots__ = ("loop", "future", "deadline", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future, timeout: float):
        self.loop = loop
        self.future = future
        self.deadline = time.monotonic() + timeout
        self.timer = loop.call_later(timeout, self.fire)

    def fire(self) -> None:
        if self.future.done():
            return
        remaining = self.deadline - time.monotonic()
        if remaining > 0:
            self.timer = self.loop.call_later(remaining, self.fire)
            return
        self.future.set_exception(UpstreamTimeout())

    def cancel(self) -> None:
        self.timer.cancel()


class PoolLoad(NamedTuple):
    """How busy the connections to MLflow are, for /health."""

    in_use: int
    limit: int
    waiting: int  # requests waiting for a connection to come free

    @property
    def saturated(self) -> bool:
        return self.waiting > 0 and self.in_use >= self.limit


class AddressTally:
    """One child's address (`base_url`, `unix_socket`) and the connections to it serving a request."""

    __slots__ = ("where", "in_use")

    def __init__(self, where: tuple[str, str | None]):
        self.where = where
        self.in_use = 0


class UpstreamClient:
    """Connections to the MLflow child, at `state.base_url` or over `state.unix_socket`.

    When the launcher points `state` at a replacement child, new requests go there; a request
    already holding a connection to the old child finishes on it, and that connection is closed
    rather than pooled (`in_use_at` tells the launcher when none is left)."""

    def __init__(self, state, max_connections: int = MAX_CONNECTIONS):
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.state = state
        self._idle: list[UpstreamConnection] = []
        self.max_connections = max_connections
        self._in_use = 0  # connections handed out and not yet released or discarded
        self._slot_waiters: deque[asyncio.Future] = deque()
        self._address_of: AddressTally | None = None
        self._draining: list[AddressTally] = []  # earlier children's addresses with connections still in use
        self._address: tuple[str, int] = ("127.0.0.1", 0)
        self._host_header = b""

    def _refresh_address(self) -> None:
        where = (self.state.base_url, self.state.unix_socket)
        current = self._address_of
        if current is None or where != current.where:
            parts = urlsplit(where[0])
            self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
            self._host_header = parts.netloc.encode("latin-1")
            self._draining = [tally for tally in (*self._draining, current) if tally is not None and tally.in_use and tally.where != where]
            self._address_of = AddressTally(where)
            self.close_idle()  # a new child: the old one's idle connections are of no use

    def in_use_at(self, base_url: str, unix_socket: str | None) -> int:
        """Connections to the child at this address serving a request now (0 for one never used)."""
        self._refresh_address()
        for tally in (self._address_of, *self._draining):
            if tally is not None and tally.where == (base_url, unix_socket):
                return tally.in_use
        return 0

    def host_header(self) -> bytes:
        """The Host MLflow is sent: its own address, which its Host check accepts."""
        self._refresh_address()
        return self._host_header

    async def connect(self, timeout: float) -> UpstreamConnection:
        """A connection ready for a request: the most recently idle one, else a new one."""
        self._refresh_address()
        if self._in_use >= self.max_connections:
            await self._wait_for_slot(timeout)
            self._refresh_address()  # the child may have been replaced meanwhile
        self._in_use += 1
        address = self._address_of
        address.in_use += 1  # counted from now, so the launcher does not stop a child being connected to
        try:
            return self._take_idle() or await self._open(address)
        except BaseException:
            address.in_use -= 1
            self._release_slot()
            raise

    def _take_idle(self) -> UpstreamConnection | None:
        """The most recently used idle connection still fresh, closing any stale ones above it."""
        idle = self._idle
        if idle:
            fresh_after = time.monotonic() - IDLE_REUSE_SECONDS
            while idle:
                connection = idle.pop()
                if not connection.closed and connection.idle_since > fresh_after:
                    connection.reused = True
                    return connection
                connection.abort()
        return None

    async def _open(self, address: AddressTally) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        socket_path = self.state.unix_socket
        try:
            if socket_path:
                opening = loop.create_unix_connection(lambda: UpstreamConnection(loop), socket_path)
            else:
                opening = loop.create_connection(lambda: UpstreamConnection(loop), *self._address)
            _, connection = await asyncio.wait_for(opening, CONNECT_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            raise UpstreamTimeout() from None
        except OSError as exc:
            raise UpstreamUnreachable(str(exc)) from None
        connection.opened_for = address
        return connection

    def release(self, connection: UpstreamConnection) -> None:
        """Back to the pool if the answer was read whole and MLflow keeps the connection open."""
        self._release_slot()
        connection.opened_for.in_use -= 1
        self._refresh_address()
        if (
            connection.complete
            and connection.keep_alive
            and not connection.closed
            and connection.opened_for is self._address_of  # not a connection to a child since replaced
            and len(self._idle) < MAX_IDLE_CONNECTIONS
        ):
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.abort()

    def discard(self, connection: UpstreamConnection) -> None:
        """Close a connection whose exchange failed or was cut short."""
        self._release_slot()
        connection.opened_for.in_use -= 1
        connection.abort()

    def _release_slot(self) -> None:
        self._in_use -= 1
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _wait_for_slot(self, timeout: float) -> None:
        """Every connection is in use: wait for one to come back (a counter and a queue rather than
        asyncio.Semaphore, whose acquire is a coroutine even when a slot is free)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._in_use >= self.max_connections:
            waiter = loop.create_future()
            self._slot_waiters.append(waiter)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UpstreamTimeout()
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                raise UpstreamTimeout() from None

    def load(self) -> PoolLoad:
        waiting = sum(1 for waiter in self._slot_waiters if not waiter.done())
        return PoolLoad(self._in_use, self.max_connections, waiting)

    def close_idle(self) -> None:
        while self._idle:
            self._idle.pop().abort()

    async def aclose(self) -> None:
        self.close_idle()
