"""The stand-in workspace's Unity Catalog model registry: what MLflow's `databricks-uc` store calls.

`UcModelRegistryStore` (mlflow/store/_unity_catalog/registry/rest_store.py) speaks the
`UcModelRegistryService` protos as JSON under `/api/2.0/mlflow/unity-catalog/…`: GET requests carry
their fields as query parameters, the others as a JSON body. State is in memory; a model version's
files live in a directory of its own under `storage_root`, reached through the Files API as
`/Models/<catalog>/<schema>/<model>/<version>/…` (see files_api.py), as a workspace that answers
`is-databricks-sdk-models-artifact-repository-enabled` with true serves them. A test may set that
answer to false (`sdk_models_artifact_repository`) and choose the storage `generate-temporary-credentials`
describes (`storage`, `catalog_storage`: default storage through presigned URLs, or a customer's S3,
Azure or GCS; cloud_storage.py, with `model_files_branch` to restore the shared stand-in).

What it holds to, as Unity Catalog does (or as MLflow's store expects it to): three-level names,
lowercased; version numbers per model from 1; a version is PENDING_REGISTRATION from `create` until
`finalize` makes it READY, and only a pending version's files may be written; aliases move between
versions and are listed on models and versions; search is paginated with opaque tokens.

Grants (grants.py, once a test enforces them): creating a model takes USE CATALOG, USE SCHEMA and
CREATE MODEL on its schema, and its creator owns it; reading a model or its versions (get, alias,
download URI, lineage, read credentials) takes USE CATALOG, USE SCHEMA and EXECUTE or ownership;
changing it (update, delete, aliases, tags, versions) takes ownership; search lists only the models
the caller may read. `authorize` says which operation asks for what.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.standin.cloud_storage import DefaultStorage, ModelStorage
from tests.standin.errors import ApiError, already_exists, invalid, not_found
from tests.standin.grants import Grants

UC_PREFIX = "/api/2.0/mlflow/unity-catalog/"
METASTORE_ID = "5f1c2b7e-standin-metastore"
PENDING = "PENDING_REGISTRATION"
READY = "READY"
PAGE_LIMIT = 1000  # larger max_results are cut to this, so a caller pages on
DEFAULT_PAGE_SIZE = 100
# One name part: no dots (they separate levels), slashes (names become Files API paths), spaces
# or control characters.
NAME_PART = re.compile(r"^[^./\s\x00-\x1f]+$")
# What each operation asks of the caller's grants (authorize); anything else asks nothing.
READ_OPERATIONS = frozenset(
    {
        ("registered-models/get", "GET"),
        ("registered-models/alias", "GET"),
        ("model-versions/get", "GET"),
        ("model-versions/get-download-uri", "GET"),
        ("model-versions/emit-lineage", "POST"),
    }
)
OWNER_OPERATIONS = frozenset(
    {
        ("registered-models/update", "PATCH"),
        ("registered-models/delete", "DELETE"),
        ("registered-models/alias", "POST"),
        ("registered-models/alias", "DELETE"),
        ("registered-models/set-tag", "POST"),
        ("registered-models/delete-tag", "DELETE"),
        ("model-versions/create", "POST"),
        ("model-versions/finalize", "POST"),
        ("model-versions/update", "PATCH"),
        ("model-versions/delete", "DELETE"),
        ("model-versions/set-tag", "POST"),
        ("model-versions/delete-tag", "DELETE"),
    }
)
# The two filters UC's model version search takes (MLflow's docstring: one condition on name or run_id).
VERSION_FILTER = re.compile(r"^\s*(name|run_id)\s*=\s*'([^']*)'\s*$")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ModelVersionRecord:
    name: str
    version: int
    source: str
    run_id: str
    description: str
    user_id: str
    storage_dir: Path
    storage_location: str
    run_tracking_server_id: str = ""
    model_id: str = ""
    status: str = PENDING
    tags: dict[str, str] = field(default_factory=dict)
    created: int = field(default_factory=now_ms)
    updated: int = field(default_factory=now_ms)


@dataclass
class RegisteredModelRecord:
    model_id: str
    name: str
    description: str
    user_id: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    versions: dict[int, ModelVersionRecord] = field(default_factory=dict)
    last_version: int = 0
    created: int = field(default_factory=now_ms)
    updated: int = field(default_factory=now_ms)


def full_name(value: object) -> str:
    """`catalog.schema.model`, lowercased as Unity Catalog stores identifiers."""
    if not isinstance(value, str) or not value:
        raise invalid("Missing required parameter 'name'.")
    parts = value.split(".")
    if len(parts) != 3:
        # MLflow's store looks for "specify all three levels" to add its legacy-registry hint.
        raise invalid(f"Model name '{value}' must specify all three levels of the Unity Catalog namespace: catalog.schema.model.")
    if not all(NAME_PART.match(part) for part in parts):
        raise invalid(f"Invalid name '{value}': each level must be non-empty and contain no '.', '/', spaces or control characters.")
    return value.lower()


def version_number(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise invalid("Missing required parameter 'version'.")
    if not text.isdigit() or int(text) < 1:
        raise invalid(f"Invalid model version '{value}': it must be a positive integer.")
    return int(text)


def required(params: dict, key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise invalid(f"Missing required parameter '{key}'.")
    return value


def page_of(items: list, params: dict) -> tuple[list, str | None]:
    """One page and the token of the next, from `max_results` and `page_token`."""
    size = params.get("max_results", DEFAULT_PAGE_SIZE)
    try:
        size = int(size)
    except (TypeError, ValueError):
        raise invalid(f"Invalid max_results '{size}'.") from None
    if size < 1:
        raise invalid(f"max_results must be positive, got {size}.")
    size = min(size, PAGE_LIMIT)
    start = 0
    if token := params.get("page_token"):
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("offset:"))
        except ValueError:
            raise invalid(f"Invalid page_token '{token}'.") from None
    end = start + size
    next_token = base64.urlsafe_b64encode(f"offset:{end}".encode()).decode() if end < len(items) else None
    return items[start:end], next_token


class UnityCatalogRegistry:
    """Registered models and their versions, in memory; versions' files in `storage_root`."""

    def __init__(self, storage_root: Path, sdk_models_artifact_repository: bool = True, grants: Grants | None = None):
        self.storage_root = storage_root
        self.grants = grants or Grants()  # open unless the workspace's grants are enforced
        # What `is-databricks-sdk-models-artifact-repository-enabled` answers: true makes MLflow
        # move model files through the Files API (`/Models/…`), which the stand-in serves.
        self.sdk_models_artifact_repository = sdk_models_artifact_repository
        # When it answers false: where versions' files are kept and what `generate-temporary-credentials`
        # hands out for them, for the metastore or one catalog (cloud_storage.py).
        self.storage: ModelStorage = DefaultStorage()
        self.catalog_storage: dict[str, ModelStorage] = {}
        self.models: dict[str, RegisteredModelRecord] = {}
        self.lineage_events: list[dict] = []
        self._handlers = {
            ("registered-models/create", "POST"): self.create_registered_model,
            ("registered-models/get", "GET"): self.get_registered_model,
            ("registered-models/update", "PATCH"): self.update_registered_model,
            ("registered-models/delete", "DELETE"): self.delete_registered_model,
            ("registered-models/search", "GET"): self.search_registered_models,
            ("registered-models/alias", "POST"): self.set_alias,
            ("registered-models/alias", "DELETE"): self.delete_alias,
            ("registered-models/alias", "GET"): self.get_version_by_alias,
            ("registered-models/set-tag", "POST"): self.set_model_tag,
            ("registered-models/delete-tag", "DELETE"): self.delete_model_tag,
            ("registered-models:is-databricks-sdk-models-artifact-repository-enabled", "GET"): self.sdk_repository_enabled,
            ("model-versions/create", "POST"): self.create_model_version,
            ("model-versions/finalize", "POST"): self.finalize_model_version,
            ("model-versions/get", "GET"): self.get_model_version,
            ("model-versions/update", "PATCH"): self.update_model_version,
            ("model-versions/delete", "DELETE"): self.delete_model_version,
            ("model-versions/search", "GET"): self.search_model_versions,
            ("model-versions/set-tag", "POST"): self.set_version_tag,
            ("model-versions/delete-tag", "DELETE"): self.delete_version_tag,
            ("model-versions/get-download-uri", "GET"): self.get_download_uri,
            ("model-versions/generate-temporary-credentials", "POST"): self.temporary_credentials,
            ("model-versions/emit-lineage", "POST"): self.emit_lineage,
        }

    # -- for tests -------------------------------------------------------------------------

    def model_versions(self, name: str | None = None) -> list[ModelVersionRecord]:
        """Every version (of one model, if named), oldest first: what landed."""
        models = [self.models[name.lower()]] if name else list(self.models.values())
        return [v for m in models for v in m.versions.values()]

    # -- HTTP ------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [Route(UC_PREFIX + "{operation:path}", self.dispatch, methods=["GET", "POST", "PATCH", "DELETE"])]

    async def dispatch(self, request: Request) -> Response:
        operation = request.path_params["operation"]
        handler = self._handlers.get((operation, request.method))
        if handler is None:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{request.method} {request.url.path}'")
        params = dict(request.query_params)
        if request.method != "GET" and (body := await request.body()):
            try:
                json_body = json.loads(body)
            except ValueError:
                raise ApiError(400, "MALFORMED_REQUEST", "Request body is not valid JSON.") from None
            if not isinstance(json_body, dict):
                raise ApiError(400, "MALFORMED_REQUEST", "Request body must be a JSON object.")
            params.update(json_body)
        principal = getattr(request.state, "principal", "unknown")
        self.authorize(operation, request.method, params, principal)
        return JSONResponse(handler(params, principal))

    # -- registered models -----------------------------------------------------------------

    def create_registered_model(self, params: dict, principal: str) -> dict:
        name = full_name(params.get("name"))
        if name in self.models:
            raise already_exists(f"Registered model '{name}' already exists.")
        model = RegisteredModelRecord(uuid.uuid4().hex, name, params.get("description") or "", principal)
        model.tags = tag_map(params.get("tags"))
        self.models[name] = model
        self.grants.set_owner(principal, "registered_model", name)  # the creator owns it, as in Unity Catalog
        return {"registered_model": self.model_json(model)}

    def get_registered_model(self, params: dict, principal: str) -> dict:
        return {"registered_model": self.model_json(self.model(params))}

    def update_registered_model(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        if new_name := params.get("new_name"):
            self.rename(model, new_name)
        if "description" in params:
            model.description = params["description"] or ""
        model.updated = now_ms()
        return {"registered_model": self.model_json(model)}

    def rename(self, model: RegisteredModelRecord, new_name: str) -> None:
        # UC renames within the schema; a bare model name means the same catalog and schema.
        catalog_schema = model.name.rsplit(".", 1)[0]
        target = full_name(new_name if "." in new_name else f"{catalog_schema}.{new_name}")
        if target.rsplit(".", 1)[0] != catalog_schema:
            raise invalid(f"Cannot move registered model '{model.name}' to another catalog or schema ('{target}').")
        if target in self.models:
            raise already_exists(f"Registered model '{target}' already exists.")
        del self.models[model.name]
        if owner := self.grants.owner("registered_model", model.name):
            self.grants.set_owner(owner, "registered_model", target)
        model.name = target
        for version in model.versions.values():
            version.name = target
        self.models[target] = model

    def delete_registered_model(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        del self.models[model.name]
        for version in model.versions.values():
            shutil.rmtree(version.storage_dir, ignore_errors=True)
        return {}

    def search_registered_models(self, params: dict, principal: str) -> dict:
        # MLflow's store refuses a filter or order_by before calling; none are taken here either.
        for unsupported in ("filter", "order_by"):
            if params.get(unsupported):
                raise invalid(f"Parameter '{unsupported}' is not supported for registered models in Unity Catalog.")
        models = sorted((m for m in self.models.values() if self.grants.may_read_model(principal, m.name)), key=lambda m: m.name)
        page, token = page_of(models, params)
        return {"registered_models": [self.model_json(m) for m in page], **({"next_page_token": token} if token else {})}

    def set_alias(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        alias = required(params, "alias")
        version = self.version(model, params)
        model.aliases[alias] = version.version
        model.updated = now_ms()
        return {}

    def delete_alias(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        alias = required(params, "alias")
        if model.aliases.pop(alias, None) is None:
            raise not_found(f"Alias '{alias}' does not exist on registered model '{model.name}'.")
        model.updated = now_ms()
        return {}

    def get_version_by_alias(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        alias = required(params, "alias")
        if alias not in model.aliases:
            raise not_found(f"Alias '{alias}' does not exist on registered model '{model.name}'.")
        return {"model_version": self.version_json(model, model.versions[model.aliases[alias]])}

    def set_model_tag(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        model.tags[required(params, "key")] = params.get("value") or ""
        model.updated = now_ms()
        return {}

    def delete_model_tag(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        key = required(params, "key")
        if model.tags.pop(key, None) is None:
            raise not_found(f"Tag '{key}' does not exist on registered model '{model.name}'.")
        return {}

    def sdk_repository_enabled(self, params: dict, principal: str) -> dict:
        return {"is_databricks_sdk_models_artifact_repository_enabled": self.sdk_models_artifact_repository}

    # -- model versions --------------------------------------------------------------------

    def create_model_version(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        source = required(params, "source")
        model.last_version += 1
        number = model.last_version
        storage_id = uuid.uuid4().hex
        version = ModelVersionRecord(
            name=model.name,
            version=number,
            source=source,
            run_id=params.get("run_id") or "",
            description=params.get("description") or "",
            user_id=principal,
            storage_dir=self.storage_root / model.model_id / storage_id,
            storage_location=self.storage_of(model.name).location(f"{METASTORE_ID}/models/{model.model_id}/versions/{storage_id}"),
            run_tracking_server_id=params.get("run_tracking_server_id") or "",
            model_id=params.get("model_id") or "",
            tags=tag_map(params.get("tags")),
        )
        version.storage_dir.mkdir(parents=True)
        model.versions[number] = version
        return {"model_version": self.version_json(model, version)}

    def finalize_model_version(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        version = self.version(model, params)
        if version.status != PENDING:
            raise invalid(f"Model version {version.version} of '{model.name}' is {version.status}, not {PENDING}.")
        version.status = READY
        version.updated = now_ms()
        return {"model_version": self.version_json(model, version)}

    def get_model_version(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        return {"model_version": self.version_json(model, self.version(model, params))}

    def update_model_version(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        version = self.version(model, params)
        if "description" in params:
            version.description = params["description"] or ""
        version.updated = now_ms()
        return {"model_version": self.version_json(model, version)}

    def delete_model_version(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        version = self.version(model, params)
        del model.versions[version.version]
        model.aliases = {a: v for a, v in model.aliases.items() if v != version.version}
        shutil.rmtree(version.storage_dir, ignore_errors=True)
        return {}

    def search_model_versions(self, params: dict, principal: str) -> dict:
        if params.get("order_by"):
            raise invalid("Parameter 'order_by' is not supported for model versions in Unity Catalog.")
        text = params.get("filter") or ""
        match = VERSION_FILTER.match(text)
        if not match:
            raise invalid(f"Unsupported filter '{text}': search model versions by exactly one of name='<catalog>.<schema>.<model>' or run_id='<run id>'.")
        key, value = match.groups()
        if key == "name":
            model = self.models.get(full_name(value))
            found = [(model, v) for v in model.versions.values()] if model else []
        else:
            found = [(m, v) for m in self.models.values() for v in m.versions.values() if v.run_id == value]
        found = [(m, v) for m, v in found if self.grants.may_read_model(principal, m.name)]
        found.sort(key=lambda mv: (mv[0].name, -mv[1].version))
        page, token = page_of(found, params)
        # Search results carry neither aliases nor tags (MLflow's conversion drops them too).
        versions = [self.version_json(m, v, with_aliases_and_tags=False) for m, v in page]
        return {"model_versions": versions, **({"next_page_token": token} if token else {})}

    def set_version_tag(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        version = self.version(model, params)
        version.tags[required(params, "key")] = params.get("value") or ""
        version.updated = now_ms()
        return {}

    def delete_version_tag(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        version = self.version(model, params)
        key = required(params, "key")
        if version.tags.pop(key, None) is None:
            raise not_found(f"Tag '{key}' does not exist on version {version.version} of '{model.name}'.")
        return {}

    def get_download_uri(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        return {"artifact_uri": self.version(model, params).storage_location}

    def temporary_credentials(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        version = self.version(model, params)
        operation = params.get("operation")
        if operation not in ("MODEL_VERSION_OPERATION_READ", "MODEL_VERSION_OPERATION_READ_WRITE"):
            raise invalid(f"Invalid operation '{operation}'.")
        if operation == "MODEL_VERSION_OPERATION_READ_WRITE" and version.status != PENDING:
            raise ApiError(403, "PERMISSION_DENIED", f"Model version {version.version} of '{model.name}' is {version.status}: its files can no longer be written.")
        # Default storage: no cloud keys, the files go through the workspace's presigned URLs;
        # customer-hosted: keys for the version's storage location (cloud_storage.py).
        return {"credentials": self.storage_of(model.name).credentials()}

    def storage_of(self, name: str) -> ModelStorage:
        return self.catalog_storage.get(name.split(".")[0], self.storage)

    def emit_lineage(self, params: dict, principal: str) -> dict:
        model = self.model(params)
        self.version(model, params)
        self.lineage_events.append(params)
        return {}

    # -- grants ----------------------------------------------------------------------------

    def authorize(self, operation: str, method: str, params: dict, principal: str) -> None:
        """Raise the workspace's 403 unless `principal` may run the operation (see the module doc).

        USE CATALOG and USE SCHEMA come first, as Unity Catalog checks them; the model's own rule
        applies only to a model that exists (an unknown one stays a 404). A malformed name is left
        to the handler's 400."""
        key = (operation, method)
        if key == ("model-versions/generate-temporary-credentials", "POST"):
            key = ("model-versions/get", "GET") if params.get("operation") == "MODEL_VERSION_OPERATION_READ" else ("model-versions/create", "POST")
        if key != ("registered-models/create", "POST") and key not in READ_OPERATIONS and key not in OWNER_OPERATIONS:
            return
        try:
            name = full_name(params.get("name"))
        except ApiError:
            return
        self.grants.require_use(principal, name)
        if key == ("registered-models/create", "POST"):
            self.grants.require(principal, "CREATE MODEL", "schema", name.rsplit(".", 1)[0])
        elif name in self.models and key in READ_OPERATIONS:
            self.grants.require_model_read(principal, name)
        elif name in self.models:
            self.grants.require_model_write(principal, name)

    def require_file_access(self, principal: str, name: str, write: bool) -> None:
        """The Files API's `/Models/…` paths: reading a version's files as loading the model, writing as its owner."""
        if write:
            self.grants.require_model_write(principal, name)
        else:
            self.grants.require_model_read(principal, name)

    # -- files of a version (the Files API's /Models/… paths) ------------------------------

    def version_storage(self, name: str, version: str, write: bool) -> Path:
        """The directory holding a version's files; writable only while it is pending."""
        model = self.model({"name": name})
        record = self.version(model, {"version": version})
        if write and record.status != PENDING:
            raise ApiError(403, "PERMISSION_DENIED", f"Model version {record.version} of '{model.name}' is {record.status}: its files can no longer be written.")
        return record.storage_dir

    # -- lookups and JSON ------------------------------------------------------------------

    def model(self, params: dict) -> RegisteredModelRecord:
        name = full_name(params.get("name"))
        if name not in self.models:
            raise not_found(f"Routine or Model '{name}' does not exist.")
        return self.models[name]

    @staticmethod
    def version(model: RegisteredModelRecord, params: dict) -> ModelVersionRecord:
        number = version_number(params.get("version"))
        if number not in model.versions:
            raise not_found(f"Model version {number} of '{model.name}' does not exist.")
        return model.versions[number]

    @staticmethod
    def model_json(model: RegisteredModelRecord) -> dict:
        return {
            "name": model.name,
            "creation_timestamp": model.created,
            "last_updated_timestamp": model.updated,
            "user_id": model.user_id,
            "description": model.description,
            "aliases": [{"alias": a, "version": str(v)} for a, v in sorted(model.aliases.items())],
            "tags": [{"key": k, "value": v} for k, v in model.tags.items()],
        }

    @staticmethod
    def version_json(model: RegisteredModelRecord, version: ModelVersionRecord, with_aliases_and_tags: bool = True) -> dict:
        body = {
            "name": model.name,
            "version": str(version.version),
            "creation_timestamp": version.created,
            "last_updated_timestamp": version.updated,
            "user_id": version.user_id,
            "description": version.description,
            "source": version.source,
            "run_id": version.run_id,
            "run_tracking_server_id": version.run_tracking_server_id,
            "status": version.status,
            "storage_location": version.storage_location,
        }
        if version.model_id:
            body["model_id"] = version.model_id
        if with_aliases_and_tags:
            body["aliases"] = [{"alias": a, "version": str(v)} for a, v in sorted(model.aliases.items()) if v == version.version]
            body["tags"] = [{"key": k, "value": v} for k, v in version.tags.items()]
        return body


def tag_map(tags: object) -> dict[str, str]:
    if tags in (None, ""):
        return {}
    if not isinstance(tags, list) or not all(isinstance(t, dict) and t.get("key") for t in tags):
        raise invalid("Tags must be a list of {'key': ..., 'value': ...}.")
    return {t["key"]: t.get("value") or "" for t in tags}
