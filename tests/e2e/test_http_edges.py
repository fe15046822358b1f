"""Raw HTTP against the real app: UI caching and compression, pass-through, edge refusals, big transfers."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import re
import threading
import time
import uuid

import brotli
import httpx
import psutil
import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(app):
    with httpx.Client(base_url=app.url, timeout=60) as session:
        yield session


def main_js_path(client) -> str:
    index = client.get("/").text
    return "/" + re.search(r'src="(static-files/static/js/main\.[0-9a-f]+\.js)"', index).group(1)


def test_index_is_served_by_the_front_with_revalidation(client):
    index = client.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-cache"
    assert index.headers["x-content-type-options"] == "nosniff"
    assert index.headers["x-frame-options"] == "SAMEORIGIN"
    assert "<title>MLflow</title>" in index.text
    again = client.get("/", headers={"If-None-Match": index.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")


def test_hashed_assets_are_immutable_and_compressed_once(client):
    path = main_js_path(client)
    plain = client.get(path, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "text/javascript; charset=utf-8"
    assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"

    br = client.get(path, headers={"Accept-Encoding": "gzip, br"})
    assert br.headers["content-encoding"] == "br"
    assert "accept-encoding" in br.headers["vary"].lower()
    assert br.content == plain.content  # httpx decodes br; the decoded bytes equal the file
    assert int(br.headers["content-length"]) < len(plain.content) * 0.35

    with httpx.stream("GET", f"{client.base_url}{path}", headers={"Accept-Encoding": "gzip"}) as gz:
        body = b"".join(gz.iter_raw())
        assert gz.headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == plain.content

    with httpx.stream("GET", f"{client.base_url}{path}", headers={"Accept-Encoding": "br"}) as compressed:
        assert brotli.decompress(b"".join(compressed.iter_raw())) == plain.content
        etag = compressed.headers["etag"]
    not_modified = client.get(path, headers={"Accept-Encoding": "br", "If-None-Match": etag})
    assert not_modified.status_code == 304


def raw_get(app, raw_path: str) -> tuple[int, bytes]:
    """A GET with the path sent byte for byte (httpx would normalise `..` away first)."""
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        connection.request("GET", raw_path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "raw_path",
    [
        "/static-files/../../../../etc/passwd",
        "/static-files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static-files/static/%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/static-files//etc/passwd",
        "/static-files/index.html%00.js",
    ],
)
def test_asset_paths_cannot_escape_the_build(app, raw_path):
    status, body = raw_get(app, raw_path)
    assert status in (400, 404), raw_path
    assert b"root:" not in body
    if status == 404:
        assert json.loads(body)["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_mlflow_answers_pass_through_unchanged(client):
    missing = client.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": "987654321"})
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"

    malformed = client.post("/api/2.0/mlflow/experiments/create", content=b"{not json", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error_code"] == "INVALID_PARAMETER_VALUE"

    assert client.get("/version").status_code == 200
    assert client.get("/ajax-api/2.0/mlflow/experiments/search", params={"max_results": 5}).status_code == 200
    graphql = client.post("/graphql", json={"query": "{ __typename }"})
    assert graphql.status_code == 200 and graphql.json()["data"]["__typename"] == "Query"


def test_request_id_is_echoed_and_logged(client, app):
    echoed = client.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"}, headers={"X-Request-Id": "trace-abc-123"})
    assert echoed.headers["x-request-id"] == "trace-abc-123"
    generated = client.get("/health")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    deadline = time.monotonic() + 5
    while "id=trace-abc-123" not in app.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(line for line in app.log_text().splitlines() if "id=trace-abc-123" in line)
    assert "GET /api/2.0/mlflow/experiments/get 200" in line


def test_writes_from_a_foreign_origin_are_refused_by_the_front(client):
    name = f"origin-{uuid.uuid4().hex[:8]}"
    own = client.post(
        "/ajax-api/2.0/mlflow/experiments/create",
        json={"name": name},
        headers={"Origin": str(client.base_url).rstrip("/")},
    )
    assert own.status_code == 200
    foreign = client.post("/ajax-api/2.0/mlflow/experiments/create", json={"name": name + "-evil"}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert foreign.json()["error_code"] == "PERMISSION_DENIED"
    assert "cors-allowed-origins" in foreign.json()["message"]
    lookup = client.get("/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name + "-evil"})
    assert lookup.status_code == 404  # nothing was created


def test_unknown_host_names_are_refused_but_health_answers(app):
    refused = httpx.get(app.url + "/api/2.0/mlflow/experiments/search", headers={"Host": "attacker.example"})
    assert refused.status_code == 403
    assert "allowed-hosts" in refused.json()["message"]
    assert httpx.get(app.url + "/health", headers={"Host": "attacker.example"}).status_code == 200
    on_apps = httpx.get(app.url + "/", headers={"Host": "mlflow-1234.aws.databricksapps.com"})
    assert on_apps.status_code == 200


ARTIFACT_MIB = 512
CHUNK = bytes(range(256)) * 4096  # 1 MiB


class MemoryWatch:
    """Samples a process's resident memory in the background."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / 2**20


def test_large_artifact_streams_through_without_buffering(app):
    path = f"/api/2.0/mlflow-artifacts/artifacts/big-{uuid.uuid4().hex[:8]}/blob.bin"
    digest = hashlib.sha256()

    def body():
        for _ in range(ARTIFACT_MIB):
            digest.update(CHUNK)
            yield CHUNK

    with MemoryWatch(app.process.pid) as upload_memory:
        started = time.monotonic()
        put = httpx.put(app.url + path, content=body(), headers={"Content-Length": str(ARTIFACT_MIB * 2**20)}, timeout=300)
        upload_seconds = time.monotonic() - started
    assert put.status_code == 200, put.text

    received = hashlib.sha256()
    size = 0
    with MemoryWatch(app.process.pid) as download_memory:
        started = time.monotonic()
        with httpx.stream("GET", app.url + path, timeout=300) as download:
            assert download.status_code == 200
            for chunk in download.iter_raw(1 << 20):
                received.update(chunk)
                size += len(chunk)
        download_seconds = time.monotonic() - started
    httpx.delete(app.url + path)

    assert size == ARTIFACT_MIB * 2**20
    assert received.hexdigest() == digest.hexdigest()
    print(
        f"\n{ARTIFACT_MIB} MiB artifact: upload {ARTIFACT_MIB / upload_seconds:.0f} MiB/s "
        f"(front +{upload_memory.growth_mib:.0f} MiB), download {ARTIFACT_MIB / download_seconds:.0f} MiB/s "
        f"(front +{download_memory.growth_mib:.0f} MiB)"
    )
    # Streaming, not buffering: the front grows by a small fraction of what passed through it.
    assert upload_memory.growth_mib < 64
    assert download_memory.growth_mib < 64
