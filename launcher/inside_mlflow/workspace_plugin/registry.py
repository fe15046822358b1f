"""MLflow's open-source server in front of the Unity Catalog registry store.

MLflow's handlers pass what their protobuf requests hold: `filter_string=""`, `order_by=[]` and
`run_link=""` when the caller sent nothing, which `UcModelRegistryStore` refuses as unsupported
arguments, so the UI's model pages and registration answered 500. Here, on the server's own store
instance only:
- empty values become None;
- registered-model search, which takes no filter in Unity Catalog, serves the name filters the UI
  and clients send (`name = '…'`, `name LIKE '…'`, `name ILIKE '…'`) by scanning the models the
  app can see (up to MAX_SCANNED_MODELS) and paging the matches itself;
- an `order_by`, which Unity Catalog takes for neither search, orders each page (name, version,
  timestamps) instead of being refused;
- the UI's search for prompt versions (a tag filter UC refuses) finds none: UC's models are not
  prompts;
- version search results, which UC returns without aliases or tags as an entity MLflow's handler
  cannot serialise, are served as plain versions with empty aliases and tags;
- with artifacts served by the app, a version's download URI is its `mlflow-artifacts:` path, so
  that `load_model("models:/catalog.schema.model@alias")` works with only the app's URL.
- registering into customer-hosted storage whose cloud SDK the app lacks answers 501 naming the
  package, not MLflow's retried 500 (artifacts.cloud_sdk_required).
"""

from __future__ import annotations

import re

MAX_SCANNED_MODELS = 10_000
SCAN_PAGE_SIZE = 1000
_NAME_FILTER = re.compile(r"^\s*name\s*(?P<op>=|!=|i?like)\s*(?P<quote>['\"])(?P<value>.*)(?P=quote)\s*$", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
# `tag.mlflow.prompt.is_prompt = 'true'` (prompts only) or `!= 'true'` (no prompts), as MLflow writes them.
_PROMPT_CONDITION = re.compile(r"^\s*tags?\.`?mlflow\.prompt\.is_prompt`?\s*(?P<op>!=|=)\s*'true'\s*$", re.IGNORECASE)
_ORDER = re.compile(r"^\s*(?P<key>\w+)(?:\s+(?P<direction>asc|desc))?\s*$", re.IGNORECASE)
_SORT_KEYS = {
    "name": lambda item: item.name,
    "version_number": lambda item: int(item.version),
    "creation_timestamp": lambda item: item.creation_timestamp or 0,
    "last_updated_timestamp": lambda item: item.last_updated_timestamp or 0,
}
_OFFSET_TOKEN = "offset:"


def name_conditions(filter_string: str | None) -> list[str]:
    """The conditions of a registered-model filter that still need applying, as strings.

    MLflow's client adds `tag.`mlflow.prompt.is_prompt` != 'true'` to every model search, to
    leave prompts out; Unity Catalog keeps prompts apart from models, so that condition holds
    for every model it returns and is dropped here.
    """
    return [c for c in conditions_of(filter_string) if prompt_operator(c) != "!="]


def asks_for_prompts(filter_string: str | None) -> bool:
    """Whether a version search is the UI's look-up of prompt versions (e.g. linked to a run).

    Unity Catalog refuses such tag filters; the models it serves here are never prompts, so the
    answer is empty, as it is from MLflow's own registry without prompts.
    """
    return any(prompt_operator(c) == "=" for c in conditions_of(filter_string))


def conditions_of(filter_string: str | None) -> list[str]:
    """The ANDed conditions of a search filter."""
    return [c for c in _AND.split(filter_string or "") if c.strip()]


def prompt_operator(condition: str) -> str | None:
    """'=' or '!=' for a condition on MLflow's is-prompt tag; None for any other condition."""
    match = _PROMPT_CONDITION.match(condition)
    return match["op"] if match else None


def name_matcher(filter_string: str):
    """A predicate on model names for the name filters MLflow's search grammar allows."""
    from mlflow.exceptions import MlflowException

    match = _NAME_FILTER.match(filter_string)
    if not match:
        raise MlflowException.invalid_parameter_value(f"Unsupported filter '{filter_string}' for Unity Catalog models: the app serves name = '…', name LIKE '…' and name ILIKE '…' only.")
    op, value = match["op"].lower(), match["value"]
    if op == "=":
        return lambda name: name == value
    if op == "!=":
        return lambda name: name != value
    pattern = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in value)
    compiled = re.compile(f"^{pattern}$", (re.IGNORECASE if op == "ilike" else 0) | re.DOTALL)
    return lambda name: compiled.match(name) is not None


