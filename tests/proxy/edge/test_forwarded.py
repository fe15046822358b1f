"""TrustedProxies: whose X-Forwarded-* headers count, and who the client is behind them."""

from __future__ import annotations

import pytest

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
