"""One request as the front sees it: the facts read once from its head, and what it cost.

Everything that more than one part of the front needs (the request id, the public host and scheme,
the Origin, the credentials, the body's framing) is read here in one pass over the header list,
which stays as uvicorn gave it: lowercase names, byte values. The measurements (status, bytes,
timings) are filled in by whoever answers and read once by the observer.
"""

from __future__ import annotations

import itertools
import os
import re
import time

from starlette.types import Message, Scope, Send

from proxy.edge.forwarded import FORWARDED_HEADERS
from proxy.errors import send_mlflow_error

# Where the front's HTTP edge (proxy/edge/http_protocol.py) notes, in the request's scope, what a client
# it cut off for sending or reading too slowly got: the status the front answered in the app's stead
# (408), or the one the app's answer had begun with. The forwarder reports that rather than 499.
CUT_OFF_EXTENSION = "mlflow_app.cut_off"

_SAFE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
# New request ids: 64 random bits per process, then a counter (32 hex digits in all). Unique across
# replicas and restarts without asking the kernel for randomness on every request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)

# Headers the front reads; everything else it only passes on.
_WATCHED = frozenset(
    {
        b"host",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-for",
        b"x-request-id",
        b"x-forwarded-email",
        b"x-forwarded-preferred-username",
        b"x-real-ip",
        b"origin",
        b"authorization",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"access-control-request-method",
        b"accept-encoding",
    }
)
# The watched headers believed only from a configured proxy (proxy.edge.forwarded lists them all).
_FORWARDED = tuple(sorted(_WATCHED & FORWARDED_HEADERS))
# Read as a list: more than one is an error (host, authorization, content-length) or a chain
# (x-forwarded-for).
_REPEATABLE = frozenset({b"host", b"authorization", b"x-forwarded-for", b"content-length"})


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The platform's `X-Request-Id` when it is a sane token, else a new one."""
    for key, value in headers:
        if key.lower() == b"x-request-id":
            return _request_id(value)
    return new_request_id()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _request_id(value: bytes | None) -> str:
    if value is not None and _SAFE_REQUEST_ID.match(value):
        return value.decode("ascii")
    return new_request_id()


class Exchange:
    """A request's head, read once, and the measurements of its answer."""

    __slots__ = (
        "scope",
        "method",
        "path",
        "started",
        "first",
        "lists",
        "request_id",
        "status",
        "bytes_in",
        "bytes_out",
        "upstream_seconds",
        "authenticated",
        "drop_authorization",
        "forwarded_trusted",
        "client",
    )

    def __init__(self, scope: Scope):
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.started = time.perf_counter()
        first: dict[bytes, bytes] = {}
        lists: dict[bytes, list[bytes]] = {}
        for name, value in scope["headers"]:
            if name in _WATCHED:
                if name in _REPEATABLE:
                    lists.setdefault(name, []).append(value)
                if name not in first:
                    first[name] = value
        self.first = first
        self.lists = lists
        self.request_id = _request_id(first.get(b"x-request-id"))
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream_seconds: float | None = None
        self.authenticated = True  # set by the token check where there is one
        self.drop_authorization = False  # the token check accepted it: the front's, not MLflow's
        self.forwarded_trusted = True  # cleared by distrust_forwarded for a peer that is no known proxy
        client = scope.get("client")
        self.client: str | None = client[0] if client else None  # the real client, once proxies are known

    def distrust_forwarded(self) -> None:
        """Forget what the `X-Forwarded-*` headers claim: the peer is not a configured proxy."""
        self.forwarded_trusted = False
        for name in _FORWARDED:
            self.first.pop(name, None)
            self.lists.pop(name, None)

    def header(self, name: bytes) -> bytes | None:
        """The first value of a watched header."""
        return self.first.get(name)

    def scope_header(self, name: bytes) -> bytes | None:
        """The first value of any header, found by a scan: for the rare paths that need one not watched."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value
        return None

    def count(self, name: bytes) -> int:
        """How many times a repeatable watched header came."""
        return len(self.lists.get(name, ()))

    @property
    def host(self) -> bytes:
        return self.first.get(b"host", b"")

    @property
    def public_host(self) -> bytes:
        """The host the client used: the platform's X-Forwarded-Host, else Host."""
        return self.first.get(b"x-forwarded-host") or self.first.get(b"host", b"")

    @property
    def scheme(self) -> bytes:
        return self.first.get(b"x-forwarded-proto") or self.scope["scheme"].encode("latin-1")

    @property
    def client_host(self) -> str | None:
        """The TCP peer: the client itself, or the proxy in front of it."""
        client = self.scope.get("client")
        return client[0] if client else None

    @property
    def user(self) -> str | None:
        """Who the trusted proxy says is browsing: the email, else the user name (never a token)."""
        first = self.first
        user = first.get(b"x-forwarded-email") or first.get(b"x-forwarded-preferred-username")
        return user.decode("latin-1") if user is not None else None

    def is_cors_preflight(self) -> bool:
        """A browser's CORS preflight, which by the Fetch standard never carries credentials."""
        first = self.first
        return self.method == "OPTIONS" and b"origin" in first and b"access-control-request-method" in first

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def counting(self, send: Send) -> Send:
        """`send` that records the status and body bytes and tags the answer with the request id
        (for the front's own endpoints; the forwarder records as it goes)."""

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", self.request_id.encode())]
            elif message["type"] == "http.response.body":
                self.bytes_out += len(message.get("body", b""))
            await send(message)

        return counting_send

    async def refuse(self, send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer with an error of the front's own, in MLflow's shape."""
        self.status = status
        await send_mlflow_error(send, status, message, [*(headers or ()), (b"x-request-id", self.request_id.encode())])
