"""Route labels: API endpoints by name, everything users choose folded, the set bounded."""

from __future__ import annotations

import itertools
import random
import string
import uuid

import pytest

from proxy.observation.routes import MAX_TEMPLATES, OTHER, RouteLabels, route_template

RUN_ID = uuid.uuid4().hex
TRACE_ID = "tr-" + uuid.uuid4().hex


@pytest.mark.parametrize(
    ("path", "template"),
    [
        # The front's own and MLflow's fixed paths
        ("/", "/"),
        ("/health", "/health"),
        ("/metrics", "/metrics"),
        ("/version", "/version"),
        ("/server-info", "/server-info"),
        ("/graphql", "/graphql"),
        ("/get-artifact", "/get-artifact"),
        ("/model-versions/get-artifact", "/model-versions/get-artifact"),
        ("/v1/traces", "/v1/traces"),
        # UI assets: one template whatever the file
        ("/static-files/static/js/main.3f2a9c1b.js", "/static-files/{asset}"),
        ("/static-files/favicon.ico", "/static-files/{asset}"),
        # REST endpoints by name, both prefixes and versions
        ("/api/2.0/mlflow/runs/log-batch", "/api/2.0/mlflow/runs/log-batch"),
        ("/ajax-api/2.0/mlflow/runs/search", "/ajax-api/2.0/mlflow/runs/search"),
        ("/api/2.0/mlflow/experiments/get-by-name", "/api/2.0/mlflow/experiments/get-by-name"),
        ("/api/2.0/mlflow/registered-models/alias", "/api/2.0/mlflow/registered-models/alias"),
        ("/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval", "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"),
        ("/api/3.0/mlflow/traces/batchGet", "/api/3.0/mlflow/traces/batchGet"),
        ("/api/3.0/mlflow/gateway/endpoints/bindings/create", "/api/3.0/mlflow/gateway/endpoints/bindings/create"),
        ("/api/2.0/mlflow/runs/search/", "/api/2.0/mlflow/runs/search"),
        # Ids in the path
        (f"/api/3.0/mlflow/traces/{TRACE_ID}", "/api/3.0/mlflow/traces/{id}"),
        (f"/api/3.0/mlflow/traces/{TRACE_ID}/assessments/a-{RUN_ID}", "/api/3.0/mlflow/traces/{id}/assessments/{id}"),
        (f"/api/2.0/mlflow/logged-models/m-{RUN_ID}/params", "/api/2.0/mlflow/logged-models/{id}/params"),
        (f"/api/2.0/mlflow/logged-models/m-{RUN_ID}/tags/my-tag", "/api/2.0/mlflow/logged-models/{id}/tags/{id}"),
        ("/api/2.0/mlflow/webhooks/12345/test", "/api/2.0/mlflow/webhooks/{id}/test"),
        ("/api/3.0/mlflow/workspaces/team-a", "/api/3.0/mlflow/workspaces/{id}"),
        (f"/ajax-api/3.0/jobs/{uuid.uuid4()}", "/ajax-api/3.0/jobs/{id}"),
        ("/ajax-api/3.0/jobs/search", "/ajax-api/3.0/jobs/search"),
        (f"/ajax-api/3.0/mlflow/assistant/sessions/{uuid.uuid4()}/stream", "/ajax-api/3.0/mlflow/assistant/sessions/{id}/stream"),
        ("/api/2.0/mlflow/runs/deadbeefcafe1234", "/api/2.0/mlflow/runs/{id}"),
        ("/api/2.0/mlflow/runs/Weird.Name", "/api/2.0/mlflow/runs/{id}"),
        # Depth is capped
        ("/api/2.0/mlflow/a/b/c/d/e/f/g", "/api/2.0/mlflow/a/b/c/d/{rest}"),
        # Artifacts: the path is one placeholder, however deep
        (f"/api/2.0/mlflow-artifacts/artifacts/1/{RUN_ID}/artifacts/model/model.pkl", "/api/2.0/mlflow-artifacts/artifacts/{path}"),
        ("/ajax-api/2.0/mlflow-artifacts/artifacts/x.txt", "/ajax-api/2.0/mlflow-artifacts/artifacts/{path}"),
        ("/api/2.0/mlflow-artifacts/artifacts", "/api/2.0/mlflow-artifacts/artifacts"),
        ("/api/2.0/mlflow-artifacts/mpu/create/1/big.bin", "/api/2.0/mlflow-artifacts/mpu/create/{path}"),
        ("/api/2.0/mlflow-artifacts/presigned/1/x", "/api/2.0/mlflow-artifacts/presigned/{path}"),
        ("/api/2.0/mlflow-artifacts/mpu/evil/1/x", OTHER),
        ("/api/2.0/mlflow-artifacts/whatever/1/x", OTHER),
        # Gateway: endpoint names are the users'
        ("/gateway/my-endpoint/mlflow/invocations", "/gateway/{path}"),
        # Anything else
        ("/favicon.ico", OTHER),
        ("/wp-login.php", OTHER),
        ("/api/2.0/other-namespace/x", OTHER),
        ("/api/22.0/mlflow/runs/get", OTHER),
        ("/api/2.0mlflow/experiments/search-datasets", OTHER),
        ("/health/", OTHER),
    ],
)
def test_template(path, template):
    assert route_template(path) == template


