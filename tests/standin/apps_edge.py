"""A stand-in for the Databricks Apps edge: the platform's proxy in front of a deployed app.

What it does, as the platform does for calls from outside the browser (doc unless marked):
- admits `/api/...` paths only, with `Authorization: Bearer <token>` where the token is a Databricks
  OAuth token the stand-in workspace issued and has not expired. A personal access token the
  workspace itself accepts, and a foreign JWT (an Entra ID token), are refused like no token at all:
  401 (the status and body are assumed; the platform would send a browser to its login page);
- forwards what passes to the app without `Authorization`, and with the headers the platform sets,
  replacing any a client sent: `X-Forwarded-Host`, `X-Forwarded-User` (`<user id>@<workspace id>`,
  a reported shape: the docs say only "the user identifier provided by the IdP"),
  `X-Forwarded-Email`, `X-Forwarded-Preferred-Username`, `X-Real-Ip` (the address the edge saw), a
  UUID `X-Request-Id`; and `X-Forwarded-Access-Token` only with user authorization on (here: the
  caller's own token; the platform's is the user's, possibly down-scoped);
- cuts a request whose answer takes longer than `request_timeout` seconds (120 by one report, ~300
  by a measurement; no official figure) with 504 and Envoy's text `upstream request timeout`
  (status and text assumed). The whole answer is read before it is passed on, so the cap covers
  the body too; whether the platform cuts a stream that has begun is unverified.

Its URL is plain http on 127.0.0.1, not https://<app>-<workspace id>.<region>.databricksapps.com:
tests list it in MLFLOW_APP_DATABRICKS_TOKEN_URLS, which is also how a user reaches an app through a
custom domain.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.standin.workspace import WORKSPACE_ID, StandinWorkspace
from tests.threaded_server import ThreadedServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host", "content-length"}
# What the platform sets about the caller; a client's own values never reach the app.
PLATFORM_HEADERS = {
    "authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-real-ip",
    "x-request-id",
}
REQUEST_TIMEOUT_SECONDS = 120.0  # reported; a measurement saw ~300 s
TIMEOUT_TEXT = "upstream request timeout"


@dataclass(frozen=True)
class EdgeUser:
    """Who the platform says is calling (one user for the whole stand-in)."""

    id: str = "7010000000000042"
    email: str = "someone@example.com"
    preferred_username: str = "someone@example.com"


@dataclass
class EdgeRequest:
    method: str
    path: str
    status: int
    credential: str  # "oauth" (issued by the workspace), "pat", "foreign" (a JWT it did not issue), "none" or "invalid"
    token: str | None  # the bearer value received, for tests to compare with what was issued


class AppsEdge:
    """The edge on a free loopback port, forwarding accepted calls to `app_url`."""

    def __init__(
        self,
        workspace: StandinWorkspace,
        app_url: str,
        user: EdgeUser | None = None,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
        user_authorization: bool = False,
    ):
        self.workspace = workspace
        self.app_url = app_url
        self.user = user or EdgeUser()
        self.request_timeout = request_timeout  # may be changed while running
        self.user_authorization = user_authorization
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
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | PLATFORM_HEADERS}
        headers.update(self._platform_headers(request, token))
        body = await request.body()
        try:
            with anyio.fail_after(self.request_timeout):
                upstream = await self._upstream.request(request.method, path, params=request.query_params.multi_items(), content=body, headers=headers)
        except TimeoutError:
            return self._answer(request, PlainTextResponse(TIMEOUT_TEXT, status_code=504), credential, token)
        passed = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}}
        return self._answer(request, Response(upstream.content, status_code=upstream.status_code, headers=passed), credential, token)

    def _platform_headers(self, request: Request, token: str) -> dict[str, str]:
        user = self.user
        headers = {
            "X-Forwarded-Host": request.headers.get("host", ""),
            "X-Forwarded-User": f"{user.id}@{WORKSPACE_ID}",
            "X-Forwarded-Email": user.email,
            "X-Forwarded-Preferred-Username": user.preferred_username,
            "X-Real-Ip": request.client.host if request.client else "",
            "X-Request-Id": str(uuid.uuid4()),
        }
        if self.user_authorization:
            headers["X-Forwarded-Access-Token"] = token
        return headers

    def _credential(self, request: Request) -> tuple[str | None, str]:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None, "none"
        value = header[7:].strip()
        issued = self.workspace.tokens.get(value)
        if issued:
            return value, "oauth" if issued.expires_at > time.time() else "invalid"
        if self.workspace.pat and value == self.workspace.pat:
            return value, "pat"
        return value, "foreign" if is_jwt(value) else "invalid"

    def _answer(self, request: Request, response: Response, credential: str, token: str | None) -> Response:
        self.requests.append(EdgeRequest(request.method, request.url.path, response.status_code, credential, token))
        return response

    def start(self) -> AppsEdge:
        self._runner = ThreadedServer(self.app, name="standin-apps-edge", around=self._upstream_client, log_level="warning").start()
        self.port = self._runner.port
        return self

    @asynccontextmanager
    async def _upstream_client(self):
        # No timeout of httpx's own: the edge's cap (request_timeout) decides.
        async with httpx.AsyncClient(base_url=self.app_url, timeout=None, trust_env=False) as client:
            self._upstream = client
            yield

    def stop(self) -> None:
        if self._runner:
            self._runner.stop()

    def __enter__(self) -> AppsEdge:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def is_jwt(value: str) -> bool:
    """Three base64url parts whose first is a JSON header with `alg`: e.g. an Entra ID access token."""
    parts = value.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return False
    return isinstance(header, dict) and "alg" in header
