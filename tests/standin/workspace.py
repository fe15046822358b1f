"""A stand-in Databricks workspace on 127.0.0.1, for tests of the `databricks` stores.

What it serves, and only behind the checks a workspace makes:
- the discovery documents databricks-sdk reads before OAuth: `/.well-known/databricks-config` (host
  metadata) and `/oidc/.well-known/oauth-authorization-server`;
- the OAuth machine-to-machine token endpoint `/oidc/v1/token` (client credentials, as Databricks
  Apps' service principal uses it), which issues short random access tokens;
- `/api/2.0/preview/scim/v2/Me`, the cheap authenticated call `mlflow-app serve` checks at start;
- MLflow's tracking REST API (`/api/2.0/mlflow/…`, `/api/3.0/mlflow/…`, and the `preview` forms),
  forwarded to a real `mlflow server` child only with `Authorization: Bearer <issued token or PAT>`;
- the Unity Catalog model registry (`/api/2.0/mlflow/unity-catalog/…`, unity_catalog.py) and the
  Files API (`/api/2.0/fs/…`, files_api.py), with their state in the stand-in, behind the same check.

The child keeps its SQLite database and artifact root in a directory of the stand-in's own, and
experiments get `dbfs:/databricks/mlflow-tracking/<id>` locations as on a workspace, so no test can
pass by a client reading or writing the store's files itself. Tests may query the child directly
(`backing_url`), the registry (`unity_catalog`) and the files (`files_root`) to check what landed.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from launcher.mlflow_process import die_with_parent
from tests.app_process import free_port
from tests.standin.errors import ApiError, databricks_error
from tests.standin.files_api import FilesApi
from tests.standin.grants import Grants
from tests.standin.tracking_rules import TrackingRules
from tests.standin.unity_catalog import UnityCatalogRegistry
from tests.standin.workspace_folders import WorkspaceFolders
from tests.threaded_server import ThreadedServer

WORKSPACE_ID = "1234567890123456"
ACCOUNT_ID = "00000000-0000-4000-8000-00000000abcd"
# The API prefixes MLflow's databricks stores call (mlflow/utils/rest_utils.py: 2.0, 3.0, and the
# preview forms older clients use); everything else answers 404 like an unknown endpoint.
MLFLOW_API_PREFIXES = ("/api/2.0/mlflow/", "/api/2.0/preview/mlflow/", "/api/3.0/mlflow/")
BACKING_START_TIMEOUT = 120.0
PAT_USER = "pat-user@example.com"  # who a personal access token belongs to


@dataclass
class RecordedRequest:
    method: str
    path: str
    status: int
    credential: str  # "oauth", "pat", "basic" (token endpoint), "presigned" (storage URLs), "none" or "invalid"


@dataclass
class Faults:
    """Failures a test can switch on while the stand-in runs."""

    mlflow_status: int | None = None  # answer every MLflow API call with this status instead
    mlflow_delay: float = 0.0  # seconds before answering an MLflow API call
    token_delay: float = 0.0  # seconds before the token endpoint answers


@dataclass
class IssuedToken:
    value: str
    client_id: str
    expires_at: float


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    """The token endpoint's error shape (RFC 6749 section 5.2), which databricks-sdk reads."""
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


