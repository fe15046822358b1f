"""The stand-in workspace's file tree: folders, and the experiments that live in them.

A workspace names every MLflow experiment by a path in this tree (`/Users/<user>/churn`,
`/Shared/team/churn`), so creating one needs its parent folder (tracking_rules.py). Served as
databricks-sdk 0.156 calls it (`w.workspace.mkdirs`, `get_status`, `list`, `delete`):

| path | answers |
|---|---|
| `POST /api/2.0/workspace/mkdirs` `{"path"}` | `{}`; parents made too; an existing folder is fine |
| `GET /api/2.0/workspace/get-status?path=` | `ObjectInfo`: `path`, `object_type`, `object_id`, `created_at`, `modified_at` |
| `GET /api/2.0/workspace/list?path=` | `{"objects": [ObjectInfo…]}` (none: `{}`), a folder's children |
| `POST /api/2.0/workspace/delete` `{"path", "recursive"}` | `{}`; a folder with something in it only with `recursive` |

The tree starts with `/`, `/Shared`, `/Users` and a home folder `/Users/<name>` per user given.

Permissions (grants.py, securable type "folder", once a test enforces them), following the
Databricks docs' folder ACL table ("Create, import, and delete items" and "Move and rename items":
CAN MANAGE; list and view: CAN READ) and its special folders (all users have CAN MANAGE in
`/Shared`; a user has CAN MANAGE on their home folder; only admins create in `/`). `/Users` itself
is protected: nobody makes a folder there ("Folder Users is protected", as reported). The level
that creates an experiment, CAN MANAGE, is read off the docs' table in renderings that lose empty
cells: a workspace may accept CAN EDIT. Error texts: `Path (…) doesn't exist.` and `Folder Users is
protected` are as users report them; the others are unverified.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.standin.errors import ApiError, invalid
from tests.standin.grants import Grants, canonical

WORKSPACE_API = "/api/2.0/workspace/"
DIRECTORY = "DIRECTORY"
EXPERIMENT = "MLFLOW_EXPERIMENT"  # what the workspace lists an experiment as (not in databricks-sdk 0.156's enum)
USERS = "/Users"
SHARED = "/Shared"
# The folder level that lets a principal create, delete, move and rename items in a folder.
CREATE_LEVEL = "CAN_MANAGE"
READ_LEVEL = "CAN_READ"


@dataclass
class WorkspaceObject:
    path: str
    object_type: str
    object_id: int
    created_at: int  # ms

    def info(self) -> dict:
        return {"path": self.path, "object_type": self.object_type, "object_id": self.object_id, "created_at": self.created_at, "modified_at": self.created_at}


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def workspace_path(raw: object, what: str = "path") -> str:
    """An absolute workspace path, as the tree keys it; 400 for anything else."""
    if not isinstance(raw, str) or not raw.startswith("/"):
        raise invalid(f"Invalid {what}: '{raw}'. A workspace path must be absolute (start with /).")
    if any(part in (".", "..") for part in raw.split("/")):
        raise invalid(f"Invalid {what}: '{raw}'.")
    return canonical("folder", raw)


class WorkspaceFolders:
    """The tree, and the folder rules of a workspace (see the module docstring)."""

    def __init__(self, grants: Grants, users: tuple[str, ...] = ()):
        self.grants = grants
        self._ids = itertools.count(1000000000000001)
        self.objects: dict[str, WorkspaceObject] = {}
        for path in ("/", SHARED, USERS):
            self._add(path, DIRECTORY)
        for user in users:
            self.add_home(user)

    # -- what tests and the tracking rules use ----------------------------------------------

    def add_home(self, user: str) -> str:
        """A user's home folder, `/Users/<user>`, which the user manages (as the workspace makes it)."""
        home = f"{USERS}/{user}"
        if home not in self.objects:
            self._add(home, DIRECTORY)
        self.grants.set_owner(user, "folder", home)
        return home

    def get(self, path: str) -> WorkspaceObject | None:
        return self.objects.get(canonical("folder", path))

    def is_folder(self, path: str) -> bool:
        found = self.get(path)
        return found is not None and found.object_type == DIRECTORY

    def may(self, principal: str, level: str, path: str) -> bool:
        """Whether `principal` holds `level` on the folder at `path`, by grant, ownership or inheritance
        (everyone manages what is in /Shared, by the workspace's defaults)."""
        path = canonical("folder", path)
        if level in ("CAN_READ", "CAN_RUN", "CAN_EDIT", "CAN_MANAGE") and (path == SHARED or path.startswith(SHARED + "/")):
            return True
        return self.grants.has(principal, level, "folder", path)

    def require(self, principal: str, level: str, path: str) -> None:
        if not self.may(principal, level, path):
            self.grants.require(principal, level, "folder", path)  # raises the workspace's 403

    def require_create_in(self, principal: str, folder: str) -> None:
        """What creating an item (a folder, an experiment) in `folder` asks of its caller."""
        if canonical("folder", folder) == USERS:
            raise ApiError(403, "DIRECTORY_PROTECTED", "Folder Users is protected")
        self.require(principal, CREATE_LEVEL, folder)

    def mkdirs(self, path: str, principal: str) -> None:
        """Make `path` and its missing parents; the caller needs CAN MANAGE where the first one goes."""
        path = workspace_path(path)
        missing = []
        probe = path
        while probe not in self.objects:
            missing.append(probe)
            probe = parent_of(probe)
        existing = self.objects[probe]
        if existing.object_type != DIRECTORY:
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Path ({probe}) already exists and is not a directory.")
        if not missing:
            return
        self.require_create_in(principal, probe)
        for folder in reversed(missing):
            self._add(folder, DIRECTORY)
            self.grants.set_owner(principal, "folder", folder)  # its creator manages a folder it made

    def add_experiment(self, path: str, experiment_id: str) -> None:
        self.objects[canonical("folder", path)] = WorkspaceObject(canonical("folder", path), EXPERIMENT, int(experiment_id) if experiment_id.isdigit() else next(self._ids), now_ms())

    def move(self, old: str, new: str) -> None:
        if found := self.objects.pop(canonical("folder", old), None):
            found.path = canonical("folder", new)
            self.objects[found.path] = found

    def children(self, path: str) -> list[WorkspaceObject]:
        prefix = "/" if path == "/" else path + "/"
        return sorted((o for p, o in self.objects.items() if p != "/" and p.startswith(prefix) and "/" not in p[len(prefix) :]), key=lambda o: o.path)

    def _add(self, path: str, object_type: str) -> WorkspaceObject:
        found = WorkspaceObject(path, object_type, next(self._ids), now_ms())
        self.objects[path] = found
        return found

    # -- the Workspace API -------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route(WORKSPACE_API + "mkdirs", self.mkdirs_endpoint, methods=["POST"]),
            Route(WORKSPACE_API + "get-status", self.get_status_endpoint, methods=["GET"]),
            Route(WORKSPACE_API + "list", self.list_endpoint, methods=["GET"]),
            Route(WORKSPACE_API + "delete", self.delete_endpoint, methods=["POST"]),
        ]

    async def mkdirs_endpoint(self, request: Request) -> Response:
        body = await json_body(request)
        self.mkdirs(body.get("path"), principal_of(request))
        return JSONResponse({})

    async def get_status_endpoint(self, request: Request) -> Response:
        found = self._existing(request.query_params.get("path"))
        self.require(principal_of(request), READ_LEVEL, found.path if found.object_type == DIRECTORY else parent_of(found.path))
        return JSONResponse(found.info())

    async def list_endpoint(self, request: Request) -> Response:
        found = self._existing(request.query_params.get("path"))
        if found.object_type != DIRECTORY:
            return JSONResponse({"objects": [found.info()]})
        self.require(principal_of(request), READ_LEVEL, found.path)
        objects = [o.info() for o in self.children(found.path)]
        return JSONResponse({"objects": objects} if objects else {})

    async def delete_endpoint(self, request: Request) -> Response:
        body = await json_body(request)
        found = self._existing(body.get("path"))
        if found.path in ("/", SHARED, USERS) or parent_of(found.path) == USERS:
            raise ApiError(403, "DIRECTORY_PROTECTED", f"Folder {found.path.rsplit('/', 1)[-1] or '/'} is protected")
        self.require(principal_of(request), CREATE_LEVEL, parent_of(found.path))
        inside = [p for p in self.objects if p.startswith(found.path + "/")]
        if inside and not body.get("recursive"):
            raise ApiError(400, "DIRECTORY_NOT_EMPTY", f"Folder ({found.path}) is not empty")
        for path in [found.path, *inside]:
            del self.objects[path]
        return JSONResponse({})

    def _existing(self, raw: object) -> WorkspaceObject:
        path = workspace_path(raw)
        found = self.objects.get(path)
        if found is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Path ({path}) doesn't exist.")
        return found


def principal_of(request: Request) -> str:
    return getattr(request.state, "principal", "unknown")


async def json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiError(400, "MALFORMED_REQUEST", "Request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "MALFORMED_REQUEST", "Request body must be a JSON object.")
    return body


def now_ms() -> int:
    return int(time.time() * 1000)
