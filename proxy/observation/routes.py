"""Route labels for metrics: every request path folded into one of a bounded set of templates.

A label per raw path would give one time series per artifact, run id or asset; a monitoring
system would drown. `route_template` keeps API endpoints by name and folds everything chosen by
users (ids, artifact paths, asset names, tag keys) into placeholders. `RouteLabels` adds a hard cap
on distinct templates, so the set stays bounded whatever clients send.
"""

from __future__ import annotations

import re
from functools import lru_cache

OTHER = "{other}"
ID = "{id}"

# Paths whose template is the path itself.
FIXED_PATHS = frozenset(
    {
        "/",
        "/health",
        "/metrics",
        "/get-artifact",
        "/model-versions/get-artifact",
        "/graphql",
        "/version",
        "/server-info",
        "/v1/traces",
    }
)
STATIC_FILES = "/static-files/{asset}"
GATEWAY = "/gateway/{path}"
# /api/2.0/…, /ajax-api/3.0/…: the version is one digit, dot, one digit (at most 100 values).
_API_PREFIX = re.compile(r"^/(api|ajax-api)/(\d\.\d)/([^/]+)(?:/(.*))?$")
# API namespaces whose endpoints are named by their path; other namespaces fold to {other}.
NAMED_NAMESPACES = frozenset({"mlflow", "jobs"})
# mlflow-artifacts: the action, then an artifact path that becomes one {path} however deep.
ARTIFACT_ACTIONS = frozenset({"artifacts", "presigned"})
MULTIPART_ACTIONS = frozenset({"create", "complete", "abort"})
# The member after one of these is chosen by users (a tag key, a workspace or MCP server name).
USER_NAMED_COLLECTIONS = frozenset({"tags", "workspaces", "mcp-servers", "versions"})
MAX_API_DEPTH = 4  # segments after the namespace; MLflow's deepest is traces/{id}/assessments/{id}

_NAME = re.compile(r"^[a-z][a-zA-Z0-9_-]{0,31}$")  # camelCase too: traces/batchGet
_HEX_OR_UUID = re.compile(r"^[0-9a-fA-F-]{12,}$")  # names that merely look like words: "deadbeefcafe"
_DIGIT_RUN = re.compile(r"\d{4,}")


def is_id_like(segment: str) -> bool:
    """True for segments that identify something (ids, hashes, user names) rather than name an endpoint."""
    return not _NAME.match(segment) or bool(_HEX_OR_UUID.match(segment)) or bool(_DIGIT_RUN.search(segment))


@lru_cache(maxsize=4096)
def route_template(path: str) -> str:
    """The route label of `path` (no query string): an endpoint name or a template, never an id.

    The same path always gives the same template; ids, artifact paths and asset names become
    placeholders, and any path outside MLflow's URL surface is `{other}`.
    """
    if path in FIXED_PATHS:
        return path
    if path.startswith("/static-files/"):
        return STATIC_FILES
    if path == "/gateway" or path.startswith("/gateway/"):
        return GATEWAY
    match = _API_PREFIX.match(path)
    if not match:
        return OTHER
    prefix, version, namespace, rest = match.groups()
    base = f"/{prefix}/{version}/{namespace}"
    segments = [s for s in (rest or "").split("/") if s]
    if namespace == "mlflow-artifacts":
        return artifact_template(base, segments)
    if namespace not in NAMED_NAMESPACES:
        return OTHER
    parts = []
    for index, segment in enumerate(segments[:MAX_API_DEPTH]):
        after_user_named = index > 0 and segments[index - 1] in USER_NAMED_COLLECTIONS
        parts.append(ID if after_user_named or is_id_like(segment) else segment)
    if len(segments) > MAX_API_DEPTH:
        parts.append("{rest}")
    return "/".join([base, *parts])


def artifact_template(base: str, segments: list[str]) -> str:
    """`…/mlflow-artifacts/artifacts/{path}` and its siblings; the listing has no path segment."""
    if segments == ["artifacts"]:
        return f"{base}/artifacts"  # the listing: its directory comes in the query string
    if len(segments) > 1 and segments[0] in ARTIFACT_ACTIONS:
        return f"{base}/{segments[0]}/{{path}}"
    if len(segments) > 2 and segments[0] == "mpu" and segments[1] in MULTIPART_ACTIONS:
        return f"{base}/mpu/{segments[1]}/{{path}}"
    return OTHER


MAX_TEMPLATES = 300


class RouteLabels:
    """`route_template` with a hard cap: once `max_templates` are in use, new ones count as `{other}`.

    The fixed templates are always available, whatever else has been seen.
    """

    def __init__(self, max_templates: int = MAX_TEMPLATES):
        self.max_templates = max_templates
        self._in_use = set(FIXED_PATHS) | {STATIC_FILES, GATEWAY, OTHER}

    def __call__(self, path: str, admit: bool = True) -> str:
        """The label for `path`. With `admit=False` (a request the front refused) a template not
        yet in use is `{other}`: clients without access cannot use up the cap."""
        template = route_template(path)
        if template in self._in_use:
            return template
        if not admit or len(self._in_use) >= self.max_templates:
            return OTHER
        self._in_use.add(template)
        return template

    @property
    def in_use(self) -> int:
        return len(self._in_use)
