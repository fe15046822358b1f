"""Route labels: MLflow's route templates and the front's own paths, nothing from a request, the set bounded."""

from __future__ import annotations

import random
import re
import string
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.observation.mlflow_routes import ROUTES
from proxy.observation.routes import (
    KNOWN_LABELS,
    MAX_TEMPLATES,
    OTHER,
    STATIC_FILES,
    RouteLabels,
    answered_by_the_front,
    route_label,
    route_template,
)

REPO = Path(__file__).resolve().parents[3]
RUN_ID = uuid.uuid4().hex
TRACE_ID = "tr-" + uuid.uuid4().hex
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts/{artifact_path}"


@pytest.mark.parametrize(
    ("path", "template"),
    [
        # The front's own paths, and MLflow's fixed ones
        ("/", "/"),
        ("/health", "/health"),
        ("/metrics", "/metrics"),
        ("/version", "/version"),
        ("/graphql", "/graphql"),
        ("/get-artifact", "/get-artifact"),
        ("/model-versions/get-artifact", "/model-versions/get-artifact"),
        ("/v1/traces", "/v1/traces"),
        ("/api/3.0/mlflow/server-info", "/api/3.0/mlflow/server-info"),
        # UI assets: one template whatever the file
        ("/static-files/static/js/main.3f2a9c1b.js", STATIC_FILES),
        ("/static-files/favicon.ico", STATIC_FILES),
        # REST endpoints by name, both prefixes and versions
        ("/api/2.0/mlflow/runs/log-batch", "/api/2.0/mlflow/runs/log-batch"),
        ("/ajax-api/2.0/mlflow/runs/search", "/ajax-api/2.0/mlflow/runs/search"),
        ("/api/2.0/mlflow/experiments/get-by-name", "/api/2.0/mlflow/experiments/get-by-name"),
        ("/api/2.0/mlflow/registered-models/alias", "/api/2.0/mlflow/registered-models/alias"),
        ("/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval", "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"),
        ("/api/3.0/mlflow/traces/batchGet", "/api/3.0/mlflow/traces/batchGet"),
        ("/api/3.0/mlflow/gateway/endpoints/bindings/create", "/api/3.0/mlflow/gateway/endpoints/bindings/create"),
        # MLflow registers this one without its slash; it is in its table, so it is a route.
        ("/api/2.0mlflow/experiments/search-datasets", "/api/2.0mlflow/experiments/search-datasets"),
        # Ids in the path: MLflow's parameter names, never the value
        (f"/api/3.0/mlflow/traces/{TRACE_ID}", "/api/3.0/mlflow/traces/{trace_id}"),
        (f"/api/3.0/mlflow/traces/{TRACE_ID}/assessments/a-{RUN_ID}", "/api/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}"),
        (f"/api/2.0/mlflow/logged-models/m-{RUN_ID}/params", "/api/2.0/mlflow/logged-models/{model_id}/params"),
        (f"/api/2.0/mlflow/logged-models/m-{RUN_ID}/tags/my-tag", "/api/2.0/mlflow/logged-models/{model_id}/tags/{tag_key}"),
        ("/api/2.0/mlflow/webhooks/12345/test", "/api/2.0/mlflow/webhooks/{webhook_id}/test"),
        ("/api/3.0/mlflow/workspaces/team-a", "/api/3.0/mlflow/workspaces/{workspace_name}"),
        (f"/ajax-api/3.0/jobs/{uuid.uuid4()}", "/ajax-api/3.0/jobs/{job_id}"),
        ("/ajax-api/3.0/jobs/search", "/ajax-api/3.0/jobs/search"),
        (f"/ajax-api/3.0/mlflow/assistant/sessions/{uuid.uuid4()}/stream", "/ajax-api/3.0/mlflow/assistant/sessions/{session_id}/stream"),
        # Artifacts: the path is one placeholder, however deep
        (f"/api/2.0/mlflow-artifacts/artifacts/1/{RUN_ID}/artifacts/model/model.pkl", ARTIFACTS),
        ("/ajax-api/2.0/mlflow-artifacts/artifacts/x.txt", "/ajax-api/2.0/mlflow-artifacts/artifacts/{artifact_path}"),
        ("/api/2.0/mlflow-artifacts/artifacts", "/api/2.0/mlflow-artifacts/artifacts"),
        ("/api/2.0/mlflow-artifacts/mpu/create/1/big.bin", "/api/2.0/mlflow-artifacts/mpu/create/{artifact_path}"),
        ("/api/2.0/mlflow-artifacts/presigned/1/x", "/api/2.0/mlflow-artifacts/presigned/{artifact_path}"),
        ("/api/2.0/mlflow-artifacts/mpu/evil/1/x", OTHER),
        ("/api/2.0/mlflow-artifacts/whatever/1/x", OTHER),
        # Gateway: endpoint names are the users'
        ("/gateway/my-endpoint/mlflow/invocations", "/gateway/{endpoint_name}/mlflow/invocations"),
        ("/gateway/proxy/my-endpoint/v1/anything", "/gateway/proxy/{endpoint_name}/{path}"),
        ("/gateway/my-endpoint/something-else", OTHER),
        # Paths MLflow does not route, however much they look like an endpoint
        ("/api/2.0/mlflow/runs/deadbeefcafe1234", OTHER),
        ("/api/2.0/mlflow/runs/Weird.Name", OTHER),
        ("/api/2.0/mlflow/sk-live-leaked-secret/x", OTHER),
        ("/api/2.0/mlflow/made-up/endpoint", OTHER),
        ("/api/2.0/mlflow/a/b/c/d/e/f/g", OTHER),
        ("/api/2.0/mlflow/runs/search/", OTHER),  # Werkzeug answers 404: no slash in the rule
        ("/server-info", OTHER),
        ("/favicon.ico", OTHER),
        ("/wp-login.php", OTHER),
        ("/api/2.0/other-namespace/x", OTHER),
        ("/api/22.0/mlflow/runs/get", OTHER),
        ("/health/", OTHER),
        ("", OTHER),
    ],
)
def test_template(path, template):
    assert route_template(path) == template


