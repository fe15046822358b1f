"""The app under a sub-path (`--static-prefix /mlflow`) behind Debian's nginx with `location /mlflow/`:
the real mlflow client and Chromium reach everything through the path, and nothing outside it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.app_process import AppProcess, free_port
from tests.e2e.test_browser import (
    ARTIFACT_PATH,
    ARTIFACT_TEXT,
    CHROMIUM,
    CHROMIUM_ARGS,
    SeededRun,
    Traffic,
    Ui,
    check_artifact_preview,
    check_experiment_list,
    check_run_overview,
    seed_run,
)

pytestmark = pytest.mark.e2e

PREFIX = "/mlflow"
NGINX = Path("/usr/sbin/nginx")
# The operator's nginx in front of the app, as docs/self-hosted.md shows it; files in the test's directory.
NGINX_CONF = """
daemon off;
master_process off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location /mlflow/ {{
            proxy_pass http://127.0.0.1:{app_port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""
# The UI asks MLflow's basic-auth plugin who the user is and reads a 404 as "no auth" (test_browser.py).
EXPECTED_MLFLOW_ANSWERS = {("GET", f"{PREFIX}/ajax-api/2.0/mlflow/users/current", 404)}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class NginxUnderPath:
    """Debian's nginx on a free loopback port, routing `/mlflow/` to the app."""

    def __init__(self, workdir: Path, app_port: int):
        self.workdir = workdir
        self.app_port = app_port
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NginxUnderPath:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "nginx.conf"
        config.write_text(NGINX_CONF.format(workdir=self.workdir, port=self.port, app_port=self.app_port))
        with open(self.workdir / "stdout.log", "ab") as log:
            self.process = subprocess.Popen([str(NGINX), "-c", str(config), "-p", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"nginx exited: {(self.workdir / 'error.log').read_text(errors='replace')[-2000:]}"
            try:
                if httpx.get(f"{self.url}{PREFIX}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("nginx did not pass /mlflow/health through within 30 s")

    def access_log_paths(self) -> list[str]:
        """The path of every request nginx received (its log is written as each one ends)."""
        lines = (self.workdir / "access.log").read_text(errors="replace").splitlines()
        return [line.split('"')[1].split(" ")[1] for line in lines if line.count('"') >= 2]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def prefixed_app(tmp_path_factory) -> Iterator[AppProcess]:
    """One app under /mlflow for the module; probed at its root /health, which stays open."""
    running = AppProcess(tmp_path_factory.mktemp("prefixed-app"), "--static-prefix", PREFIX).start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def nginx(prefixed_app, tmp_path_factory) -> Iterator[NginxUnderPath]:
    if not NGINX.exists():
        message = "Debian's nginx is not installed (/usr/sbin/nginx): apt-get install nginx"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    proxy = NginxUnderPath(tmp_path_factory.mktemp("nginx"), prefixed_app.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def tracking(nginx, monkeypatch):
    """The real mlflow client, given only the public URL with its path."""
    import mlflow

    uri = f"{nginx.url}{PREFIX}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    if mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def seeded_run(tracking) -> SeededRun:
    """As test_browser.py seeds it, through nginx."""
    return seed_run(tracking, unique("under-a-path"))


def test_the_mlflow_client_works_through_the_path(tracking, nginx, prefixed_app, tmp_path):
    import mlflow

    payload = os.urandom(3 * 1024 * 1024)  # several reads and writes of the streamed path
    (tmp_path / "weights.bin").write_bytes(payload)
    experiment_id = tracking.create_experiment(unique("client-under-a-path"))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({"lr": "0.01", "layers": "3"})
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_artifact(str(tmp_path / "weights.bin"), artifact_path="model")
        mlflow.log_text("notes under a path", "notes.txt")

    fetched = tracking.get_run(run.info.run_id)
    assert fetched.data.params == {"lr": "0.01", "layers": "3"}
    assert [m.value for m in tracking.get_metric_history(run.info.run_id, "loss")] == [1.0, 0.5, 1.0 / 3]
    assert [r.info.run_id for r in mlflow.search_runs([experiment_id], output_format="list")] == [run.info.run_id]
    downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "down")))
    assert (downloaded / "model" / "weights.bin").read_bytes() == payload
    assert (downloaded / "notes.txt").read_text() == "notes under a path"

    # Every call went through the path, and the artifact landed in the app's own store.
    assert all(path.startswith(f"{PREFIX}/") for path in nginx.access_log_paths())
    assert any(path.startswith(f"{PREFIX}/api/2.0/mlflow-artifacts/artifacts/") for path in nginx.access_log_paths())
    assert [p.read_bytes() == payload for p in (prefixed_app.workdir / "data" / "artifacts").rglob("weights.bin")] == [True]


def test_health_metrics_and_redirects_under_the_path(nginx, prefixed_app, seeded_run):
    with httpx.Client(base_url=nginx.url, timeout=30, follow_redirects=False) as http:
        health = http.get(f"{PREFIX}/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        metrics = http.get(f"{PREFIX}/metrics")
        assert metrics.status_code == 200
        # Route labels are MLflow's own templates, without the prefix.
        assert 'route="/api/2.0/mlflow/experiments/create"' in metrics.text
        # The UI's artifact URL, relative to the page: get-artifact under the path.
        artifact = http.get(f"{PREFIX}/get-artifact", params={"path": ARTIFACT_PATH, "run_uuid": seeded_run.run_id})
        assert artifact.status_code == 200 and artifact.text == ARTIFACT_TEXT
        # The path without its slash: nginx sends it to /mlflow/ itself, and so does the app when reached directly.
        assert urlsplit(http.get(PREFIX).headers["location"]).path == f"{PREFIX}/"
    with httpx.Client(base_url=prefixed_app.url, timeout=30, follow_redirects=False) as direct:
        assert direct.get(PREFIX, params={"a": "1"}).headers["location"] == f"{PREFIX}/?a=1"
        outside = direct.get("/api/2.0/mlflow/experiments/search")
        assert outside.status_code == 404 and outside.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert PREFIX in outside.json()["message"]
        assert direct.get("/health").status_code == 200  # probes that reach the app directly


def test_the_ui_works_through_the_path(nginx, seeded_run, tmp_path):
    origin = nginx.url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            traffic = Traffic(origin)
            traffic.watch(page)
            ui = Ui(page, f"{origin}{PREFIX}", traffic)  # the UI at http://host/mlflow/#/…

            check_experiment_list(ui, seeded_run)
            check_run_overview(ui, seeded_run, tmp_path / "run-page.png")
            check_artifact_preview(ui)
            # A write from the page, relative to it: under the path, with the page's Origin.
            answer = ui.post_json("ajax-api/2.0/mlflow/experiments/create", {"name": unique("from-the-browser")})
            assert answer["status"] == 200, answer
        finally:
            browser.close()

    assert traffic.failures == []
    assert traffic.foreign_requests() == []
    paths = [(method, urlsplit(url).path, status) for method, url, status in traffic.responses]
    assert [answer for answer in paths if answer[2] >= 400 and answer not in EXPECTED_MLFLOW_ANSWERS] == []
    # Everything the UI asked for (its files, the API, artifacts) was under the path.
    assert [path for _, path, _ in paths if not path.startswith(f"{PREFIX}/")] == []
    assert any(path.startswith(f"{PREFIX}/static-files/static/js/") for _, path, _ in paths)
    assert any(path == f"{PREFIX}/get-artifact" or path.startswith(f"{PREFIX}/ajax-api/") for _, path, _ in paths)
