"""A stand-in for the workspace and Apps REST endpoints that `mlflow-app deploy` reaches through
databricks-sdk, with state: workspace folders and files, apps and their compute, deployments moving
through their states (some app names set to end otherwise). Served by uvicorn on 127.0.0.1 in a thread.

It answers only with the states databricks-sdk 0.156 knows (`AppDeploymentState`, `ComputeState`,
`ApplicationState` in `databricks/sdk/service/apps.py`): a deployment is IN_PROGRESS from its
creation until SUCCEEDED or FAILED, an app's compute STARTING until ACTIVE, the app itself
UNAVAILABLE, DEPLOYING, then RUNNING. Each GET moves one step, so tests see every step. It signs in
callers with a personal access token (`TOKEN`) or with OAuth machine-to-machine: the discovery
documents and the token endpoint are the workspace stand-in's (tests/standin/workspace.py), so the
SDK takes the same path as against a workspace. It refuses what the platform documents refusing:
a file over 10 MB (10,000,000 bytes), at import and at deployment.

It follows the public REST reference and databricks-sdk's calls, not the platform itself: what it
accepts is what we could check without a workspace.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import posixpath
import re
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.standin.workspace import WORKSPACE_ID, StandinWorkspace
from tests.threaded_server import ThreadedServer

TOKEN = "standin-token-for-tests"
USER = "someone@example.com"
CLIENT_ID = "6f1e0c3a-2b7d-4e59-8a41-standinsp0001"  # a service principal's application id
CLIENT_SECRET = "doseSTANDINdeploysecret4e8b2c9d1a"
MAX_FILE_BYTES = 10_000_000  # "App files can't exceed 10 MB" (Databricks Apps docs), read as SI megabytes
NOTEBOOK_HEADER = b"# Databricks notebook source"
NOTEBOOK_SUFFIXES = (".py", ".sql", ".scala", ".r")
COMPUTE_SIZES = ("MEDIUM", "LARGE", "XLARGE")  # databricks-sdk 0.156's ComputeSize
DEFAULT_COMPUTE_SIZE = "MEDIUM"
SUCCESS_STEPS = (
    ("IN_PROGRESS", "Preparing source code for new app deployment."),
    ("IN_PROGRESS", "Installing packages from requirements.txt."),
    ("SUCCEEDED", "App started successfully."),
)


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


@dataclass
class WorkspaceObject:
    kind: str  # DIRECTORY, FILE or NOTEBOOK
    content: bytes = b""
    format: str | None = None


@dataclass
class StandinState:
    """What the workspace holds, every request it saw (method, path), and every body it answered."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    answers: list[tuple[str, dict]] = field(default_factory=list)  # (path, JSON body) of each answer about apps
    objects: dict[str, WorkspaceObject] = field(default_factory=lambda: {"/": WorkspaceObject("DIRECTORY")})
    apps: dict[str, dict] = field(default_factory=dict)
    deployments: dict[str, dict] = field(default_factory=dict)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # deployment id → files
    # app name → how its deployments end instead of SUCCEEDED: ("FAILED", message), ("CANCELLED",
    # message), or ("IN_PROGRESS", message) for one that never ends.
    deployment_endings: dict[str, tuple[str, str]] = field(default_factory=dict)
    compute_start_polls: int = 2  # GETs an app's compute stays STARTING
    lock: threading.Lock = field(default_factory=threading.Lock)

    def files_under(self, root: str) -> dict[str, WorkspaceObject]:
        prefix = root.rstrip("/") + "/"
        return {p[len(prefix) :]: o for p, o in self.objects.items() if p.startswith(prefix) and o.kind != "DIRECTORY"}

    def calls(self, prefix: str = "/api/") -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.requests if p.startswith(prefix)]


