"""Whose `X-Forwarded-*` headers to believe: only those of the proxies the operator named.

A reverse proxy (nginx, a load balancer, the Databricks Apps edge) tells the front the public
host, the scheme, the user and the client's address in `X-Forwarded-*` headers. Any client can
send the same headers, so they are read only when the TCP peer is one of the configured proxy
addresses (uvicorn's `--forwarded-allow-ips` idea); from anyone else they are dropped, and the
front writes its own from what it saw.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

LOOPBACK_PROXIES = ("127.0.0.1", "::1")
# Headers a proxy sets about the client; from an untrusted peer none of them reaches MLflow or the log.
FORWARDED_HEADERS = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-email",
        b"x-forwarded-user",
        b"x-forwarded-preferred-username",
        b"x-forwarded-access-token",
        b"x-real-ip",
    }
)
MAX_REMEMBERED_PEERS = 4096


class TrustedProxies:
    """The peer addresses (single addresses or networks, or `*` for any) whose forwarded headers count."""

    def __init__(self, addresses: Iterable[str] = LOOPBACK_PROXIES):
        entries = [entry.strip() for entry in addresses if entry.strip()]
        self.trust_all = "*" in entries
        self.networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries if entry != "*")
        self._verdicts: dict[str, bool] = {}

    def __repr__(self) -> str:
        shown = "*" if self.trust_all else ",".join(str(network) for network in self.networks)
        return f"{type(self).__name__}({shown})"

    def trusts(self, peer: str | None) -> bool:
        """Whether a connection from `peer` (an IP address as uvicorn gives it) is a configured proxy."""
        if self.trust_all:
            return True
        if peer is None:
            return False
        verdict = self._verdicts.get(peer)
        if verdict is None:
            verdict = self._decide(peer)
            if len(self._verdicts) >= MAX_REMEMBERED_PEERS:
                self._verdicts.clear()  # bounded: a spray of addresses cannot grow it
            self._verdicts[peer] = verdict
        return verdict

    def _decide(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client_address(self, peer: str | None, forwarded_for: list[bytes] | None, real_ip: bytes | None = None) -> str | None:
        """The client's address: the peer, or, behind trusted proxies, the nearest address in
        `X-Forwarded-For` that is not one of them (the one a trusted proxy saw); failing that, the
        proxy's `X-Real-Ip` (what Databricks Apps sends, where every peer is trusted: `*`); failing
        that, the first address of the chain."""
        if not self.trusts(peer):
            return peer
        hops = [hop.strip().decode("latin-1") for value in forwarded_for or () for hop in value.split(b",")]
        for hop in reversed(hops):
            if hop and not self.trusts(hop):
                return hop
        if real_ip and (real := real_ip.strip().decode("latin-1")):
            return real
        return hops[0] if hops and hops[0] else peer


def parse_proxy_addresses(value: str) -> tuple[str, ...]:
    """A comma-separated list of addresses and networks; raises ValueError naming a bad entry."""
    entries = tuple(entry.strip() for entry in value.split(",") if entry.strip())
    for entry in entries:
        if entry != "*":
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"'{entry}' is not an IP address, a network such as 10.0.0.0/8, or *") from None
    return entries
