"""A stand-in for the Databricks Apps edge: the platform's proxy in front of a deployed app.

What it checks, as the platform does for calls from outside the browser: `/api/...` paths only, with
`Authorization: Bearer <token>` where the token is one the stand-in workspace issued and has not
expired. Anything else gets 401 (the platform would send a browser to its login page instead). What
passes is forwarded to the app with the headers the platform adds (`X-Forwarded-Host`,
`X-Forwarded-Email`, `X-Request-Id`), and without `Authorization`: the app never needs it.

Its URL is plain http on 127.0.0.1, not https://*.databricksapps.com: tests list it in
MLFLOW_APP_DATABRICKS_TOKEN_URLS, which is also how a user reaches an app through a custom domain.
"""

from __future__ import annotations

import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.standin.workspace import StandinWorkspace
from tests.threaded_server import ThreadedServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host", "content-length"}


@dataclass
class EdgeRequest:
    method: str
    path: str
    status: int
    credential: str  # "oauth" (a token the workspace issued), "none" or "invalid"
    token: str | None  # the bearer value received, for tests to compare with what was issued


class AppsEdge:
    """The edge on a free loopback port, forwarding accepted calls to `app_url`."""

    def __init__(self, workspace: StandinWorkspace, app_url: str, user_email: str = "someone@example.com"):
        self.workspace = workspace
        self.app_url = app_url
        self.user_email = user_email
        self.requests: list[EdgeRequest] = []
        self.port = 0
        self._runner: ThreadedServer | None = None
        self._upstream: httpx.AsyncClient | None = None
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=methods)])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: Request) -> Response:
        token, credential = self._credential(request)
        path = request.url.path
        if credential != "oauth" or not path.startswith("/api/"):
            message = "Token authentication is accepted on /api/ paths only." if credential == "oauth" else "Unauthorized"
            return self._answer(request, JSONResponse({"error_code": "UNAUTHENTICATED", "message": message}, status_code=401), credential, token)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "authorization"}
        headers.update({"X-Forwarded-Host": request.headers.get("host", ""), "X-Forwarded-Email": self.user_email, "X-Request-Id": str(uuid.uuid4())})
        upstream = await self._upstream.request(request.method, request.url.path, params=request.query_params.multi_items(), content=await request.body(), headers=headers)
        passed = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}}
        return self._answer(request, Response(upstream.content, status_code=upstream.status_code, headers=passed), credential, token)

    def _credential(self, request: Request) -> tuple[str | None, str]:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None, "none"
        value = header[7:].strip()
        issued = self.workspace.tokens.get(value)
        return value, "oauth" if issued and issued.expires_at > time.time() else "invalid"

    def _answer(self, request: Request, response: Response, credential: str, token: str | None) -> Response:
        self.requests.append(EdgeRequest(request.method, request.url.path, response.status_code, credential, token))
        return response

    def start(self) -> AppsEdge:
        self._runner = ThreadedServer(self.app, name="standin-apps-edge", around=self._upstream_client, log_level="warning").start()
        self.port = self._runner.port
        return self

    @asynccontextmanager
    async def _upstream_client(self):
        async with httpx.AsyncClient(base_url=self.app_url, timeout=60, trust_env=False) as client:
            self._upstream = client
            yield

    def stop(self) -> None:
        if self._runner:
            self._runner.stop()

    def __enter__(self) -> AppsEdge:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
