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
'main.default'.", 403 `PERMISSION_DENIED`); the exact text for folders is unverified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.standin.errors import ApiError

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


def canonical(securable_type: str, full_name: str) -> str:
    """Unity Catalog names are stored lowercased; folders are absolute paths without a trailing slash."""
    if securable_type == "folder":
        return "/" + "/".join(p for p in full_name.split("/") if p)
    return full_name.lower()
