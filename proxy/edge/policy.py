"""Who may talk to the server: the `Host` a request names and the `Origin` a browser write comes from.

MLflow (3.5+) refuses any `Host` that is not local and any cross-origin write. Behind the front
every request reaches MLflow from loopback, so the front applies the same two checks against the
public names instead, and then hands MLflow a request it accepts.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
PRIVATE_ADDRESS_PATTERNS = (
    "10.*",
    "192.168.*",
    *(f"172.{n}.*" for n in range(16, 32)),
    "[fc*",
    "[fd*",
)
DEFAULT_ALLOWED_HOSTS = (*LOOPBACK_NAMES, *PRIVATE_ADDRESS_PATTERNS, "*.databricksapps.com")
DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginVerdict(Enum):
    NONE = "none"  # no Origin header: not a browser's cross-site request
    SAME_ORIGIN = "same-origin"  # the page came from this server
    ALLOWED = "allowed"  # a configured (or loopback) origin: MLflow sees it and adds CORS headers
    FOREIGN = "foreign"


def split_host(host: str) -> str:
    """The name part of a `Host` value (`[::1]:8000` -> `[::1]`, `a.b:80` -> `a.b`)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def normalise_authority(scheme: str, netloc: str) -> str:
    """`host[:port]` with the scheme's default port left out, lowercased."""
    netloc = netloc.lower()
    default = DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(f":{default}"):
        return netloc[: -len(f":{default}")]
    return netloc


def valid_port(parts) -> bool:
    """Whether a split URL's port, if any, is a number in range (urlsplit checks only on access)."""
    try:
        parts.port
    except ValueError:
        return False
    return True


# RFC 9110 §7.2: Host is uri-host [":" port]; names as DNS writes them, or a bracketed IPv6 address.
_HOST_VALUE = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?)(?::([0-9]{1,5}))?")


def is_valid_host(host: str) -> bool:
    """Whether `host` is a well-formed `host[:port]` (surrounding spaces aside)."""
    match = _HOST_VALUE.fullmatch(host.strip(" \t"))
    if match is None:
        return False
    address, port = match.groups()
    return (address is None or is_ip_literal(address)) and (port is None or int(port) <= 65535)


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def host_matches(name: str, pattern: str) -> bool:
    """One Host name against one allowed-hosts pattern."""
    if name == pattern:
        return True  # exact first: fnmatch reads "[::1]" as a character class
    if (pattern[:1].isdigit() or pattern.startswith("[")) and not is_ip_literal(name):
        return False  # address patterns such as 10.* are for addresses, not for "10.evil.example"
    return fnmatch.fnmatchcase(name, pattern)


@dataclass(frozen=True)
class EdgePolicy:
    """Host and Origin rules, fnmatch patterns as MLflow's `--allowed-hosts` and CORS settings take."""

    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    allowed_origins: tuple[str, ...] = ()

    def host_allowed(self, host: str) -> bool:
        if not is_valid_host(host):
            return False  # e.g. "[fd00::1]evil.com", "10.0.0.1:80@evil": no browser sends these
        if "*" in self.allowed_hosts:
            return True
        host = host.strip().lower()
        candidates = {host, split_host(host)}
        return any(host_matches(candidate, pattern.lower()) for pattern in self.allowed_hosts for candidate in candidates)

    def origin_verdict(self, origin: str | None, public_host: str, scheme: str) -> OriginVerdict:
        if origin is None:
            return OriginVerdict.NONE
        parts = urlsplit(origin.strip())
        if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
            return OriginVerdict.FOREIGN  # includes the opaque origin "null"
        if "@" in parts.netloc or not valid_port(parts):
            return OriginVerdict.FOREIGN  # no browser sends these; "127.0.0.1:80.evil.example" is not loopback
        scheme = scheme.lower()
        if parts.scheme == scheme and normalise_authority(scheme, parts.netloc) == normalise_authority(scheme, public_host):
            return OriginVerdict.SAME_ORIGIN  # an origin is scheme, host and port: http://h is not https://h
        if (parts.hostname or "") in LOOPBACK_NAMES or self._origin_listed(origin.strip()):
            return OriginVerdict.ALLOWED
        return OriginVerdict.FOREIGN

    def _origin_listed(self, origin: str) -> bool:
        return any(fnmatch.fnmatchcase(origin, allowed) if "*" in allowed else origin == allowed for allowed in self.allowed_origins)


MAX_REMEMBERED_VERDICTS = 1024


class RememberedVerdicts:
    """`EdgePolicy`'s answers remembered per header value: a client sends the same Host and Origin
    on every request, and matching a `*.databricksapps.com` host costs ~0.1 ms each time. The
    memory is bounded: once full it starts over, so spraying distinct hosts cannot grow it."""

    def __init__(self, policy: EdgePolicy, max_entries: int = MAX_REMEMBERED_VERDICTS):
        self.policy = policy
        self.max_entries = max_entries
        self._hosts: dict[bytes, bool] = {}
        self._origins: dict[tuple[bytes, bytes, bytes], OriginVerdict] = {}

    def host_allowed(self, host: bytes) -> bool:
        verdict = self._hosts.get(host)
        if verdict is None:
            verdict = self.policy.host_allowed(host.decode("latin-1"))
            _remember(self._hosts, host, verdict, self.max_entries)
        return verdict

    def origin_verdict(self, origin: bytes | None, public_host: bytes, scheme: bytes) -> OriginVerdict:
        if origin is None:
            return OriginVerdict.NONE
        key = (origin, public_host, scheme)
        verdict = self._origins.get(key)
        if verdict is None:
            verdict = self.policy.origin_verdict(origin.decode("latin-1"), public_host.decode("latin-1"), scheme.decode("latin-1"))
            _remember(self._origins, key, verdict, self.max_entries)
        return verdict


def _remember(memory: dict, key, verdict, max_entries: int) -> None:
    if len(memory) >= max_entries:
        memory.clear()
    memory[key] = verdict
