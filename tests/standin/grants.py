"""Who may do what in the stand-in workspace: per-principal privileges on Unity Catalog securables
(catalogs, schemas, volumes, registered models) and permission levels on workspace folders.

A new stand-in is open: every principal holds every privilege, so tests that are not about
permissions see a workspace where the app was granted what it needs. `enforce()` turns the checks on;
from then on a principal holds only what a test granted (`grant`), what it owns (the creator of a
registered model or a folder owns it, as in Unity Catalog and the workspace), and what it inherits.

Inheritance follows Unity Catalog: a privilege granted on a catalog applies to its schemas and their
objects, one on a schema to its objects, and `ALL PRIVILEGES` stands for every privilege. A folder's
permission level applies to everything below it, and a higher level includes the lower ones.

Refusals use the workspace's wording as reported by users ("User does not have USE SCHEMA on Schema
'main.default'.", 403 `PERMISSION_DENIED`); the exact text for folders and for a model that the
caller does not own is unverified.

What the workspace's rules ask of each call lives with the call (unity_catalog.py, files_api.py);
here are the checks they share (`require_use`, `require_owner`, `may_read_model`) and the
effective-permissions API (`routes`), which databricks-sdk's `w.grants.get_effective` calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.standin.errors import ApiError, invalid

EFFECTIVE_PERMISSIONS = "/api/2.1/unity-catalog/effective-permissions/"

ALL_PRIVILEGES = "ALL PRIVILEGES"
# What each Unity Catalog securable is called in a refusal.
SECURABLE_TITLES = {"catalog": "Catalog", "schema": "Schema", "volume": "Volume", "function": "Function", "registered_model": "Function"}
# Workspace folder permission levels, lowest first: each includes those before it.
FOLDER_LEVELS = ("CAN_READ", "CAN_RUN", "CAN_EDIT", "CAN_MANAGE")


def ancestors(securable_type: str, full_name: str) -> list[tuple[str, str]]:
    """The securable and every securable it inherits from, nearest first."""
    if securable_type == "folder":
        parts = [p for p in full_name.split("/") if p]
        return [("folder", "/" + "/".join(parts[:n])) for n in range(len(parts), 0, -1)] + [("folder", "/")]
    parts = full_name.split(".")
    chain = [(securable_type, full_name)]
    if len(parts) >= 3:
        chain.append(("schema", ".".join(parts[:2])))
    if len(parts) >= 2:
        chain.append(("catalog", parts[0]))
    return chain


@dataclass
class Grants:
    enforced: bool = False
    _held: set[tuple[str, str, str, str]] = field(default_factory=set)  # (principal, privilege, type, name)
    _owners: dict[tuple[str, str], str] = field(default_factory=dict)

    def enforce(self, enforced: bool = True) -> Grants:
        self.enforced = enforced
        return self

    @contextmanager
    def restored_after(self) -> Iterator[Grants]:
        """Whatever a test grants, revokes or enforces inside is undone after: for a stand-in that
        a whole session shares (tests/e2e/conftest.py)."""
        saved = (self.enforced, set(self._held), dict(self._owners))
        try:
            yield self
        finally:
            self.enforced, self._held, self._owners = saved[0], saved[1], saved[2]

    def grant(self, principal: str, privilege: str, securable_type: str, full_name: str) -> Grants:
        self._held.add((principal, privilege.upper().replace("_", " ") if securable_type != "folder" else privilege.upper(), securable_type, canonical(securable_type, full_name)))
        return self

    def revoke(self, principal: str, privilege: str, securable_type: str, full_name: str) -> Grants:
        self._held.discard((principal, privilege.upper().replace("_", " ") if securable_type != "folder" else privilege.upper(), securable_type, canonical(securable_type, full_name)))
        return self

    def set_owner(self, principal: str, securable_type: str, full_name: str) -> None:
        self._owners[(securable_type, canonical(securable_type, full_name))] = principal

    def owner(self, securable_type: str, full_name: str) -> str | None:
        return self._owners.get((securable_type, canonical(securable_type, full_name)))

    def has(self, principal: str, privilege: str, securable_type: str, full_name: str) -> bool:
        if not self.enforced:
            return True
        wanted = privilege.upper() if securable_type == "folder" else privilege.upper().replace("_", " ")
        for kind, name in ancestors(securable_type, canonical(securable_type, full_name)):
            if self._owners.get((kind, name)) == principal:
                return True
            for held_principal, held, held_kind, held_name in self._held:
                if held_principal != principal or held_kind != kind or held_name != name:
                    continue
                if held == wanted or held == ALL_PRIVILEGES:
                    return True
                if kind == "folder" and held in FOLDER_LEVELS and wanted in FOLDER_LEVELS and FOLDER_LEVELS.index(held) >= FOLDER_LEVELS.index(wanted):
                    return True
        return False

    def effective(self, principal: str, securable_type: str, full_name: str) -> list[dict]:
        """What the effective-permissions API lists: each privilege held, and where it comes from."""
        if not self.enforced:  # an open stand-in: as if granted everything on the metastore
            return [{"privilege": ALL_PRIVILEGES, "inherited_from_type": "METASTORE", "inherited_from_name": "standin-metastore"}]
        found = []
        for kind, name in ancestors(securable_type, canonical(securable_type, full_name)):
            if self._owners.get((kind, name)) == principal:
                found.append({"privilege": ALL_PRIVILEGES, "inherited_from_type": kind.upper(), "inherited_from_name": name})
            for held_principal, held, held_kind, held_name in sorted(self._held):
                if held_principal == principal and held_kind == kind and held_name == name:
                    found.append({"privilege": held, "inherited_from_type": kind.upper(), "inherited_from_name": name})
        return found

    def require(self, principal: str, privilege: str, securable_type: str, full_name: str) -> None:
        """Raise the workspace's 403 unless `principal` holds `privilege` on the securable."""
        if self.has(principal, privilege, securable_type, full_name):
            return
        name = canonical(securable_type, full_name)
        if securable_type == "folder":
            raise ApiError(403, "PERMISSION_DENIED", f"User {principal} does not have {privilege.upper()} permission on directory {name}.")
        title = SECURABLE_TITLES.get(securable_type, securable_type.title())
        raise ApiError(403, "PERMISSION_DENIED", f"User does not have {privilege.upper().replace('_', ' ')} on {title} '{name}'.")

    # -- what several calls ask for ---------------------------------------------------------

    def require_use(self, principal: str, full_name: str) -> None:
        """USE CATALOG on the catalog and USE SCHEMA on the schema of a three-level name, in that order."""
        catalog, schema = full_name.split(".")[:2]
        self.require(principal, "USE CATALOG", "catalog", catalog)
        self.require(principal, "USE SCHEMA", "schema", f"{catalog}.{schema}")

    def owns(self, principal: str, securable_type: str, full_name: str) -> bool:
        """Whether `principal` owns the securable or one it belongs to (an owner manages what is inside)."""
        if not self.enforced:
            return True
        return any(self._owners.get(key) == principal for key in ancestors(securable_type, canonical(securable_type, full_name)))

    def require_owner(self, principal: str, securable_type: str, full_name: str) -> None:
        """Raise 403 unless `principal` owns the securable: changing a model, its versions, aliases and tags."""
        if not self.owns(principal, securable_type, full_name):
            title = SECURABLE_TITLES.get(securable_type, securable_type.title())
            raise ApiError(403, "PERMISSION_DENIED", f"User is not an owner of {title} '{canonical(securable_type, full_name)}'.")

    def may_read_model(self, principal: str, full_name: str) -> bool:
        """USE CATALOG, USE SCHEMA and EXECUTE (or ownership): what seeing or loading a model takes."""
        catalog, schema = full_name.split(".")[:2]
        return (
            self.has(principal, "USE CATALOG", "catalog", catalog)
            and self.has(principal, "USE SCHEMA", "schema", f"{catalog}.{schema}")
            and (self.owns(principal, "registered_model", full_name) or self.has(principal, "EXECUTE", "registered_model", full_name))
        )

    def require_model_read(self, principal: str, full_name: str) -> None:
        self.require_use(principal, full_name)
        if not self.owns(principal, "registered_model", full_name):
            self.require(principal, "EXECUTE", "registered_model", full_name)

    def require_model_write(self, principal: str, full_name: str) -> None:
        self.require_use(principal, full_name)
        self.require_owner(principal, "registered_model", full_name)

    # -- the effective-permissions API -------------------------------------------------------

    def routes(self) -> list[Route]:
        return [Route(EFFECTIVE_PERMISSIONS + "{securable_type}/{full_name:path}", self.get_effective, methods=["GET"])]

    async def get_effective(self, request: Request) -> Response:
        """`GET /api/2.1/unity-catalog/effective-permissions/{type}/{name}[?principal=…]`, as
        `w.grants.get_effective` reads it: privileges with underscores, and where each comes from.

        Anyone may ask about themselves; about another principal only its owner (a workspace also
        lets metastore admins and MANAGE holders ask: not modelled)."""
        securable_type = request.path_params["securable_type"].lower()
        full_name = request.path_params["full_name"]
        if securable_type in ("function", "model"):  # what the API calls a registered model
            securable_type = "registered_model"
        if securable_type not in ("catalog", "schema", "volume", "registered_model"):
            raise invalid(f"Unsupported securable type '{securable_type}'.")
        if len(full_name.split(".")) != {"catalog": 1, "schema": 2}.get(securable_type, 3):
            raise invalid(f"Invalid full name '{full_name}' for a {securable_type}.")
        caller = getattr(request.state, "principal", "")
        asked = request.query_params.get("principal") or caller
        if asked != caller and self.enforced and not self.owns(caller, securable_type, full_name):
            raise ApiError(403, "PERMISSION_DENIED", f"User does not have MANAGE on {SECURABLE_TITLES.get(securable_type, 'Securable')} '{canonical(securable_type, full_name)}'.")
        privileges = []
        for held in self.effective(asked, securable_type, full_name):
            entry = {"privilege": held["privilege"].replace(" ", "_")}
            if (held["inherited_from_type"].lower(), held["inherited_from_name"]) != (securable_type, canonical(securable_type, full_name)):
                entry["inherited_from_type"] = held["inherited_from_type"].replace("REGISTERED_MODEL", "FUNCTION")
                entry["inherited_from_name"] = held["inherited_from_name"]
            privileges.append(entry)
        return JSONResponse({"privilege_assignments": [{"principal": asked, "privileges": privileges}] if privileges else []})


def canonical(securable_type: str, full_name: str) -> str:
    """Unity Catalog names are stored lowercased; folders are absolute paths without a trailing slash."""
    if securable_type == "folder":
        return "/" + "/".join(p for p in full_name.split("/") if p)
    return full_name.lower()
