"""The front's ASGI app: UI assets from disk, `/health`, `/metrics`, and MLflow for everything else.

`Front` reads each request's head once (`Exchange`), applies the edge checks (Host, token, Origin)
from remembered verdicts, and hands the request either to the few endpoints of the front's own
(Starlette routes) or, for everything MLflow serves, straight to the forwarder: no framework
objects on that path. The observer records every request once, whoever answered it.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from proxy.assets import UiAssets
from proxy.edge.cors import answer_preflight
from proxy.edge.forwarded import LOOPBACK_PROXIES, TrustedProxies
from proxy.edge.policy import STATE_CHANGING_METHODS, EdgePolicy, OriginVerdict, RememberedVerdicts
from proxy.edge.token_check import CHALLENGE, UNAUTHENTICATED_MESSAGE, TokenCheck
from proxy.errors import mlflow_error
from proxy.exchange import Exchange
from proxy.forwarding.compression import ResponseCompression
from proxy.forwarding.forwarder import DEFAULT_MAX_PER_CLIENT, Forwarder
from proxy.forwarding.upstream_client import UpstreamClient
from proxy.health import health_response
from proxy.observation.metrics import FrontMetrics
from proxy.observation.observer import RequestObserver
from proxy.startup_warnings import StartupWarnings
from proxy.sub_path import SubPath
from proxy.upstream import UpstreamState

log = logging.getLogger("mlflow_app.front")

ALL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Paths the front answers itself; /health also without the Host check (probes use IPs and names).
OWN_PATHS = frozenset({"/", "/health", "/metrics"})
STATIC_FILES = "/static-files/"
UNGUARDED_PATHS = frozenset({"/health"})
CROSS_ORIGIN_WRITE = "Cross-origin request blocked: this server accepts writes only from its own origin; allow another with --cors-allowed-origins (MLFLOW_SERVER_CORS_ALLOWED_ORIGINS)."
UNKNOWN_HOST = "This server does not answer to the host name in the request's Host header; add it to --allowed-hosts (MLFLOW_SERVER_ALLOWED_HOSTS)."


@dataclass(frozen=True)
class FrontConfig:
    """What the front needs from the launcher's settings."""

    upstream_timeout_seconds: float = 60.0
    edge_policy: EdgePolicy = field(default_factory=EdgePolicy)
    frame_options: str = "SAMEORIGIN"
    # When set, every request but /health needs it (proxy.edge.token_check); never printed, hence repr=False.
    auth_token: str | None = field(default=None, repr=False)
    compression: ResponseCompression = field(default_factory=ResponseCompression)
    # Peers whose X-Forwarded-* headers are believed (proxy.edge.forwarded).
    trusted_proxies: tuple[str, ...] = LOOPBACK_PROXIES
    # The scheme clients use when no trusted proxy says (X-Forwarded-Proto): https where TLS ends at
    # a proxy that does not send it (Databricks Apps); None: the connection's own (http).
    public_scheme: str | None = None
    # Upstream connections one client address may hold at once; beyond it, 429.
    max_upstream_per_client: int = DEFAULT_MAX_PER_CLIENT
    # The sub-path everything is served under (`/mlflow`, checked by the launcher), "" at the root.
    # MLflow runs with the same --static-prefix, so paths are forwarded as they came.
    static_prefix: str = ""


def create_app(config: FrontConfig, state: UpstreamState, assets: UiAssets, metrics: FrontMetrics | None = None, warnings: StartupWarnings | None = None) -> Front:
    """Build the front. `state` is owned and updated by whoever supervises MLflow; `warnings` by
    whatever checks the app's surroundings after start (shown by /health)."""
    return Front(config, state, assets, metrics or FrontMetrics(state), warnings)


