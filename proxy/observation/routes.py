"""Route labels for metrics: every request path is one of MLflow's route templates, or `{other}`.

A label per raw path would give one time series per artifact, run id or asset, and would copy into
`/metrics` whatever a client puts in a path (a secret, once). So labels come from a fixed set only:
the front's own paths and MLflow's route table, shipped as `mlflow_routes.py` (generated from the
installed MLflow by bench/mlflow_route_table.py; a test fails when MLflow's routes change). A path
that matches no template is `{other}`; no text of a request ever becomes a label. The front does
not import `mlflow.server` to read the table: that alone would cost it tens of MiB.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from proxy.observation.mlflow_routes import ROUTES

OTHER = "{other}"
# The front answers these itself (proxy/app.py): they keep their labels, whatever MLflow has there.
OWN_PATHS = frozenset({"/", "/health", "/metrics"})
STATIC_FILES = "/static-files/{asset}"
STATIC_FILES_PREFIX = "/static-files/"

_PARAMETER = re.compile(r"\{(\w+)(:path)?\}")


def route_label(template: str) -> str:
    """The label of a template: its parameters by name, `:path` dropped (`…/artifacts/{artifact_path}`)."""
    return _PARAMETER.sub(r"{\1}", template)


# A multi-segment parameter with more of the template after it (MLflow's MCP routes:
# `{name:path}/versions/{version:path}`) makes the regex backtrack, in time that grows with the
# square of the path: 0.3 s of the event loop for one crafted 32 KiB path. Such templates match
# only paths this short after their head, which their real paths are by far.
MAX_INNER_PATH_CHARS = 512


def template_pattern(template: str) -> str:
    """A regex of the paths a template matches: `{name}` is one segment, `{name:path}` one or more."""
    pattern, start = [], 0
    for parameter in _PARAMETER.finditer(template):
        pattern += [re.escape(template[start : parameter.start()]), ".+" if parameter.group(2) else "[^/]+"]
        start = parameter.end()
    pattern.append(re.escape(template[start:]))
    if re.search(r":path\}.", template):
        pattern.insert(0, f"(?=.{{1,{MAX_INNER_PATH_CHARS}}}\\Z)")
    return "".join(pattern)


def static_head(template: str) -> str:
    """The template up to the last `/` before its first parameter: `/api/3.0/mlflow/traces` for
    `/api/3.0/mlflow/traces/{trace_id}/tags`."""
    return template[: template.rfind("/", 0, template.index("{"))]


class Alternatives:
    """The templates that share one static head, as one regex over what follows the head: a path
    is scanned once, not once per template, and its head not again."""

    def __init__(self, head: str, templates: list[str]):
        parts = (f"(?P<t{n}>{template_pattern(template[len(head) :])})" for n, template in enumerate(templates))
        self.regex = re.compile("|".join(parts), re.DOTALL)  # a parameter may hold any character
        self.labels = {f"t{n}": route_label(template) for n, template in enumerate(templates)}

    def match(self, path: str, head_length: int) -> str | None:
        found = self.regex.fullmatch(path, head_length)  # alternatives are tried in order: the table's
        return self.labels[found.lastgroup] if found else None


class HeadNode:
    """One segment of a static head: the segments that may follow, and the templates of this head."""

    __slots__ = ("alternatives", "children")

    def __init__(self) -> None:
        self.children: dict[str, HeadNode] = {}
        self.alternatives: Alternatives | None = None


class RouteTable:
    """Route templates compiled for lookup by path.

    Paths without parameters (most of MLflow's) are one dict look-up. The others are grouped by
    static head in a tree of segments, so a path is tried only against the few templates that share
    its first segments; longer heads first, as Werkzeug prefers static segments to parameters;
    within one head in the table's order, as FastAPI tries its routes."""

    def __init__(self, templates: Iterable[str]):
        self.exact: dict[str, str] = {}
        grouped: dict[str, list[str]] = {}
        for template in templates:
            if "{" in template:
                grouped.setdefault(static_head(template), []).append(template)
            else:
                self.exact[template] = template
        self.heads = HeadNode()
        for head, group in grouped.items():
            node = self.heads
            for segment in head.split("/"):
                node = node.children.setdefault(segment, HeadNode())
            node.alternatives = Alternatives(head, group)
        self.head_depth = max((head.count("/") for head in grouped), default=0)
        self.labels = frozenset(self.exact).union(*(map(route_label, group) for group in grouped.values()))

    def match(self, path: str) -> str | None:
        """The label of the template `path` matches, or None."""
        label = self.exact.get(path)
        if label is not None:
            return label
        candidates = []
        node, head_length = self.heads, -1
        for segment in path.split("/", self.head_depth + 1)[:-1]:  # a head is followed by a slash
            node = node.children.get(segment)
            if node is None:
                break
            head_length += len(segment) + 1
            if node.alternatives is not None:
                candidates.append((node.alternatives, head_length))
        for alternatives, length in reversed(candidates):
            if (label := alternatives.match(path, length)) is not None:
                return label
        return None


def answered_by_the_front(template: str) -> bool:
    return template in OWN_PATHS or template.startswith(STATIC_FILES_PREFIX)


MLFLOW_ROUTES = RouteTable(t for t in ROUTES if not answered_by_the_front(t))
OWN_LABELS = OWN_PATHS | {STATIC_FILES}
# Every label `route_template` can give.
KNOWN_LABELS = OWN_LABELS | MLFLOW_ROUTES.labels | {OTHER}


@lru_cache(maxsize=4096)
def route_template(path: str) -> str:
    """The route label of `path` (no query string): one of `KNOWN_LABELS`, never text of the path.

    The front's own paths keep theirs, UI files are `/static-files/{asset}`, a path MLflow routes
    is its template (`/api/3.0/mlflow/traces/{trace_id}`), and anything else is `{other}`.
    """
    if path in OWN_PATHS:
        return path
    if path.startswith(STATIC_FILES_PREFIX):
        return STATIC_FILES
    return MLFLOW_ROUTES.match(path) or OTHER


# Above the number of labels MLflow's table can give (a test checks), so only a bug could reach it.
MAX_TEMPLATES = 1000


class RouteLabels:
    """`route_template` with a hard cap: once `max_templates` are in use, new ones count as `{other}`.

    The front's own labels are always available, whatever else has been seen.
    """

    def __init__(self, max_templates: int = MAX_TEMPLATES):
        self.max_templates = max_templates
        self._in_use = set(OWN_LABELS) | {OTHER}

    def __call__(self, path: str, admit: bool = True) -> str:
        """The label for `path`. With `admit=False` (a request the front refused) a template not
        yet in use is `{other}`: clients without access add no series."""
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
