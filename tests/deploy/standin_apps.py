"""A stand-in for the workspace and Apps REST endpoints that `mlflow-app deploy` reaches through
databricks-sdk, with state: workspace folders and files, apps and their compute, deployments moving
through their states (one app name set to fail). Served by uvicorn on 127.0.0.1 in a thread.

It follows the public REST reference and databricks-sdk's calls, not the platform itself: what it
accepts is what we could check without a workspace.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import posixpath
import re
import threading
import time
import uuid
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.threaded_server import ThreadedServer

TOKEN = "standin-token-for-tests"
USER = "someone@example.com"
WORKSPACE_ID = "1234567890"
NOTEBOOK_HEADER = b"# Databricks notebook source"
NOTEBOOK_SUFFIXES = (".py", ".sql", ".scala", ".r")
SUCCESS_STEPS = (
    ("PENDING", "Deployment is pending."),
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
    """What the workspace holds, and every request it saw (method, path)."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    objects: dict[str, WorkspaceObject] = field(default_factory=lambda: {"/": WorkspaceObject("DIRECTORY")})
    apps: dict[str, dict] = field(default_factory=dict)
    deployments: dict[str, dict] = field(default_factory=dict)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # deployment id → files
    failing_apps: dict[str, str] = field(default_factory=dict)  # app name → the platform's message
    compute_start_polls: int = 2  # GETs an app's compute stays STARTING
    lock: threading.Lock = field(default_factory=threading.Lock)

    def files_under(self, root: str) -> dict[str, WorkspaceObject]:
        prefix = root.rstrip("/") + "/"
        return {p[len(prefix) :]: o for p, o in self.objects.items() if p.startswith(prefix) and o.kind != "DIRECTORY"}

    def calls(self, prefix: str = "/api/") -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.requests if p.startswith(prefix)]


class StandinWorkspace:
    """The ASGI app over a StandinState."""

    def __init__(self, state: StandinState) -> None:
        self.state = state
        self.app = Starlette(
            routes=[
                Route("/.well-known/databricks-config", self.host_metadata),
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
            headers = dict(scope["headers"])
            if scope["path"].startswith("/api/") and headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
                await error(401, "UNAUTHENTICATED", "Invalid access token.")(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def host_metadata(self, request: Request) -> JSONResponse:
        return JSONResponse({"workspace_id": WORKSPACE_ID})

    async def me(self, request: Request) -> JSONResponse:
        return JSONResponse({"id": "42", "userName": USER, "active": True})

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
        with self.state.lock:
            if name in self.state.apps:
                return error(409, "RESOURCE_ALREADY_EXISTS", f"An app with the same name {name} already exists.")
            app = {
                "name": name,
                "description": body.get("description", ""),
                "resources": body.get("resources", []),
                "url": f"https://{name}-{WORKSPACE_ID}.aws.databricksapps.com",
                "service_principal_client_id": str(uuid.uuid4()),
                "compute_status": {"state": "STARTING", "message": "App compute is starting."},
                "app_status": {"state": "UNAVAILABLE", "message": "App has not been deployed yet."},
                "_polls": 0,
            }
            self.state.apps[name] = app
            return JSONResponse(public(app))

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
            return JSONResponse(public(app))

    async def start_app(self, request: Request) -> JSONResponse:
        with self.state.lock:
            app = self.state.apps.get(request.path_params["name"])
            if app is None:
                return error(404, "RESOURCE_DOES_NOT_EXIST", "App does not exist.")
            app["compute_status"], app["_polls"] = {"state": "STARTING", "message": "App compute is starting."}, 0
            return JSONResponse(public(app))

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
            if any(d["_app"] == name and d["status"]["state"] in ("PENDING", "IN_PROGRESS") for d in self.state.deployments.values()):
                return error(400, "INVALID_PARAMETER_VALUE", f"App {name} has a deployment in progress.")
            folder = self.state.objects.get(source.rstrip("/"))
            if folder is None or folder.kind != "DIRECTORY":
                return error(404, "RESOURCE_DOES_NOT_EXIST", f"Source code path {source} does not exist.")
            deployment_id = uuid.uuid4().hex
            steps = SUCCESS_STEPS if name not in self.state.failing_apps else (*SUCCESS_STEPS[:3], ("FAILED", self.state.failing_apps[name]))
            deployment = {
                "deployment_id": deployment_id,
                "source_code_path": source,
                "mode": body.get("mode"),
                "deployment_artifacts": {"source_code_path": f"/Workspace/Users/{app['service_principal_client_id']}/src/{deployment_id}"},
                "status": {"state": steps[0][0], "message": steps[0][1]},
                "create_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "_app": name,
                "_steps": itertools.islice(steps, 1, None),
            }
            self.state.deployments[deployment_id] = deployment
            self.state.snapshots[deployment_id] = {p: o.content for p, o in self.state.files_under(source).items()}
            app["pending_deployment"] = public(deployment)
            return JSONResponse(public(deployment))

    async def get_deployment(self, request: Request) -> JSONResponse:
        name, deployment_id = request.path_params["name"], request.path_params["deployment_id"]
        with self.state.lock:
            deployment = self.state.deployments.get(deployment_id)
            if deployment is None or deployment["_app"] != name:
                return error(404, "RESOURCE_DOES_NOT_EXIST", f"Deployment {deployment_id} does not exist.")
            state, message = next(deployment["_steps"], (deployment["status"]["state"], deployment["status"]["message"]))
            deployment["status"] = {"state": state, "message": message}
            app = self.state.apps[name]
            if state in ("SUCCEEDED", "FAILED"):
                app.pop("pending_deployment", None)
            if state == "SUCCEEDED":
                app["active_deployment"] = public(deployment)
                app["app_status"] = {"state": "RUNNING", "message": "App is running."}
            return JSONResponse(public(deployment))


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
        super().__init__(StandinWorkspace(self.state), name="standin-apps", log_level="warning")