class Front:
    """The ASGI app the launcher serves."""

    def __init__(self, config: FrontConfig, state: UpstreamState, assets: UiAssets, metrics: FrontMetrics, warnings: StartupWarnings | None = None):
        self.upstream = UpstreamClient(state)
        self.forwarder = Forwarder(state, self.upstream, config.upstream_timeout_seconds, config.compression, config.max_upstream_per_client)
        self.proxies = TrustedProxies(config.trusted_proxies)
        self.any_origin = "*" in config.edge_policy.allowed_origins
        self.public_scheme = config.public_scheme.encode() if config.public_scheme else None
        self.metrics = metrics
        metrics.watch_pool(self.upstream.load)
        self.observer = RequestObserver(metrics, config.static_prefix)
        self.verdicts = RememberedVerdicts(config.edge_policy)
        self.own = own_endpoints(config, state, assets, metrics, self.upstream, warnings)
        prefix = config.static_prefix
        # The front's own paths under the prefix; /health also at the root, for probes that reach the
        # app directly (container, systemd, load balancer), not through the proxy's path.
        self.own_paths = frozenset(prefix + path for path in OWN_PATHS) | UNGUARDED_PATHS
        self.unguarded_paths = frozenset(prefix + path for path in UNGUARDED_PATHS) | UNGUARDED_PATHS
        self.static_files = prefix + STATIC_FILES
        self.prefix = SubPath(prefix) if prefix else None
        self.token = TokenCheck(config.auth_token, self.unguarded_paths) if config.auth_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.own(scope, receive, send)  # the lifespan
            return
        exchange = Exchange(scope)
        proxies = self.proxies
        peer = exchange.client  # the TCP peer, until a trusted proxy names the client behind it
        if not proxies.trusts(peer):
            exchange.distrust_forwarded()  # a client's own X-Forwarded-* claims count for nothing
        elif b"x-forwarded-for" in exchange.lists or b"x-real-ip" in exchange.first:
            # Behind a proxy every request shares its address: the per-client cap and the log need the client's.
            exchange.client = proxies.client_address(peer, exchange.lists.get(b"x-forwarded-for"), exchange.first.get(b"x-real-ip"))
        if self.public_scheme is not None and b"x-forwarded-proto" not in exchange.first:
            exchange.first[b"x-forwarded-proto"] = self.public_scheme
        self.observer.started(exchange)
        try:
            await self.dispatch(exchange, receive, send)
        finally:
            self.observer.finished(exchange)

    async def dispatch(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        path = exchange.path
        if path not in self.unguarded_paths:
            if exchange.count(b"host") > 1:  # RFC 9112 §3.2: the front and MLflow might each read another
                await exchange.refuse(send, 400, "The request has more than one Host header.")
                return
            if not self.verdicts.host_allowed(exchange.host):
                await exchange.refuse(send, 403, UNKNOWN_HOST)
                return
        if exchange.method == "OPTIONS" and exchange.is_cors_preflight():
            # Never forwarded: it carries no token, so MLflow would be open to anyone through it.
            verdict = self.verdicts.origin_verdict(exchange.header(b"origin"), exchange.public_host, exchange.scheme)
            await answer_preflight(exchange, verdict, self.any_origin, send)
            return
        if self.token is not None and not self.token.admits(exchange):
            await exchange.refuse(send, 401, UNAUTHENTICATED_MESSAGE, [CHALLENGE])
            return
        if path in self.own_paths or path.startswith(self.static_files):
            scope = exchange.scope
            scope["state"] = {"authenticated": exchange.authenticated, "request_id": exchange.request_id}
            await self.own(scope, receive, exchange.counting(send))
            return
        if self.prefix is not None and not path.startswith(self.prefix.inside):
            await self.prefix.answer_outside(exchange, send)
            return
        method = exchange.method
        if method not in ALL_METHODS:
            await exchange.refuse(send, 405, f"Method Not Allowed: {method} is not served at this path.")
            return
        if "\n" in path:  # no MLflow route has a line break; nor may a forwarded request line
            await exchange.refuse(send, 404, f"Not Found: {method} is not served at this path.")
            return
        verdict = self.verdicts.origin_verdict(exchange.header(b"origin"), exchange.public_host, exchange.scheme)
        if verdict is OriginVerdict.FOREIGN and method in STATE_CHANGING_METHODS:
            await exchange.refuse(send, 403, CROSS_ORIGIN_WRITE)
            return
        await self.forwarder(exchange, receive, send, forward_origin=verdict is OriginVerdict.ALLOWED)


def own_endpoints(config: FrontConfig, state: UpstreamState, assets: UiAssets, metrics: FrontMetrics, upstream: UpstreamClient, warnings: StartupWarnings | None = None) -> Starlette:
    """The UI, `/health` and `/metrics` as Starlette routes, with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(_: Starlette):
        # Compress the UI build once, off the event loop, while MLflow is still starting.
        async with anyio.create_task_group() as background:
            # A stop during compression need not wait for it: the thread's work is only a cache.
            background.start_soon(partial(anyio.to_thread.run_sync, assets.precompress_all, abandon_on_cancel=True))
            try:
                yield
            finally:
                background.cancel_scope.cancel()
                await upstream.aclose()

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return mlflow_error(500, "The front failed to handle this request; see the server log.")

    async def routing_error(request: Request, exc: HTTPException) -> Response:
        # A method a route does not take: MLflow's shape, not Starlette's plain text.
        return mlflow_error(exc.status_code, f"{exc.detail}: {request.method} is not served at this path.", headers=exc.headers)

    async def health(request: Request) -> Response:
        # With auth on, /health stays open to probes but shows MLflow's output only with the token.
        return health_response(state, with_output=request.scope["state"]["authenticated"], load=upstream.load(), warnings=warnings)

    async def metrics_endpoint(_: Request) -> Response:
        return metrics.response()

    def ui_headers(response: Response) -> Response:
        response.headers.setdefault("x-content-type-options", "nosniff")
        if config.frame_options.upper() != "NONE":
            response.headers.setdefault("x-frame-options", config.frame_options.upper())
        return response

    async def index(request: Request) -> Response:
        return ui_headers(await assets.response("index.html", request.headers, request.method))

    async def static_file(request: Request) -> Response:
        return ui_headers(await assets.response(request.path_params["path"], request.headers, request.method))

    prefix = config.static_prefix
    # Plain Starlette routing: FastAPI's request handling (and pydantic, ~20 MiB) bought nothing here.
    return Starlette(
        routes=[
            Route(f"{prefix}/health", health, methods=["GET"]),
            Route(f"{prefix}/metrics", metrics_endpoint, methods=["GET", "HEAD"]),
            Route(f"{prefix}/", index, methods=sorted(ALL_METHODS)),
            Route(f"{prefix}/static-files/{{path:path}}", static_file, methods=sorted(ALL_METHODS)),
            *([Route("/health", health, methods=["GET"])] if prefix else []),  # probes at the root as well
        ],
        exception_handlers={Exception: unexpected_error, HTTPException: routing_error},
        lifespan=lifespan,
    )
