"""Forwarding of a request to the MLflow child and of its answer back: plain ASGI, bytes throughout.

A small answer (the usual API call) arrives whole with its headers and goes to the client in one
body message. A large or open-ended one (artifacts, server-sent events) streams: each read passes
on whatever has arrived, and both directions wait on the slower side (backpressure). Only then is a
task started, to notice a client that leaves, so the upstream connection is freed at once.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time

from starlette.types import Receive, Send

from proxy.edge.forwarded import FORWARDED_HEADERS
from proxy.exchange import CUT_OFF_EXTENSION, Exchange
from proxy.forwarding.compression import ResponseCompression
from proxy.forwarding.upstream_client import (
    UpstreamClient,
    UpstreamClosed,
    UpstreamConnection,
    UpstreamError,
    UpstreamTimeout,
)
from proxy.upstream import UpstreamState

log = logging.getLogger("mlflow_app.proxy")

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Headers the front sets itself on the way to MLflow (or, for Expect, answers itself: the body is
# read from the client before MLflow sees the request).
REPLACED_ON_REQUEST = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-forwarded-for",
    b"x-request-id",
    # The browsing user's own workspace token (Databricks Apps' user authorization): MLflow acts as
    # the app's principal and never needs it, and a secret kept out of the child is not leaked there.
    b"x-forwarded-access-token",
}
# From a peer that is no configured proxy, every forwarded header it sent is dropped as well.
REPLACED_FROM_UNTRUSTED_PEER = REPLACED_ON_REQUEST | FORWARDED_HEADERS
# The front's own server stamps Date; MLflow's would make a second one. MLflow's `server: uvicorn`
# tells a client nothing it needs and a prober which server sits behind the front.
REPLACED_ON_RESPONSE = HOP_BY_HOP | {b"date", b"server"}
TRAILING_WHITESPACE = (b" ", b"\t")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Half the pool (upstream_client.MAX_CONNECTIONS): one address can never take every connection.
DEFAULT_MAX_PER_CLIENT = 256
CLIENT_CLOSED = 499  # nginx's "client closed request"

# Chunked uploads are spooled to learn their length (MLflow's Flask handlers read a chunked body
# as empty); up to this size in memory, beyond it on disk.
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 256 * 1024


class ClientGone(Exception):
    """The client disconnected while its request body was still arriving."""


def connection_scoped(headers: list[tuple[bytes, bytes]], always: frozenset[bytes]) -> frozenset[bytes]:
    """`always` plus any header names that a `Connection` header lists."""
    listed = {token.strip().lower() for name, value in headers if name == b"connection" for token in value.split(b",")}
    return always | listed if listed else always


class ClientShares:
    """Requests in progress per client address, at most `limit` each: every request in progress may
    hold one of MLflow's connections, and one address must not take them all."""

    __slots__ = ("limit", "in_progress")

    def __init__(self, limit: int):
        self.limit = limit
        self.in_progress: dict[str | None, int] = {}

    def take(self, client: str | None) -> bool:
        count = self.in_progress.get(client, 0)
        if count >= self.limit:
            return False
        self.in_progress[client] = count + 1
        return True

    def give_back(self, client: str | None) -> None:
        count = self.in_progress[client] - 1
        if count:
            self.in_progress[client] = count
        else:
            del self.in_progress[client]  # the map holds only addresses with requests in progress