def ordered(items: list, order_by: list[str] | None) -> list:
    """`items` sorted by MLflow order clauses on the keys both searches know; others are ignored."""
    result = list(items)
    for clause in reversed(order_by or []):
        match = _ORDER.match(clause)
        if match and match["key"].lower() in _SORT_KEYS:
            descending = (match["direction"] or "asc").lower() == "desc"
            result.sort(key=_SORT_KEYS[match["key"].lower()], reverse=descending)
    return result


def adapt_registry_store(store, proxied_downloads: bool) -> None:
    """Give `store` (the server's UC registry store instance) the behaviour in the module doc."""
    from mlflow.store.entities.paged_list import PagedList

    from launcher.inside_mlflow import mlflow_internals
    from launcher.inside_mlflow.workspace_plugin.artifacts import cloud_sdk_required, model_version_download_uri

    base = type(store)

    class OpenSourceServerUcStore(base):
        def search_registered_models(self, filter_string=None, max_results=None, order_by=None, page_token=None):
            conditions = name_conditions(filter_string)
            if not conditions:
                page = super().search_registered_models(None, max_results, None, page_token or None)
                return PagedList(ordered(page, order_by), page.token)
            matchers = [name_matcher(condition) for condition in conditions]
            found = [model for model in self._scan_registered_models() if all(m(model.name) for m in matchers)]
            return page_of(ordered(found, order_by or ["name ASC"]), max_results, page_token)

        def _scan_registered_models(self):
            token, seen = None, 0
            while seen < MAX_SCANNED_MODELS:
                page = super().search_registered_models(None, SCAN_PAGE_SIZE, None, token)
                yield from page
                seen += len(page)
                token = page.token
                if not token:
                    return

        def search_model_versions(self, filter_string=None, max_results=None, order_by=None, page_token=None):
            if asks_for_prompts(filter_string):
                return PagedList([], None)
            page = super().search_model_versions(filter_string or None, max_results, None, page_token or None)
            return PagedList(ordered([plain_model_version(v) for v in page], order_by), page.token)

        def create_model_version(self, name, source, run_id=None, tags=None, run_link=None, description=None, local_model_path=None, model_id=None):
            with cloud_sdk_required(name):  # the files go to storage a cloud SDK may be missing for
                return super().create_model_version(
                    name, source, run_id=run_id or None, tags=tags, run_link=run_link or None,
                    description=description or None, local_model_path=local_model_path, model_id=model_id or None,
                )  # fmt: skip

        def get_model_version_download_uri(self, name, version):
            if not proxied_downloads:
                return super().get_model_version_download_uri(name, version)
            model_version = self.get_model_version(name, version)  # an unknown version is a 404, as before
            return model_version_download_uri(model_version.name or name, model_version.version)

    OpenSourceServerUcStore.__name__ = f"OpenSourceServer{base.__name__}"
    mlflow_internals.adapt_instance(store, OpenSourceServerUcStore)


def plain_model_version(found):
    """A version from UC's search as the ModelVersion MLflow's handler can serialise.

    The store returns `ModelVersionSearch`, whose `aliases` is a method that raises (UC search
    carries no aliases or tags), so the handler's `to_proto` failed with a TypeError: a 500. The
    copy keeps the empty tags and aliases the search gave.
    """
    from launcher.inside_mlflow import mlflow_internals

    return mlflow_internals.as_model_version(found)


def page_of(items: list, max_results: int | None, page_token: str | None):
    """One page of an already complete result, with an offset token for the next."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.entities.paged_list import PagedList

    start = 0
    if page_token:
        if not page_token.startswith(_OFFSET_TOKEN) or not page_token[len(_OFFSET_TOKEN) :].isdigit():
            raise MlflowException.invalid_parameter_value(f"Invalid page token '{page_token}'.")
        start = int(page_token[len(_OFFSET_TOKEN) :])
    size = max_results or 100
    end = start + size
    return PagedList(items[start:end], f"{_OFFSET_TOKEN}{end}" if end < len(items) else None)
