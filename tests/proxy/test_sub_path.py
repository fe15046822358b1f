"""The front under a sub-path (`--static-prefix /mlflow`): its own paths, MLflow's, and what lies outside."""

from __future__ import annotations

import httpx
import pytest

from proxy.app import FrontConfig
from tests.proxy.conftest import INDEX_HTML, UPSTREAM_TIMEOUT, run_front
from tests.threaded_server import ThreadedServer

PREFIX = "/mlflow"
TOKEN = "sub-path-token-0123456789"
PUBLIC_HOST = "tracking.example.com"


@pytest.fixture
def prefixed(start_front, ui_build):
    """A front serving under /mlflow, in front of the fake MLflow."""
    (ui_build / "main.0123abcd.js").write_bytes(b"console.log('ui');" * 100)
    return start_front(config=FrontConfig(upstream_timeout_seconds=UPSTREAM_TIMEOUT, static_prefix=PREFIX))


@pytest.fixture
async def http(prefixed):
    async with httpx.AsyncClient(base_url=prefixed.url, timeout=10, trust_env=False) as client:
        yield client


def assert_outside(response: httpx.Response) -> None:
    assert response.status_code == 404
    assert response.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": "Not Found: this server serves MLflow under /mlflow/ (--static-prefix); only /health answers outside it.",
    }


async def test_the_ui_is_served_under_the_prefix(http):
    index = await http.get("/mlflow/")
    asset = await http.get("/mlflow/static-files/main.0123abcd.js")

    assert index.status_code == 200 and index.content == INDEX_HTML
    assert index.headers["content-type"].startswith("text/html")
    assert asset.status_code == 200 and asset.text.startswith("console.log")
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_the_prefix_without_its_slash_is_sent_to_the_ui(http):
    # index.html names its files relative to itself (static-files/…): they resolve under /mlflow/ only.
    response = await http.get("/mlflow", params={"next": "1"})

    assert response.status_code == 308
    assert response.headers["location"] == "/mlflow/?next=1"


async def test_mlflows_paths_are_forwarded_as_they_came(http, fake_mlflow):
    response = await http.get("/mlflow/api/2.0/mlflow/experiments/get%2Dby-name", params={"experiment_name": "a b"})

    assert response.status_code == 200
    seen = response.json()
    assert seen["raw_path"] == "/mlflow/api/2.0/mlflow/experiments/get%2Dby-name"  # prefix kept, encoding kept
    assert seen["query_string"] == "experiment_name=a+b"


@pytest.mark.parametrize(
    "path",
    ["/", "/api/2.0/mlflow/experiments/search", "/ajax-api/2.0/mlflow/runs/get", "/static-files/main.0123abcd.js", "/metrics", "/mlflowx/api/2.0/x", "/get-artifact"],
)
async def test_paths_outside_the_prefix_are_404_and_never_reach_mlflow(http, fake_mlflow, path):
    response = await http.get(path)

    assert_outside(response)
    assert fake_mlflow.calls == []


async def test_health_answers_under_the_prefix_and_at_the_root(http):
    for path in ("/mlflow/health", "/health"):
        response = await http.get(path)
        assert response.status_code == 200, path
        assert response.json()["status"] == "ok"


async def test_metrics_answer_under_the_prefix_with_mlflows_route_labels(http):
    assert (await http.get("/mlflow/api/2.0/mlflow/experiments/get", params={"experiment_id": "1"})).status_code == 200
    assert (await http.get("/api/2.0/mlflow/experiments/get")).status_code == 404

    metrics = await http.get("/mlflow/metrics")

    assert metrics.status_code == 200
    text = metrics.text
    # The route as MLflow's table names it, whatever the prefix: dashboards need not know it.
    assert 'mlflow_app_requests_total{method="GET",route="/api/2.0/mlflow/experiments/get",status="200"} 1.0' in text
    # The same path outside the prefix was no MLflow route.
    assert 'mlflow_app_requests_total{method="GET",route="{other}",status="404"} 1.0' in text
    assert "/mlflow/api" not in text


async def test_a_redirect_from_mlflow_keeps_the_prefix_and_points_at_the_public_host(start_front, ui_build):
    class PrefixedMlflow:
        """MLflow with --static-prefix redirects to its own address, the prefix in the path (Werkzeug)."""

        port = 0

        async def __call__(self, scope, receive, send):
            location = f"http://127.0.0.1:{self.port}{scope['path']}/?page=2".encode()
            await send({"type": "http.response.start", "status": 308, "headers": [(b"location", location), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})

    upstream = PrefixedMlflow()
    server = ThreadedServer(upstream, name="prefixed-mlflow").start()
    upstream.port = server.port
    front = run_front(upstream, ui_build, config=FrontConfig(upstream_timeout_seconds=UPSTREAM_TIMEOUT, static_prefix=PREFIX))
    try:
        async with httpx.AsyncClient(base_url=front.url, trust_env=False) as http:
            direct = await http.get("/mlflow/ajax-api/2.0/mlflow/thing")
            proxied = await http.get("/mlflow/ajax-api/2.0/mlflow/thing", headers={"X-Forwarded-Host": PUBLIC_HOST, "X-Forwarded-Proto": "https"})
    finally:
        front.server.stop()
        server.stop()

    assert direct.headers["location"] == f"http://{front.host}/mlflow/ajax-api/2.0/mlflow/thing/?page=2"
    assert proxied.headers["location"] == f"https://{PUBLIC_HOST}/mlflow/ajax-api/2.0/mlflow/thing/?page=2"


async def test_with_a_token_only_health_is_open_and_outside_paths_say_nothing_without_it(start_front, fake_mlflow):
    front = start_front(config=FrontConfig(upstream_timeout_seconds=UPSTREAM_TIMEOUT, static_prefix=PREFIX, auth_token=TOKEN))
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/mlflow/health")).status_code == 200
        assert (await http.get("/mlflow/metrics")).status_code == 401
        assert (await http.get("/mlflow/")).status_code == 401
        assert (await http.get("/somewhere")).status_code == 401  # not even the prefix is told
        authorized = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/mlflow/metrics", headers=authorized)).status_code == 200
        assert_outside(await http.get("/somewhere", headers=authorized))
    assert fake_mlflow.calls == []


async def test_health_is_open_to_any_host_under_the_prefix_too(http):
    for path in ("/mlflow/health", "/health"):
        assert (await http.get(path, headers={"Host": "probe.internal"})).status_code == 200
    refused = await http.get("/mlflow/", headers={"Host": "evil.example.com"})
    assert refused.status_code == 403


async def test_without_a_prefix_nothing_changes(client, fake_mlflow):
    # The default front (no prefix) serves at the root and forwards /mlflow/… like any other path.
    assert (await client.get("/")).status_code == 200
    forwarded = await client.get("/mlflow/api/2.0/x")
    assert forwarded.json()["raw_path"] == "/mlflow/api/2.0/x"