def random_token(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "._-") for _ in range(length))


def test_ten_thousand_artifact_paths_make_one_template():
    rng = random.Random(1)
    paths = [
        f"/api/2.0/mlflow-artifacts/artifacts/{i}/{uuid.UUID(int=rng.getrandbits(128)).hex}/artifacts/{random_token(rng, 12)}/f{i}.bin"
        for i in range(10_000)
    ]
    assert {route_template(p) for p in paths} == {"/api/2.0/mlflow-artifacts/artifacts/{path}"}


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
        "/api/3.0/mlflow/traces/{id}",
        "/ajax-api/2.0/mlflow/logged-models/{id}/tags/{id}",
        "/static-files/{asset}",
        OTHER,
    }


def made_up_words(count: int) -> list[str]:
    """Lower-case words: they look like endpoint names, and a client can make up any number."""
    return ["".join(letters) for letters in itertools.islice(itertools.product(string.ascii_lowercase, repeat=4), count)]


def test_hard_cap_folds_new_templates_into_other():
    labels = RouteLabels(max_templates=20)
    fixed = labels.in_use
    seen = {labels(f"/api/2.0/mlflow/made-up/{word}") for word in made_up_words(1000)}
    assert len(seen) == (20 - fixed) + 1  # the first new ones, then only {other}
    assert OTHER in seen
    assert labels.in_use == 20
    # Templates seen before the cap, and the fixed ones, keep their names.
    assert labels("/api/2.0/mlflow/made-up/aaaa") == "/api/2.0/mlflow/made-up/aaaa"
    assert labels("/health") == "/health"
    assert labels("/static-files/a.js") == "/static-files/{asset}"


def test_default_cap_bounds_any_number_of_made_up_endpoints():
    labels = RouteLabels()
    templates = {labels(f"/ajax-api/3.0/mlflow/{word}/get") for word in made_up_words(5000)}
    assert labels.in_use == MAX_TEMPLATES
    assert len(templates) < MAX_TEMPLATES


def test_refused_requests_never_add_a_template():
    labels = RouteLabels(max_templates=20)
    fixed = labels.in_use
    assert {labels(f"/api/2.0/mlflow/made-up/{word}", admit=False) for word in made_up_words(100)} == {OTHER}
    assert labels.in_use == fixed
    # A template already in use keeps its name, refused or not.
    assert labels("/api/2.0/mlflow/runs/get") == "/api/2.0/mlflow/runs/get"
    assert labels("/api/2.0/mlflow/runs/get", admit=False) == "/api/2.0/mlflow/runs/get"