class StandinWorkspace:
    """One stand-in workspace: a Starlette app on a free loopback port, plus (optionally) its MLflow."""

    def __init__(
        self,
        workdir: Path,
        client_id: str = "4d1b6a1e-0c7f-4e39-9f6a-standin0001",
        client_secret: str = "doseSTANDINsecret7c1f9e3a5b2d8",
        pat: str | None = None,
        with_mlflow: bool = True,
        token_ttl_seconds: int = 3600,
    ):
        self.workdir = workdir
        self.client_id = client_id
        self.client_secret = client_secret
        self.pat = pat
        self.with_mlflow = with_mlflow
        self.token_ttl_seconds = token_ttl_seconds
        self.faults = Faults()
        self.grants = Grants()  # open until a test calls grants.enforce()
        self.tokens: dict[str, IssuedToken] = {}
        self.requests: list[RecordedRequest] = []
        self.port = 0
        self.backing_port = 0
        self._runner: ThreadedServer | None = None
        self._backing: subprocess.Popen | None = None
        self._forward: httpx.AsyncClient | None = None
        self.files_root = workdir / "files"
        self.unity_catalog = UnityCatalogRegistry(self.files_root / "uc-models", grants=self.grants)
        self.files = FilesApi(self.files_root, self.unity_catalog, lambda: self.url, grants=self.grants)
        # The registry's and the Files API's routes come before the forward to MLflow, which would
        # otherwise take `/api/2.0/mlflow/unity-catalog/…`.
        # The folder tree, and the workspace's rules on experiment names (checked before the forward to MLflow).
        self.folders = WorkspaceFolders(self.grants, users=(client_id, PAT_USER))
        self.tracking_rules = TrackingRules(self.folders, lambda: self._forward, MLFLOW_API_PREFIXES)
        guarded = [self._guarded(route) for route in self.unity_catalog.routes() + self.files.routes() + self.grants.routes()]
        guarded += [self._guarded(route) for route in self.folders.routes() + self.tracking_rules.routes()]
        self.app = Starlette(
            routes=[
                Route("/.well-known/databricks-config", self.host_metadata),
                Route("/oidc/.well-known/oauth-authorization-server", self.oidc_discovery),
                Route("/oidc/v1/token", self.token, methods=["POST"]),
                Route("/api/2.0/preview/scim/v2/Me", self.me),
                *guarded,
                *[self._presigned(route) for route in self.files.storage_routes()],
                Route("/{path:path}", self.api, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
            ]
        )

    # -- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The workspace URL: what DATABRICKS_HOST is set to."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def backing_url(self) -> str:
        """The stand-in's own MLflow, without any check: for tests to see what landed."""
        return f"http://127.0.0.1:{self.backing_port}"

    @property
    def issued_tokens(self) -> list[str]:
        return list(self.tokens)

    def oauth_env(self) -> dict[str, str]:
        """The variables Databricks Apps sets for an app's service principal, for this workspace."""
        return {
            "DATABRICKS_HOST": self.url,
            "DATABRICKS_CLIENT_ID": self.client_id,
            "DATABRICKS_CLIENT_SECRET": self.client_secret,
            "DATABRICKS_WORKSPACE_ID": WORKSPACE_ID,
        }

    # -- endpoints ---------------------------------------------------------------------------

    async def host_metadata(self, request: Request) -> Response:
        self._record(request, 200, "none")
        return JSONResponse({"oidc_endpoint": f"{self.url}/oidc", "account_id": ACCOUNT_ID, "workspace_id": WORKSPACE_ID, "cloud": "AWS"})

    async def oidc_discovery(self, request: Request) -> Response:
        self._record(request, 200, "none")
        return JSONResponse(
            {
                "issuer": f"{self.url}/oidc",
                "authorization_endpoint": f"{self.url}/oidc/v1/authorize",
                "token_endpoint": f"{self.url}/oidc/v1/token",
                "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "scopes_supported": ["all-apis", "offline_access"],
            }
        )

    async def token(self, request: Request) -> Response:
        if self.faults.token_delay:
            await anyio.sleep(self.faults.token_delay)
        form = dict(urllib.parse.parse_qsl((await request.body()).decode("latin-1")))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
            except ValueError:
                client_id = client_secret = None
        if form.get("grant_type") != "client_credentials":
            return self._answer(request, oauth_error(400, "unsupported_grant_type", "Only client_credentials is served here."), "basic")
        if client_id != self.client_id or not secrets.compare_digest((client_secret or "").encode(), self.client_secret.encode()):
            return self._answer(request, oauth_error(401, "invalid_client", "Client authentication failed"), "invalid")
        value = "eyJstandin." + secrets.token_urlsafe(32)
        self.tokens[value] = IssuedToken(value, client_id, time.time() + self.token_ttl_seconds)
        body = {"access_token": value, "token_type": "Bearer", "expires_in": self.token_ttl_seconds, "scope": form.get("scope", "all-apis")}
        return self._answer(request, JSONResponse(body), "basic")

    async def me(self, request: Request) -> Response:
        credential = self._credential(request)
        if refusal := self._refusal(credential):
            return self._answer(request, refusal, credential)
        body = {
            "id": "7010000000000001",
            "userName": self.client_id,
            "displayName": "mlflow-app service principal",
            "active": True,
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        }
        return self._answer(request, JSONResponse(body), credential)

    async def api(self, request: Request) -> Response:
        path = request.url.path
        if not path.startswith(MLFLOW_API_PREFIXES):
            return self._answer(request, databricks_error(404, "ENDPOINT_NOT_FOUND", f"No API found for '{request.method} {path}'"), "none")
        credential = self._credential(request)
        if refusal := self._refusal(credential):
            return self._answer(request, refusal, credential)
        if fault := await self._mlflow_fault():
            return self._answer(request, fault, credential)
        if not self._forward:
            return self._answer(request, databricks_error(501, "NOT_IMPLEMENTED", "This stand-in runs without MLflow."), credential)
        upstream = await self._forward.request(
            request.method,
            path,
            params=request.query_params.multi_items(),
            content=await request.body(),
            headers={"Content-Type": request.headers.get("content-type", "application/json")},
        )
        answer = Response(upstream.content, status_code=upstream.status_code, media_type=upstream.headers.get("content-type"))
        answer.headers["X-Databricks-Org-Id"] = WORKSPACE_ID  # MLflow's UC store reads it off runs/get
        return self._answer(request, answer, credential)

    async def _mlflow_fault(self) -> Response | None:
        """The delay and failure a test switched on for MLflow API calls (UC registry included)."""
        if self.faults.mlflow_delay:
            await anyio.sleep(self.faults.mlflow_delay)
        if self.faults.mlflow_status:
            status = self.faults.mlflow_status
            return databricks_error(status, "TEMPORARILY_UNAVAILABLE", "The service is temporarily unavailable.")
        return None

    def _guarded(self, route: Route) -> Route:
        """The route behind the bearer-token check, recorded; `ApiError`s become error bodies."""
        handler = route.endpoint

        async def endpoint(request: Request) -> Response:
            credential = self._credential(request)
            if refusal := self._refusal(credential):
                return self._answer(request, refusal, credential)
            request.state.principal = self._principal(request)
            if request.url.path.startswith(MLFLOW_API_PREFIXES) and (fault := await self._mlflow_fault()):
                return self._answer(request, fault, credential)
            try:
                response = await handler(request)
            except ApiError as error:
                response = error.response()
            response.headers["X-Databricks-Org-Id"] = WORKSPACE_ID
            return self._answer(request, response, credential)

        return Route(route.path, endpoint, methods=list(route.methods or []))

    def _presigned(self, route: Route) -> Route:
        """A presigned-URL route: its handler checks the URL's signature; recorded, no bearer check."""
        handler = route.endpoint

        async def endpoint(request: Request) -> Response:
            try:
                response = await handler(request)
            except ApiError as error:
                response = error.response()
            return self._answer(request, response, "presigned")

        return Route(route.path, endpoint, methods=list(route.methods or []))

    # -- credentials -------------------------------------------------------------------------

    def _principal(self, request: Request) -> str:
        """Who the caller is, as the workspace would record it (user_id of what it creates)."""
        value = request.headers.get("authorization", "")[7:].strip()
        issued = self.tokens.get(value)
        return issued.client_id if issued else PAT_USER

    def _credential(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return "none"
        value = header[7:].strip()
        if self.pat and secrets.compare_digest(value.encode(), self.pat.encode()):
            return "pat"
        issued = self.tokens.get(value)
        if issued and issued.expires_at > time.time():
            return "oauth"
        return "invalid"

    @staticmethod
    def _refusal(credential: str) -> Response | None:
        if credential == "none":
            return databricks_error(401, "UNAUTHENTICATED", "Credential was not sent or was of an unsupported type for this API.")
        if credential == "invalid":
            return databricks_error(403, "PERMISSION_DENIED", "Invalid access token.")
        return None

    def _answer(self, request: Request, response: Response, credential: str) -> Response:
        self._record(request, response.status_code, credential)
        return response

    def _record(self, request: Request, status: int, credential: str) -> None:
        self.requests.append(RecordedRequest(request.method, request.url.path, status, credential))

    def mlflow_calls(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(MLFLOW_API_PREFIXES)]

    def files_calls(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(("/api/2.0/fs/", "/standin-cloud-storage/"))]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> StandinWorkspace:
        """Start the backing MLflow (if any) and the workspace; returns once both answer."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.with_mlflow:
            self._start_backing()
        self._runner = ThreadedServer(self.app, name="standin-workspace", around=self._backing_client, log_level="warning").start()
        self.port = self._runner.port
        if self.with_mlflow:
            self._wait_backing()
        return self

    @asynccontextmanager
    async def _backing_client(self):
        async with httpx.AsyncClient(base_url=self.backing_url, timeout=60, trust_env=False) as client:
            self._forward = client if self.with_mlflow else None
            yield

    def _start_backing(self) -> None:
        self.backing_port = free_port()
        store = self.workdir / "store"  # the workspace's storage: no test client is given this path
        store.mkdir(exist_ok=True)
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.backing_port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
            "--default-artifact-root", "dbfs:/databricks/mlflow-tracking",
            "--no-serve-artifacts",
        ]  # fmt: skip
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "MLFLOW_"))},
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
        with open(self.workdir / "backing-mlflow.log", "ab") as log:
            self._backing = subprocess.Popen(
                command,
                env=env,
                cwd=store,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,  # a test process that dies without stop() leaves no MLflow behind
            )

    def _wait_backing(self) -> None:
        deadline = time.monotonic() + BACKING_START_TIMEOUT
        while time.monotonic() < deadline:
            if self._backing.poll() is not None:
                raise RuntimeError(f"the stand-in's MLflow exited:\n{self.backing_log()[-2000:]}")
            try:
                if httpx.get(f"{self.backing_url}/health", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"the stand-in's MLflow did not start within {BACKING_START_TIMEOUT:.0f} s")

    def backing_log(self) -> str:
        path = self.workdir / "backing-mlflow.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._runner:
            self._runner.stop()
        if self._backing and self._backing.poll() is None:
            try:
                os.killpg(self._backing.pid, 15)
                self._backing.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self._backing.pid, 9)
                except ProcessLookupError:
                    pass

    def __enter__(self) -> StandinWorkspace:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class BackingMlflow:
    """Queries to the stand-in's own MLflow, around the workspace's checks: what landed there."""

    url: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def get(self, path: str, **params) -> dict:
        response = self.client.get(f"/api/2.0/mlflow/{path}", params=params)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict) -> dict:
        response = self.client.post(f"/api/2.0/mlflow/{path}", json=body)
        response.raise_for_status()
        return response.json()
