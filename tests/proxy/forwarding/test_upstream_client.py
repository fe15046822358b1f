"""The upstream client against a scripted server on loopback: framing, reuse, limits, failures."""

from __future__ import annotations

import asyncio

import pytest

from proxy.forwarding.upstream_client import UpstreamClient, UpstreamClosed, UpstreamTimeout, UpstreamUnreachable
from proxy.upstream import UpstreamPhase, UpstreamState
from tests.proxy.conftest import closed_port


class ScriptedServer:
    """Answers each request on a connection with the next canned answer; counts connections."""

    def __init__(self, *answers: bytes, close_after: bool = False):
        self.answers = list(answers)
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                writer.write(self.answers.pop(0))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self) -> UpstreamClient:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return UpstreamClient(UpstreamState(base_url=f"http://127.0.0.1:{port}", phase=UpstreamPhase.READY))

    async def __aexit__(self, *_) -> None:
        self.server.close()


async def get(client: UpstreamClient, method: bytes = b"GET") -> tuple[int, list, bytes, object]:
    connection = await client.connect(2.0)
    connection.expect(has_body=method != b"HEAD")
    connection.write(method + b" / HTTP/1.1\r\nhost: " + client.host_header() + b"\r\n\r\n")
    await connection.answer_head(2.0)
    body = b""
    while chunk := await connection.read(2.0):
        body += chunk
    client.release(connection)
    return connection.status, connection.headers, body, connection


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_kept_alive_connections_are_reused():
    server = ScriptedServer(OK, OK, OK)
    async with server as client:
        for _ in range(3):
            assert (await get(client))[2] == b"ok"
    assert server.connections == 1


async def test_chunked_and_close_delimited_bodies_arrive_whole():
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    async with ScriptedServer(chunked) as client:
        assert (await get(client))[2] == b"abcde"
    until_close = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"
    server = ScriptedServer(until_close, OK, close_after=True)
    async with server as client:
        status, _, body, connection = await get(client)
        assert (status, body) == (200, b"all of it")
        assert connection.closed  # not put back in the pool
        assert (await get(client))[2] == b"ok"
    assert server.connections == 2


async def test_an_interim_answer_is_skipped_for_the_real_one():
    async with ScriptedServer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK) as client:
        status, headers, body, _ = await get(client)
    assert (status, body) == (200, b"ok")
    assert headers == [(b"content-length", b"2")]


async def test_an_answer_to_head_is_not_waited_for_and_its_connection_not_reused():
    server = ScriptedServer(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", OK)
    async with server as client:
        status, _, body, connection = await get(client, b"HEAD")
        assert (status, body) == (200, b"")
        assert connection.closed
        assert (await get(client))[2] == b"ok"
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_reused():
    server = ScriptedServer(OK, OK, close_after=True)
    async with server as client:
        await get(client)
        await asyncio.sleep(0.1)  # the server has closed it by now
        assert (await get(client))[2] == b"ok"
    assert server.connections == 2


async def test_a_cut_answer_raises_closed_saying_whether_anything_came():
    async with ScriptedServer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", close_after=True) as client:
        connection = await client.connect(2.0)
        connection.expect(has_body=True)
        connection.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await connection.answer_head(2.0)
        with pytest.raises(UpstreamClosed) as cut:
            while await connection.read(2.0):
                pass
        client.discard(connection)
    assert cut.value.answered


async def test_nothing_listening_is_unreachable():
    client = UpstreamClient(UpstreamState(base_url=f"http://127.0.0.1:{closed_port()}", phase=UpstreamPhase.READY))
    with pytest.raises(UpstreamUnreachable):
        await client.connect(1.0)
    assert client._in_use == 0  # the slot was given back


async def test_past_the_connection_limit_a_request_waits_for_a_slot_then_times_out():
    server = ScriptedServer(OK, OK)
    async with server as pool:
        client = UpstreamClient(pool.state, max_connections=1)
        held = await client.connect(2.0)
        with pytest.raises(UpstreamTimeout):
            await client.connect(0.2)
        waiting = asyncio.ensure_future(client.connect(2.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        client.discard(held)
        second = await asyncio.wait_for(waiting, 1)
        client.discard(second)


async def test_a_connection_to_a_replaced_child_is_not_pooled_again():
    old, new = ScriptedServer(OK, OK), ScriptedServer(OK)
    async with old as client, new as replacement:
        connection = await client.connect(2.0)  # in flight while the child is replaced
        client.state.base_url = replacement.state.base_url
        connection.expect(has_body=True)
        connection.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await connection.answer_head(2.0)
        while await connection.read(2.0):
            pass
        client.release(connection)
        assert connection.closed  # finished, then closed rather than pooled
        assert (await get(client))[2] == b"ok"
    assert (old.connections, new.connections) == (1, 1)


async def test_connections_to_a_replaced_child_are_counted_until_released():
    old, new = ScriptedServer(OK, OK), ScriptedServer(OK)
    async with old as client, new as replacement:
        old_address = (client.state.base_url, client.state.unix_socket)
        connection = await client.connect(2.0)  # a request in flight on the old child
        assert client.in_use_at(*old_address) == 1
        client.state.point_at(replacement.state.base_url, None)
        assert client.in_use_at(*old_address) == 1  # still draining after the swap
        assert client.in_use_at(replacement.state.base_url, None) == 0
        assert (await get(client))[2] == b"ok"  # a new request goes to the new child
        connection.expect(has_body=True)
        connection.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await connection.answer_head(2.0)
        while await connection.read(2.0):
            pass
        client.release(connection)
        assert client.in_use_at(*old_address) == 0 and connection.closed
    assert (old.connections, new.connections) == (1, 1)
