"""What a workspace's MLflow tracking service refuses that an open-source `mlflow server` accepts.

The stand-in forwards MLflow's tracking API to a real `mlflow server` (workspace.py); these checks
run first, so a client meets the workspace's rules:

- **Experiment names are absolute workspace paths.** Creating or renaming to a relative name is
  400 `INVALID_PARAMETER_VALUE` "Got an invalid experiment name '<name>'. An experiment name must be
  an absolute path within the Databricks workspace, …" (the first part as users report it; the rest
  of the sentence is unverified). Looking one up by a relative name finds nothing (404
  `RESOURCE_DOES_NOT_EXIST`, which MLflow's client turns into None), as reported; so the backing
  MLflow's `Default` is not found by name either.
- **The parent folder must exist** (404 `RESOURCE_DOES_NOT_EXIST` "Parent directory <folder> does not
  exist.", as reported) and be a folder, **and the caller must be allowed to create in it**
  (workspace_folders.py: CAN MANAGE, 403 `PERMISSION_DENIED` once grants are enforced; `/Users`
  itself is protected). A name that is already a folder is 400 `RESOURCE_ALREADY_EXISTS` "Node named
  '<name>' already exists" (as reported).
- **There is no experiment `0`** outside a notebook: a call naming it is 404
  `RESOURCE_DOES_NOT_EXIST` (creating a run in it: 400 `INVALID_PARAMETER_VALUE` "Experiment with id
  '0' does not exist.", as reported); searches drop it from their `experiment_ids`, and
  experiment search does not list the backing MLflow's `Default`. The texts are unverified.

Experiments created or renamed here are entered in the folder tree, so `w.workspace.list` shows them
and a folder cannot be made where one is.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.standin.errors import ApiError, databricks_error, invalid, not_found
from tests.standin.workspace_folders import DIRECTORY, WorkspaceFolders, parent_of, principal_of

# What the open-source server calls the experiment every store starts with; a workspace has none.
BACKING_DEFAULT_EXPERIMENT_ID = "0"
# Operations whose body lists experiments to search in.
SEARCHES = ("runs/search", "logged-models/search", "traces/search", "datasets/search")


def relative_name_refusal(name: str) -> ApiError:
    return invalid(
        f"Got an invalid experiment name '{name}'. An experiment name must be an absolute path within the Databricks workspace, e.g. /Users/<user>/my-experiment or /Shared/my-experiment."
    )


class TrackingRules:
    """Routes for MLflow's tracking API (one per prefix): the rules above, then the backing MLflow."""

    def __init__(self, folders: WorkspaceFolders, forward: Callable[[], httpx.AsyncClient | None], prefixes: tuple[str, ...]):
        self.folders = folders
        self._forward = forward  # the client to the backing MLflow, once the stand-in runs (None without one)
        self.prefixes = prefixes

    def routes(self) -> list[Route]:
        methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
        return [Route(prefix + "{operation:path}", self.dispatch, methods=methods) for prefix in self.prefixes]

    async def dispatch(self, request: Request) -> Response:
        client = self._forward()
        if client is None:
            return databricks_error(501, "NOT_IMPLEMENTED", "This stand-in runs without MLflow.")
        operation = request.path_params["operation"]
        principal = principal_of(request)
        raw = await request.body()
        body = parse_body(raw) if request.method != "GET" and raw else None
        self.check_experiment_zero(operation, request, body)
        if body is not None and operation in SEARCHES and isinstance(body.get("experiment_ids"), list):
            body["experiment_ids"] = [i for i in body["experiment_ids"] if str(i) != BACKING_DEFAULT_EXPERIMENT_ID]
            raw = json.dumps(body).encode()
        renamed_from = None
        if operation == "experiments/create" and body is not None:
            self.check_new_name(body.get("name"), principal)
        elif operation == "experiments/update" and body is not None and body.get("new_name") is not None:
            self.check_new_name(body.get("new_name"), principal)
            renamed_from = await self.experiment_name(client, str(body.get("experiment_id")))
        elif operation == "experiments/get-by-name":
            name = request.query_params.get("experiment_name", "")
            if not name.startswith("/"):
                raise not_found(f"Could not find experiment with name '{name}'")
        upstream = await client.request(
            request.method,
            request.url.path,
            params=request.query_params.multi_items(),
            content=raw,
            headers={"Content-Type": request.headers.get("content-type", "application/json")},
        )
        content = upstream.content
        if upstream.status_code == 200:
            content = self.after(operation, body, content, renamed_from)
        return Response(content, status_code=upstream.status_code, media_type=upstream.headers.get("content-type"))

    # -- the rules ---------------------------------------------------------------------------

    def check_new_name(self, name: object, principal: str) -> None:
        """An experiment may be created (or renamed) to `name` by `principal`: an absolute path, in an
        existing folder the principal may create in, where nothing else is."""
        if not isinstance(name, str) or not name.startswith("/"):
            raise relative_name_refusal(str(name))
        parent = parent_of(name.rstrip("/") or "/")
        if self.folders.get(parent) is None:
            raise not_found(f"Parent directory {parent} does not exist.")
        if not self.folders.is_folder(parent):
            raise invalid(f"Parent path {parent} is not a directory.")
        existing = self.folders.get(name)
        if existing is not None and existing.object_type == DIRECTORY:
            # 400, as MLflow maps RESOURCE_ALREADY_EXISTS (and as its client expects of a duplicate name)
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Node named '{name.rstrip('/').rsplit('/', 1)[-1]}' already exists")
        self.folders.require_create_in(principal, parent)

    @staticmethod
    def check_experiment_zero(operation: str, request: Request, body: dict | None) -> None:
        named = request.query_params.get("experiment_id") or (body or {}).get("experiment_id")
        if str(named) != BACKING_DEFAULT_EXPERIMENT_ID:
            return
        if operation == "runs/create":
            raise invalid(f"Experiment with id '{BACKING_DEFAULT_EXPERIMENT_ID}' does not exist.")
        raise not_found(f"Node ID {BACKING_DEFAULT_EXPERIMENT_ID} does not exist.")

    def after(self, operation: str, body: dict | None, content: bytes, renamed_from: str | None) -> bytes:
        """What a successful answer changes in the tree, and what of it the workspace would not show."""
        if operation == "experiments/create" and body is not None:
            self.folders.add_experiment(body["name"], str(json.loads(content).get("experiment_id", "")))
        elif operation == "experiments/update" and renamed_from and body is not None:
            self.folders.move(renamed_from, body["new_name"])
        elif operation == "experiments/search":
            answer = json.loads(content)
            answer["experiments"] = [e for e in answer.get("experiments", []) if e.get("experiment_id") != BACKING_DEFAULT_EXPERIMENT_ID]
            if not answer["experiments"]:
                del answer["experiments"]
            content = json.dumps(answer).encode()
        return content

    @staticmethod
    async def experiment_name(client: httpx.AsyncClient, experiment_id: str) -> str | None:
        found = await client.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id})
        return found.json().get("experiment", {}).get("name") if found.status_code == 200 else None


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "MALFORMED_REQUEST", "Request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "MALFORMED_REQUEST", "Request body must be a JSON object.")
    return body
