"""The front's upstream client beside the general HTTP clients it could have been, on one loopback upstream.

    uv run python -m bench.upstream_clients                 # about 20 s
    uv run python -m bench.upstream_clients --requests 20000 --repeats 5

Each client makes sequential kept-alive GETs of the small (~200 B) JSON answer from
`bench.fake_upstream` in another process, on uvloop as the front runs; the figure is this process's
CPU time (user + system) per request, the median of the repeats. Also checked for each: whether it
can forward a header value whose bytes are not UTF-8 (legal obs-text, e.g. `\\xff\\xfe`) unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import uvloop

from bench.machine import load_average, machine
from bench.servers import free_port, wait_for
from proxy.forwarding.upstream_client import UpstreamClient
from proxy.upstream import UpstreamPhase, UpstreamState

RESULTS = Path(__file__).with_name("results")
OBS_TEXT = b"\xff\xfe"


async def httpx_client(base_url: str, unix_socket: str | None, count: int) -> None:
    transport = httpx.AsyncHTTPTransport(uds=unix_socket) if unix_socket else None
    async with httpx.AsyncClient(base_url=base_url, transport=transport, trust_env=False) as client:
        for _ in range(count):
            response = await client.get("/small")
            response.content  # noqa: B018 - read whole, as a proxy would


async def aiohttp_client(base_url: str, unix_socket: str | None, count: int) -> None:
    connector = aiohttp.UnixConnector(unix_socket) if unix_socket else aiohttp.TCPConnector()
    async with aiohttp.ClientSession(base_url, connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()) as session:
        for _ in range(count):
            async with session.get("/small") as response:
                await response.read()


async def our_client(base_url: str, unix_socket: str | None, count: int) -> None:
    client = UpstreamClient(UpstreamState(base_url=base_url, unix_socket=unix_socket, phase=UpstreamPhase.READY))
    head = b"GET /small HTTP/1.1\r\nhost: " + client.host_header() + b"\r\n\r\n"
    for _ in range(count):
        connection = await client.connect(5.0)
        connection.expect(has_body=True)
        connection.write(head)
        await connection.answer_head(5.0)
        while not connection.complete:
            await connection.read(5.0)
        connection.take_body()
        client.release(connection)
    await client.aclose()


async def forwards_obs_text(name: str) -> bool:
    """Whether the client puts a header value with non-UTF-8 bytes on the wire unchanged."""
    heads: list[bytes] = []

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(capture, "127.0.0.1", 0)
    base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        if name == "httpx":
            async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
                await client.get("/", headers=[(b"x-user", OBS_TEXT)])
        elif name == "aiohttp":
            # Its headers are text: the best a proxy can do is a lossless decoding (surrogateescape);
            # aiohttp's writer then drops the surrogates and sends an empty value.
            async with aiohttp.ClientSession(base_url) as session:
                async with session.get("/", headers={"x-user": OBS_TEXT.decode("utf-8", "surrogateescape")}) as response:
                    await response.read()
        else:
            client = UpstreamClient(UpstreamState(base_url=base_url, phase=UpstreamPhase.READY))
            connection = await client.connect(5.0)
            connection.expect(has_body=True)
            connection.write(b"GET / HTTP/1.1\r\nhost: x\r\nx-user: " + OBS_TEXT + b"\r\n\r\n")
            await connection.answer_head(5.0)
            client.discard(connection)
    except Exception:
        return False
    finally:
        server.close()
    return any(b"\r\nx-user: " + OBS_TEXT + b"\r\n" in head for head in heads)


CLIENTS = {"httpx": httpx_client, "aiohttp": aiohttp_client, "ours": our_client}


def cpu_per_request(client, base_url: str, unix_socket: str | None, count: int) -> float:
    """µs of this process's CPU per request, for `count` requests after a warm-up."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(client(base_url, unix_socket, 200))
        before = time.process_time()
        runner.run(client(base_url, unix_socket, count))
        return (time.process_time() - before) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as private:
        unix_socket = str(Path(private) / "upstream.sock")
        upstream = subprocess.Popen([sys.executable, "-m", "bench.fake_upstream", "--port", str(port), "--unix", unix_socket])
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_for(f"{base_url}/small", 10, upstream)
            load_before = load_average()
            rows = []
            for name, client in CLIENTS.items():
                for transport, socket_path in (("tcp", None), ("unix", unix_socket)):
                    figures = [cpu_per_request(client, base_url, socket_path, args.requests) for _ in range(args.repeats)]
                    rows.append({"client": name, "transport": transport, "cpu_us_per_request": statistics.median(figures), "all": figures})
            obs_text = {name: asyncio.run(forwards_obs_text(name)) for name in CLIENTS}
        finally:
            upstream.terminate()
            upstream.wait()
    result = {
        "machine": machine(("httpx", "aiohttp", "httptools", "uvloop")),
        "load_average": [load_before, load_average()],
        "rows": rows,
        "sends_non_utf8_header": obs_text,
        "requests": args.requests,
        "repeats": args.repeats,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"upstream-clients-{time.strftime('%Y-%m-%d-%H%M')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"load average before/after: {result['load_average']}")
    print("| client | transport | CPU µs/request (median) | all |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['client']} | {row['transport']} | {row['cpu_us_per_request']:.1f} | {', '.join(f'{x:.1f}' for x in row['all'])} |")
    print(f"sends a non-UTF-8 header byte: {obs_text}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
