"""TrustedProxies: whose X-Forwarded-* headers count, and who the client is behind them."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from proxy.app import FrontConfig
from proxy.edge.forwarded import TrustedProxies, parse_proxy_addresses


@pytest.mark.parametrize(
    ("addresses", "peer", "trusted"),
    [
        (("127.0.0.1", "::1"), "127.0.0.1", True),
        (("127.0.0.1", "::1"), "::1", True),
        (("127.0.0.1", "::1"), "127.0.0.2", False),
        (("127.0.0.1", "::1"), "10.0.0.1", False),
        (("10.0.0.0/8",), "10.200.3.4", True),
        (("10.0.0.0/8",), "11.0.0.1", False),
        (("fd00::/8",), "fd12::1", True),
        (("*",), "203.0.113.7", True),
        (("127.0.0.1",), None, False),
        (("127.0.0.1",), "not-an-address", False),
    ],
)
def test_trusts(addresses, peer, trusted):
    assert TrustedProxies(addresses).trusts(peer) is trusted


def test_the_client_behind_proxies_is_the_nearest_address_that_is_no_proxy():
    proxies = TrustedProxies(("127.0.0.1", "10.0.0.0/8"))
    assert proxies.client_address("127.0.0.1", [b"203.0.113.7, 10.1.1.1"]) == "203.0.113.7"
    # A client may put anything on the left of the chain; the proxy's own entry is what counts.
    assert proxies.client_address("127.0.0.1", [b"198.51.100.1", b"203.0.113.7"]) == "203.0.113.7"
    assert proxies.client_address("127.0.0.1", [b"10.2.2.2"]) == "10.2.2.2"  # all proxies: the first
    # From a peer that is no proxy, the chain says nothing.
    assert proxies.client_address("192.0.2.1", [b"203.0.113.7"]) == "192.0.2.1"
    assert proxies.client_address("127.0.0.1", None) == "127.0.0.1"


def test_remembered_verdicts_are_bounded():
    proxies = TrustedProxies(("127.0.0.1",))
    for n in range(10_000):
        proxies.trusts(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(proxies._verdicts) <= 4096


def test_parse_proxy_addresses():
    assert parse_proxy_addresses(" 127.0.0.1, 10.0.0.0/8 ,*,") == ("127.0.0.1", "10.0.0.0/8", "*")
    with pytest.raises(ValueError, match="'proxy.example' is not an IP address"):
        parse_proxy_addresses("127.0.0.1,proxy.example")


def test_behind_databricks_apps_the_client_is_the_proxys_x_real_ip():
    anyone = TrustedProxies(("*",))  # Databricks Apps: only the platform's proxy can reach the app
    assert anyone.client_address("10.20.0.5", None, b"203.0.113.7") == "203.0.113.7"
    # Every hop is trusted there, so a client's own X-Forwarded-For cannot outrank the proxy's X-Real-Ip.
    assert anyone.client_address("10.20.0.5", [b"198.51.100.1"], b"203.0.113.7") == "203.0.113.7"
    loopback = TrustedProxies()
    assert loopback.client_address("127.0.0.1", [b"198.51.100.9"], b"203.0.113.7") == "198.51.100.9"  # the named chain is exact
    assert loopback.client_address("192.0.2.1", None, b"203.0.113.7") == "192.0.2.1"  # not from a proxy: a claim
    assert loopback.client_address("127.0.0.1", None, b" ") == "127.0.0.1"


async def test_the_per_client_cap_counts_the_client_behind_the_proxy_not_the_proxy(start_front, fake_mlflow):
    """Every request through one proxy comes from its address; the cap is per client behind it."""
    front = start_front(config=FrontConfig(upstream_timeout_seconds=5, max_upstream_per_client=1, trusted_proxies=("*",)))
    async with httpx.AsyncClient(base_url=front.url, timeout=10, trust_env=False) as client:
        held = asyncio.create_task(client.get("/slow", headers={"X-Real-Ip": "203.0.113.1"}))
        try:
            deadline = time.monotonic() + 5
            while not any(call.get("slow") for call in fake_mlflow.calls) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            same = await client.get("/api/2.0/mlflow/experiments/search", headers={"X-Real-Ip": "203.0.113.1"})
            other = await client.get("/api/2.0/mlflow/experiments/search", headers={"X-Real-Ip": "203.0.113.2"})
        finally:
            held.cancel()
    assert same.status_code == 429
    assert other.status_code == 200