def example_path(template: str) -> str:
    """A path the template matches: `x1`, `x2`, … for its parameters, two segments for a `:path` one."""
    counter = iter(range(1, 100))
    return re.sub(r"\{\w+(:path)?\}", lambda m: f"x{next(counter)}/y" if m.group(1) else f"x{next(counter)}", template)


@pytest.mark.parametrize("template", [t for t in ROUTES if not answered_by_the_front(t)])
def test_every_route_of_mlflow_labels_its_own_paths(template):
    assert route_template(example_path(template)) == route_label(template)


def test_the_table_is_mlflows_whole_url_surface():
    # The routes the design names (docs): FastAPI's and Flask's, both prefixes.
    for template in (
        "/v1/traces",
        "/graphql",
        "/ajax-api/3.0/jobs/{job_id}",
        "/gateway/{endpoint_name}/mlflow/invocations",
        "/ajax-api/3.0/mlflow/assistant/sessions/{session_id}/stream",
        "/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
        "/ajax-api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
        "/api/2.0/mlflow/experiments/search",
        "/ajax-api/2.0/mlflow/experiments/search",
        "/api/3.0/mlflow/server-info",
    ):
        assert template in ROUTES
    assert len(ROUTES) > 300


def test_shipped_table_is_the_installed_mlflows():
    """Fails after an MLflow upgrade that changes its routes: regenerate the table (see the message)."""
    check = subprocess.run([sys.executable, "-m", "bench.mlflow_route_table", "--check"], check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr[-2000:]


def test_route_labels_do_not_import_mlflows_server():
    # The front must stay light: mlflow.server pulls Flask, SQLAlchemy and MLflow's handlers.
    probe = "import sys, proxy.observation.routes; print(sorted(m for m in ('mlflow', 'flask', 'sqlalchemy') if m in sys.modules))"
    imported = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert imported.stdout.strip() == "[]"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_any_path_gets_a_known_label(tail):
    assert route_template("/" + tail) in KNOWN_LABELS
    assert route_template("/api/2.0/mlflow/" + tail) in KNOWN_LABELS


def test_labels_hold_no_text_of_the_request():
    rng = random.Random(3)
    for template in ROUTES:
        secret = "secret" + "".join(rng.choices(string.ascii_lowercase, k=12))
        path = re.sub(r"\{\w+(:path)?\}", secret, template)
        assert secret not in route_template(path)


def crafted_path(template: str, size: int = 32 * 1024) -> str:
    """The template with each parameter filled with what follows it, repeated: what makes a regex backtrack."""
    pieces = re.split(r"\{\w+(?::path)?\}", template)
    filler = [(after or "/x") * (size // (len(pieces) * len(after or "/x"))) for after in pieces[1:]]
    return pieces[0] + "".join(fill + after for fill, after in zip(filler, pieces[1:])) + "!"


def test_crafted_long_paths_cost_little():
    # One request target may be 32 KiB (proxy/edge/http_protocol.py); a label must not cost milliseconds.
    slowest = 0.0
    for template in ROUTES:
        path = crafted_path(template)
        started = time.process_time()
        assert route_template.__wrapped__(path) in KNOWN_LABELS
        slowest = max(slowest, time.process_time() - started)
    assert slowest < 0.005, f"{slowest * 1000:.1f} ms"


def random_token(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "._-") for _ in range(length))


def test_ten_thousand_artifact_paths_make_one_template():
    rng = random.Random(1)
    paths = [f"/api/2.0/mlflow-artifacts/artifacts/{i}/{uuid.UUID(int=rng.getrandbits(128)).hex}/artifacts/{random_token(rng, 12)}/f{i}.bin" for i in range(10_000)]
    assert {route_template(p) for p in paths} == {ARTIFACTS}


def test_ten_thousand_ids_make_a_handful_of_templates():
    rng = random.Random(2)
    templates = set()
    for i in range(10_000):
        uid = uuid.UUID(int=rng.getrandbits(128))
        some_id = rng.choice([str(i), uid.hex, str(uid), f"tr-{uid.hex}", f"m-{uid.hex}"])
        templates.add(route_template(f"/api/3.0/mlflow/traces/{some_id}"))
        templates.add(route_template(f"/ajax-api/2.0/mlflow/logged-models/{some_id}/tags/{random_token(rng, 8)}"))
        templates.add(route_template(f"/static-files/static/js/{some_id}.js"))
        templates.add(route_template(f"/{some_id}"))
    assert templates == {
        "/api/3.0/mlflow/traces/{trace_id}",
        "/ajax-api/2.0/mlflow/logged-models/{model_id}/tags/{tag_key}",
        STATIC_FILES,
        OTHER,
    }


def made_up_words(count: int) -> list[str]:
    """Lower-case words: they look like endpoint names, and a client can make up any number."""
    rng = random.Random(4)
    return ["".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(count)]


def test_made_up_endpoints_add_no_label():
    labels = RouteLabels()
    fixed = labels.in_use
    assert {labels(f"/ajax-api/3.0/mlflow/{word}/get") for word in made_up_words(5000)} == {OTHER}
    assert labels.in_use == fixed
    assert labels("/api/2.0/mlflow/experiments/search") == "/api/2.0/mlflow/experiments/search"


def test_every_label_of_the_table_fits_under_the_cap():
    labels = RouteLabels()
    seen = {labels(example_path(template)) for template in ROUTES}
    assert OTHER not in seen  # the cap was never reached
    assert labels.in_use == len(KNOWN_LABELS) < MAX_TEMPLATES


REAL_ENDPOINTS = [example_path(t) for t in ROUTES if not answered_by_the_front(t)]


def test_hard_cap_folds_new_templates_into_other():
    labels = RouteLabels(max_templates=20)
    fixed = labels.in_use
    seen = {labels(path) for path in REAL_ENDPOINTS}
    assert len(seen) == (20 - fixed) + 1  # the first new ones, then only {other}
    assert OTHER in seen
    assert labels.in_use == 20
    # Templates seen before the cap, and the front's own, keep their names.
    assert labels(REAL_ENDPOINTS[0]) == route_template(REAL_ENDPOINTS[0]) != OTHER
    assert labels("/health") == "/health"
    assert labels("/static-files/a.js") == STATIC_FILES


def test_refused_requests_never_add_a_template():
    labels = RouteLabels()
    fixed = labels.in_use
    assert {labels(path, admit=False) for path in REAL_ENDPOINTS} == {OTHER}
    assert labels.in_use == fixed
    # A template already in use keeps its name, refused or not.
    assert labels("/api/2.0/mlflow/runs/get") == "/api/2.0/mlflow/runs/get"
    assert labels("/api/2.0/mlflow/runs/get", admit=False) == "/api/2.0/mlflow/runs/get"