class Forwarder:
    """Sends one request to MLflow and streams its answer back to the client."""

    def __init__(
        self,
        state: UpstreamState,
        client: UpstreamClient,
        timeout_seconds: float,
        compression: ResponseCompression | None = None,
        max_per_client: int = DEFAULT_MAX_PER_CLIENT,
    ):
        self.state = state
        self.client = client
        self.timeout = timeout_seconds
        self.compression = compression
        self.shares = ClientShares(max_per_client)

    async def __call__(self, exchange: Exchange, receive: Receive, send: Send, forward_origin: bool) -> None:
        if not self.state.ready:
            await self._unavailable(exchange, send)
            return
        try:
            await self._forward(exchange, receive, send, forward_origin)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when --drain-seconds are up: answered in
            # MLflow's shape while nothing has been, rather than with uvicorn's plain-text 500.
            if exchange.status:
                raise
            log.warning("%s %s cut by shutdown before MLflow answered (id=%s)", exchange.method, exchange.path, exchange.request_id)
            await exchange.refuse(send, 503, "The server is shutting down and cut this request short; retry it.", [(b"retry-after", b"2")])

    async def _forward(self, exchange: Exchange, receive: Receive, send: Send, forward_origin: bool) -> None:
        client = exchange.client
        if not self.shares.take(client):
            await exchange.refuse(
                send,
                429,
                f"Too many requests from this address are in progress ({self.shares.limit}); retry when some have finished.",
                [(b"retry-after", b"1")],
            )
            return
        try:
            try:
                body, length, streamed = await self._request_body(exchange, receive)
            except ClientGone:
                exchange.status = client_gone_status(exchange)
                return
            head = self._request_head(exchange, forward_origin, length)
            try:
                connection = await self._exchange_head(exchange, head, body, streamed, receive)
            except ClientGone:
                exchange.status = client_gone_status(exchange)
                return
            except UpstreamTimeout:
                await exchange.refuse(
                    send,
                    504,
                    f"MLflow did not answer within {self.timeout:g} s; the request may still complete on the server.",
                )
                return
            except UpstreamError as exc:
                log.warning("upstream request failed: %s", type(exc).__name__)
                if not self.state.ready:
                    await self._unavailable(exchange, send)
                else:
                    await exchange.refuse(send, 502, "MLflow closed the connection before answering; retry shortly.")
                return
            await self._answer(exchange, connection, send, receive)
        finally:
            self.shares.give_back(client)

    # --- the request ---------------------------------------------------------------------------

    async def _request_body(self, exchange: Exchange, receive: Receive):
        """(bytes or None, length or None, streamed): small bodies are read whole, large ones later."""
        declared = exchange.header(b"content-length")
        if declared is not None:
            length = int(declared)  # uvicorn's parser has checked it is one number
            if length == 0:
                return b"", 0, False
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            exchange.bytes_in += len(chunk)
            if not message.get("more_body", False):
                return chunk, length, False
            return chunk, length, True  # the rest follows in _send_streamed_body
        encoding = exchange.header(b"transfer-encoding")
        if encoding is None or b"chunked" not in encoding.lower():
            return None, None, False
        return await self._spool(exchange, receive)

    async def _spool(self, exchange: Exchange, receive: Receive):
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                if chunk:
                    exchange.bytes_in += len(chunk)
                    spool.write(chunk)
                if not message.get("more_body", False):
                    break
        except BaseException:
            spool.close()
            raise
        length = spool.tell()
        spool.seek(0)
        if length <= SPOOL_IN_MEMORY_BYTES:  # still in memory: one buffer, sent with the head
            body = spool.read()
            spool.close()
            return body, length, False
        return spool, length, True

    def _request_head(self, exchange: Exchange, forward_origin: bool, length: int | None) -> bytes:
        scope = exchange.scope
        raw_headers = scope["headers"]
        skip = REPLACED_ON_REQUEST if exchange.forwarded_trusted else REPLACED_FROM_UNTRUSTED_PEER
        if b"connection" in exchange.first:
            skip = connection_scoped(raw_headers, skip)
        if not forward_origin:
            skip = skip | {b"origin"}  # checked by the front; MLflow would refuse the public origin
        if exchange.drop_authorization:
            skip = skip | {b"authorization"}  # the front's own credential, never MLflow's business
        target = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        parts = [exchange.method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", self.client.host_header(), b"\r\n"]
        for name, value in raw_headers:
            if name not in skip:
                if value.endswith(TRAILING_WHITESPACE):
                    value = value.rstrip(b" \t")  # RFC 9110 §5.5: not part of the value
                parts += (name, b": ", value, b"\r\n")
        chain = exchange.lists.get(b"x-forwarded-for")
        peer = (exchange.client_host or "unknown").encode()
        if chain:
            parts += (b"x-forwarded-for: ", b", ".join((*chain, peer)), b"\r\n")
        elif exchange.forwarded_trusted and (real_ip := exchange.first.get(b"x-real-ip")):
            # A proxy that names the client in X-Real-Ip only (Databricks Apps): the chain starts there.
            parts += (b"x-forwarded-for: ", real_ip, b", ", peer, b"\r\n")
        else:
            parts += (b"x-forwarded-for: ", peer, b"\r\n")
        parts += (b"x-forwarded-proto: ", exchange.scheme, b"\r\n")
        public_host = exchange.public_host
        if public_host:
            parts += (b"x-forwarded-host: ", public_host, b"\r\n")
        parts += (b"x-request-id: ", exchange.request_id.encode(), b"\r\n")
        if length is not None:
            parts += (b"content-length: ", b"%d" % length, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    async def _exchange_head(self, exchange, head, body, streamed, receive) -> UpstreamConnection:
        """Send the request and wait for the answer's head; one retry on a kept-alive connection
        that MLflow had closed, when nothing was answered and sending again is safe."""
        retry = not streamed and exchange.method in IDEMPOTENT_METHODS
        while True:
            connection = await self.client.connect(self.timeout)
            connection.expect(has_body=exchange.method != "HEAD")
            sent_at = time.perf_counter()  # waiting on MLflow: from the first byte sent to its headers
            try:
                if streamed:
                    connection.write(head)
                    await self._send_streamed_body(exchange, connection, body, receive)
                else:
                    connection.write(head + body if body else head)
                await connection.answer_head(self.timeout)
                return connection
            except UpstreamClosed as exc:
                self.client.discard(connection)
                if not (retry and connection.reused and not exc.answered):
                    raise
                retry = False
            except BaseException:
                self.client.discard(connection)
                raise
            finally:
                exchange.upstream_seconds = time.perf_counter() - sent_at

    async def _send_streamed_body(self, exchange, connection: UpstreamConnection, body, receive: Receive) -> None:
        if isinstance(body, bytes):  # the first part of a body with a Content-Length, then the rest
            connection.write(body)
            more = True
            while more:
                await connection.drain(self.timeout)
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                exchange.bytes_in += len(chunk)
                if chunk:
                    connection.write(chunk)
                more = message.get("more_body", False)
            return
        spool = body  # a chunked upload spooled to disk
        try:
            while chunk := await asyncio.to_thread(spool.read, CHUNK_BYTES):
                connection.write(chunk)
                await connection.drain(self.timeout)
        finally:
            spool.close()

    # --- the answer ----------------------------------------------------------------------------

    async def _answer(self, exchange: Exchange, connection: UpstreamConnection, send: Send, receive: Receive) -> None:
        headers, has_length = self._response_headers(exchange, connection)
        encoder = None
        if self.compression is not None:
            encoder = self.compression.encoder_for(exchange.method, exchange.path, exchange.header(b"accept-encoding"), connection.status, headers)
            if encoder is not None:
                headers = encoder.headers(headers)
        headers.append((b"x-request-id", exchange.request_id.encode()))
        exchange.status = connection.status
        if connection.complete:  # the usual API answer: whole already, one body message
            body = connection.take_body()
            self.client.release(connection)
            if encoder is not None:
                body = encoder.finish(body)
                headers.append((b"content-length", b"%d" % len(body)))
            elif not has_length and exchange.method != "HEAD" and connection.status not in (204, 304):
                headers.append((b"content-length", b"%d" % len(body)))
            await send({"type": "http.response.start", "status": connection.status, "headers": headers})
            exchange.bytes_out += len(body)
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": connection.status, "headers": headers})
        await self._stream_body(exchange, connection, send, receive, encoder)

    async def _stream_body(self, exchange, connection: UpstreamConnection, send: Send, receive: Receive, encoder) -> None:
        finished = False

        def client_left(_task: asyncio.Future) -> None:
            if not finished:
                connection.abort()  # wakes the read below with UpstreamClosed

        watcher = asyncio.get_running_loop().create_task(_wait_for_disconnect(receive))
        watcher.add_done_callback(client_left)
        try:
            while True:
                chunk = await connection.read(self.timeout)
                if not chunk:
                    finished = True
                    break
                if encoder is not None:
                    chunk = encoder.compress(chunk)
                    if not chunk:
                        continue
                exchange.bytes_out += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            self.client.discard(connection)
            if watcher.done():
                exchange.status = client_gone_status(exchange)
            else:
                log.warning("MLflow's answer was cut short (%s); closing the client's connection", type(exc).__name__)
            return  # uvicorn closes a connection whose answer did not complete
        except BaseException:  # cancelled (the server is stopping): the connection is not reusable
            self.client.discard(connection)
            raise
        finally:
            if not watcher.done():
                watcher.cancel()
        self.client.release(connection)
        tail = encoder.finish() if encoder is not None else b""
        exchange.bytes_out += len(tail)
        await send({"type": "http.response.body", "body": tail})

    def _response_headers(self, exchange: Exchange, connection: UpstreamConnection) -> tuple[list[tuple[bytes, bytes]], bool]:
        """MLflow's end-to-end headers, its internal address in a redirect turned into the public
        one; and whether they carry a Content-Length."""
        raw = connection.headers
        skip = connection_scoped(raw, REPLACED_ON_RESPONSE) if connection.names_connection else REPLACED_ON_RESPONSE
        headers = []
        for name, value in raw:
            if name not in skip:
                if name == b"location":
                    value = public_location(value, self.state.base_url.encode("latin-1"), exchange)
                headers.append((name, value))
        return headers, connection.has_length

    # --- refusals ------------------------------------------------------------------------------

    async def _unavailable(self, exchange: Exchange, send: Send) -> None:
        phase = self.state.phase.value
        await exchange.refuse(send, 503, f"MLflow is not ready ({phase}); retry shortly.", [(b"retry-after", b"2")])


def client_gone_status(exchange: Exchange) -> int:
    """What the client got: nothing (499), or the status the edge answered when it cut it off."""
    extensions = exchange.scope.get("extensions")
    return extensions.get(CUT_OFF_EXTENSION, CLIENT_CLOSED) if extensions else CLIENT_CLOSED


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def public_location(location: bytes, internal_origin: bytes, exchange: Exchange) -> bytes:
    """A redirect to the child's loopback address, pointed back at the address the client used."""
    rest = location[len(internal_origin) :]
    if not location.startswith(internal_origin) or rest[:1] not in (b"", b"/", b"?", b"#"):
        return location  # elsewhere, e.g. another port that starts with the same digits
    host = exchange.public_host
    if not host:
        return rest or b"/"
    return exchange.scheme + b"://" + host + rest
