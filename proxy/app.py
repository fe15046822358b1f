"""The front's ASGI app: UI assets from disk, `/health`, and MLflow for everything else."""

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
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.assets import UiAssets
from proxy.auth import TokenAuth
from proxy.edge_policy import STATE_CHANGING_METHODS, EdgePolicy, OriginVerdict
from proxy.errors import mlflow_error
from proxy.forward import UpstreamClient
from proxy.health import health_response
from proxy.metrics import FrontMetrics, RequestMetrics
from proxy.request_log import RequestLog
from proxy.upstream import UpstreamState

log = logging.getLogger("mlflow_app.front")

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Paths the front answers for itself; the Host check does not apply (probes use IPs and names).
UNGUARDED_PATHS = frozenset({"/health"})


@dataclass(frozen=True)
class FrontConfig:
    """What the front needs from the launcher's settings."""

    upstream_timeout_seconds: float = 60.0
    edge_policy: EdgePolicy = field(default_factory=EdgePolicy)
    frame_options: str = "SAMEORIGIN"
    # When set, every request but /health needs it (proxy.auth); never printed, hence repr=False.
    auth_token: str | None = field(default=None, repr=False)


def create_app(
    config: FrontConfig, state: UpstreamState, assets: UiAssets, metrics: FrontMetrics | None = None
) -> ASGIApp:
    """Build the front. `state` is owned and updated by whoever supervises MLflow."""
    upstream = UpstreamClient(state, config.upstream_timeout_seconds)
    metrics = metrics or FrontMetrics(state)

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
        # No route (a path with a line break in it) or a method none of them takes: MLflow's shape,
        # not Starlette's plain text.
        return mlflow_error(exc.status_code, f"{exc.detail}: {request.method} is not served at this path.", headers=exc.headers)

    async def health(request: Request) -> Response:
        # With auth on, /health stays open to probes but shows MLflow's output only with the token.
        return health_response(state, with_output=request.scope.get("state", {}).get("authenticated", True))

    # A route like any other: behind the Host check and whatever guards the app.
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

    async def to_mlflow(request: Request) -> Response:
        public_host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
        scheme = request.headers.get("x-forwarded-proto") or request.url.scheme
        verdict = config.edge_policy.origin_verdict(request.headers.get("origin"), public_host, scheme)
        if verdict is OriginVerdict.FOREIGN and request.method in STATE_CHANGING_METHODS:
            return mlflow_error(
                403,
                "Cross-origin request blocked: this server accepts writes only from its own "
                "origin; allow another with --cors-allowed-origins "
                "(MLFLOW_SERVER_CORS_ALLOWED_ORIGINS).",
            )
        return await upstream.forward(request, forward_origin=verdict is OriginVerdict.ALLOWED)

    # Plain Starlette routing: FastAPI's request handling (and pydantic, ~20 MiB) bought nothing here.
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET", "HEAD"]),
            Route("/", index, methods=ALL_METHODS),
            Route("/static-files/{path:path}", static_file, methods=ALL_METHODS),
            Route("/{path:path}", to_mlflow, methods=ALL_METHODS),
        ],
        exception_handlers={Exception: unexpected_error, HTTPException: routing_error},
        lifespan=lifespan,
    )

    guarded = TokenAuth(app, config.auth_token) if config.auth_token else app
    # Outermost first: measured and logged whatever answers, the Host check's 403 included.
    return RequestMetrics(RequestLog(HostGuard(guarded, config.edge_policy)), metrics)


class HostGuard:
    """Refuses requests whose `Host` is not one of ours (DNS rebinding), before any routing."""

    def __init__(self, app: ASGIApp, policy: EdgePolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNGUARDED_PATHS:
            hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
            if len(hosts) > 1:  # RFC 9112 §3.2: 400; the front and MLflow might each read another
                await mlflow_error(400, "The request has more than one Host header.")(scope, receive, send)
                return
            if not self.policy.host_allowed(hosts[0] if hosts else ""):
                response = mlflow_error(
                    403,
                    "This server does not answer to the host name in the request's Host header; "
                    "add it to --allowed-hosts (MLFLOW_SERVER_ALLOWED_HOSTS).",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