class StandinAppsApi:
    """The ASGI app over a StandinState; `oauth` serves the discovery documents and issues tokens."""

    def __init__(self, state: StandinState, oauth: StandinWorkspace) -> None:
        self.state = state
        self.oauth = oauth
        self.app = Starlette(
            routes=[
                Route("/.well-known/databricks-config", oauth.host_metadata),
                Route("/oidc/.well-known/oauth-authorization-server", oauth.oidc_discovery),
                Route("/oidc/v1/token", oauth.token, methods=["POST"]),
                Route("/api/2.0/preview/scim/v2/Me", self.me),
                Route("/api/2.0/workspace/mkdirs", self.mkdirs, methods=["POST"]),
                Route("/api/2.0/workspace/import", self.import_, methods=["POST"]),
                Route("/api/2.0/apps", self.create_app, methods=["POST"]),
                Route("/api/2.0/apps/{name}", self.get_app, methods=["GET"]),
                Route("/api/2.0/apps/{name}/start", self.start_app, methods=["POST"]),
                Route("/api/2.0/apps/{name}/deployments", self.create_deployment, methods=["POST"]),
                Route("/api/2.0/apps/{name}/deployments/{deployment_id}", self.get_deployment, methods=["GET"]),
            ]
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            self.state.requests.append((scope["method"], scope["path"]))
            if scope["path"].startswith("/api/") and self.caller(dict(scope["headers"])) is None:
                await error(401, "UNAUTHENTICATED", "Invalid access token.")(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def caller(self, headers: dict[bytes, bytes]) -> str | None:
        """Who a bearer token belongs to: the user of the personal access token, or the service
        principal the token endpoint issued it to (unexpired); None for anything else."""
        value = headers.get(b"authorization", b"").decode("latin-1").removeprefix("Bearer ").strip()
        if secrets.compare_digest(value.encode(), TOKEN.encode()):
            return USER
        issued = self.oauth.tokens.get(value)
        return issued.client_id if issued and issued.expires_at > time.time() else None

    def answer(self, request: Request, body: dict) -> JSONResponse:
        self.state.answers.append((request.url.path, body))
        return JSONResponse(body)

    async def me(self, request: Request) -> JSONResponse:
        return JSONResponse({"id": "42", "userName": self.caller(dict(request.headers.raw)), "active": True})

    # Workspace files

    async def mkdirs(self, request: Request) -> JSONResponse:
        path = (await request.json()).get("path", "")
        if not path.startswith("/"):
            return error(400, "INVALID_PARAMETER_VALUE", f"Path ({path}) must be absolute.")
        with self.state.lock:
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts) + 1):
                prefix = "/" + "/".join(parts[:depth])
                existing = self.state.objects.get(prefix)
                if existing is not None and existing.kind != "DIRECTORY":
                    return error(400, "RESOURCE_ALREADY_EXISTS", f"Node ({prefix}) already exists and is not a directory.")
                self.state.objects.setdefault(prefix, WorkspaceObject("DIRECTORY"))
        return JSONResponse({})

    async def import_(self, request: Request) -> JSONResponse:
        fields = parse_multipart(request.headers["content-type"], await request.body())
        path, fmt = fields.get("path", b"").decode(), fields.get("format", b"SOURCE").decode()
        overwrite = fields.get("overwrite", b"false").decode() == "true"
        content, language = fields.get("content", b""), fields.get("language")
        if len(content) > MAX_FILE_BYTES:
            return error(400, "MAX_FILE_SIZE_EXCEEDED", f"File {path} is {len(content)} bytes; the limit is {MAX_FILE_BYTES} bytes (10 MB).")
        suffix = posixpath.splitext(path)[1].lower()
        if fmt == "AUTO":
            notebook = suffix in NOTEBOOK_SUFFIXES and content.startswith(NOTEBOOK_HEADER)
        elif fmt == "SOURCE":
            if language is None:
                return error(400, "INVALID_PARAMETER_VALUE", "The language parameter is required for the SOURCE format.")
            notebook = True
        else:
            return error(400, "INVALID_PARAMETER_VALUE", f"Unsupported import format {fmt}.")
        target = posixpath.splitext(path)[0] if notebook else path
        with self.state.lock:
            parent = self.state.objects.get(posixpath.dirname(path))
            if parent is None or parent.kind != "DIRECTORY":
                return error(404, "RESOURCE_DOES_NOT_EXIST", f"The parent folder ({posixpath.dirname(path)}) does not exist.")
            if target in self.state.objects and not overwrite:
                return error(400, "RESOURCE_ALREADY_EXISTS", f"{target} already exists.")
            self.state.objects[target] = WorkspaceObject("NOTEBOOK" if notebook else "FILE", content, fmt)
        return JSONResponse({})

    # Apps

    async def create_app(self, request: Request) -> JSONResponse:
        body = await request.json()
        name = body.get("name", "")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,29}", name):
            return error(400, "INVALID_PARAMETER_VALUE", f"Invalid app name {name!r}.")
        size = body.get("compute_size", DEFAULT_COMPUTE_SIZE)
        if size not in COMPUTE_SIZES:
            return error(400, "INVALID_PARAMETER_VALUE", f"Invalid compute size {size!r}.")
        with self.state.lock:
            if name in self.state.apps:
                return error(409, "RESOURCE_ALREADY_EXISTS", f"An app with the same name {name} already exists.")
            app = {
                "name": name,
                "description": body.get("description", ""),
                "resources": body.get("resources", []),
                "compute_size": size,
                "url": f"https://{name}-{WORKSPACE_ID}.aws.databricksapps.com",
                "service_principal_client_id": str(uuid.uuid4()),
                "compute_status": {"state": "STARTING", "message": "App compute is starting."},
                "app_status": {"state": "UNAVAILABLE", "message": "App has not been deployed yet."},
                "_polls": 0,
            }
            self.state.apps[name] = app
            return self.answer(request, public(app))

    async def get_app(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        with self.state.lock:
            app = self.state.apps.get(name)
            if app is None:
                return error(404, "RESOURCE_DOES_NOT_EXIST", f"App with name {name} does not exist or is deleted.")
            if app["compute_status"]["state"] == "STARTING":
                app["_polls"] += 1
                if app["_polls"] > self.state.compute_start_polls:
                    app["compute_status"] = {"state": "ACTIVE", "message": "App compute is running."}
            return self.answer(request, public(app))

    async def start_app(self, request: Request) -> JSONResponse:
        with self.state.lock:
            app = self.state.apps.get(request.path_params["name"])
            if app is None:
                return error(404, "RESOURCE_DOES_NOT_EXIST", "App does not exist.")
            app["compute_status"], app["_polls"] = {"state": "STARTING", "message": "App compute is starting."}, 0
            return self.answer(request, public(app))

    async def create_deployment(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        body = await request.json()
        source = body.get("source_code_path", "")
        with self.state.lock:
            app = self.state.apps.get(name)
            if app is None:
                return error(404, "RESOURCE_DOES_NOT_EXIST", f"App with name {name} does not exist or is deleted.")
            if app["compute_status"]["state"] != "ACTIVE":
                return error(400, "INVALID_PARAMETER_VALUE", f"Cannot deploy app {name} as its compute is {app['compute_status']['state']}.")
            if any(d["_app"] == name and d["status"]["state"] == "IN_PROGRESS" for d in self.state.deployments.values()):
                return error(400, "INVALID_PARAMETER_VALUE", f"App {name} has a deployment in progress.")
            folder = self.state.objects.get(source.rstrip("/"))
            if folder is None or folder.kind != "DIRECTORY":
                return error(404, "RESOURCE_DOES_NOT_EXIST", f"Source code path {source} does not exist.")
            files = {p: o.content for p, o in self.state.files_under(source).items()}
            deployment_id = uuid.uuid4().hex
            deployment = {
                "deployment_id": deployment_id,
                "source_code_path": source,
                "mode": body.get("mode"),
                "deployment_artifacts": {"source_code_path": f"/Workspace/Users/{app['service_principal_client_id']}/src/{deployment_id}"},
                "status": {"state": SUCCESS_STEPS[0][0], "message": SUCCESS_STEPS[0][1]},
                "create_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "_app": name,
                "_steps": itertools.islice(self.steps(name, files), 1, None),
                "_app_status_before": app["app_status"],
            }
            self.state.deployments[deployment_id] = deployment
            self.state.snapshots[deployment_id] = files
            app["pending_deployment"] = public(deployment)
            app["app_status"] = {"state": "DEPLOYING", "message": "App is being deployed."}
            return self.answer(request, public(deployment))

    def steps(self, app_name: str, files: dict[str, bytes]):
        """The states a deployment of `files` goes through, one per GET; the last one repeats."""
        too_big = sorted(path for path, content in files.items() if len(content) > MAX_FILE_BYTES)
        ending = ("FAILED", f"File {too_big[0]} exceeds the 10 MB limit for app files.") if too_big else self.state.deployment_endings.get(app_name)
        steps = SUCCESS_STEPS if ending is None else (*SUCCESS_STEPS[:-1], ending)
        return itertools.chain(steps, itertools.repeat(steps[-1]))

    async def get_deployment(self, request: Request) -> JSONResponse:
        name, deployment_id = request.path_params["name"], request.path_params["deployment_id"]
        with self.state.lock:
            deployment = self.state.deployments.get(deployment_id)
            if deployment is None or deployment["_app"] != name:
                return error(404, "RESOURCE_DOES_NOT_EXIST", f"Deployment {deployment_id} does not exist.")
            state, message = next(deployment["_steps"])
            deployment["status"] = {"state": state, "message": message}
            app = self.state.apps[name]
            if state != "IN_PROGRESS":
                app.pop("pending_deployment", None)
                app["app_status"] = deployment["_app_status_before"]
            if state == "SUCCEEDED":
                app["active_deployment"] = public(deployment)
                app["app_status"] = {"state": "RUNNING", "message": "App is running."}
            return self.answer(request, public(deployment))


def public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body (the workspace import's form)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True) for part in message.iter_parts()}


class StandinServer(ThreadedServer):
    """The stand-in on a free 127.0.0.1 port, in a thread, for the length of a `with` block."""

    def __init__(self, state: StandinState | None = None) -> None:
        self.state = state or StandinState()
        # Only the workspace stand-in's OAuth endpoints are used: it runs no MLflow and writes nothing.
        self.oauth = StandinWorkspace(Path(tempfile.gettempdir()) / "unused-standin-apps", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, with_mlflow=False)
        super().__init__(StandinAppsApi(self.state, self.oauth), name="standin-apps", log_level="warning")
        self.oauth.port = self.port  # its discovery documents name this server's URL

    def oauth_env(self) -> dict[str, str]:
        """DATABRICKS_HOST and the service principal's OAuth client, as a CI job that deploys sets them."""
        return {"DATABRICKS_HOST": self.url, "DATABRICKS_CLIENT_ID": CLIENT_ID, "DATABRICKS_CLIENT_SECRET": CLIENT_SECRET}
