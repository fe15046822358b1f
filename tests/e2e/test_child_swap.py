"""MLflow replaced beside itself under a steady load of the real mlflow client, its retries off:
a SIGHUP reload and a memory-ceiling replacement fail no request and leave no process behind; a
SIGKILL of the child still restarts it (some 503s, as before).

Each scenario prints its measurements (signal to old child gone, failed requests, the MLflow
processes' memory before and during the swap) as one `swap-measurement` JSON line."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.app_process import AppProcess, resident_bytes

pytestmark = pytest.mark.e2e
PROBE_INTERVAL = "1"  # liveness and memory checked every second
ARTIFACT_BYTES = 8 * 1024 * 1024  # a download long enough to be in flight during a swap


class Load:
    """A few threads of the real mlflow client: logging metrics and params, searching, downloading an
    artifact; every call that raises is a failed request (the client does not retry)."""

    def __init__(self, url: str, workdir: Path, threads: int = 3):
        import mlflow

        self.url = url
        self.client = mlflow.MlflowClient(tracking_uri=url)
        experiment = self.client.create_experiment(f"swap-{time.monotonic_ns()}")
        self.experiment_id = experiment
        self.run_id = self.client.create_run(experiment).info.run_id
        artifact = workdir / "blob.bin"
        artifact.write_bytes(os.urandom(ARTIFACT_BYTES))
        self.client.log_artifact(self.run_id, str(artifact))
        self.workdir = workdir
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._writer, args=(i,), daemon=True) for i in range(threads)]
        self.threads.append(threading.Thread(target=self._downloader, daemon=True))

    def _count(self, error: BaseException | None = None) -> None:
        with self.lock:
            self.calls += 1
            if error is not None:
                self.failures.append(f"{type(error).__name__}: {str(error)[:300]}")

    def _call(self, function, *args, **kwargs) -> None:
        try:
            function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (any failure of the client counts)
            self._count(exc)
        else:
            self._count()

    def _writer(self, index: int) -> None:
        step = 0
        while not self.stop.is_set():
            self._call(self.client.log_metric, self.run_id, f"m{index}", step * 0.5, step=step)
            self._call(self.client.log_param, self.run_id, f"p{index}-{step}", str(step))
            self._call(self.client.search_runs, [self.experiment_id], max_results=50)
            step += 1

    def _downloader(self) -> None:
        target = self.workdir / "downloads"
        while not self.stop.is_set():
            self._call(self.client.download_artifacts, self.run_id, "blob.bin", str(target))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)

    def wait_for_calls(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        target = self.calls + count
        while self.calls < target:
            assert time.monotonic() < deadline, f"the load made {self.calls} calls, fewer than {target}"
            time.sleep(0.1)


@pytest.fixture
def no_client_retries(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def start_app(workdir: Path, *args: str) -> AppProcess:
    return AppProcess(workdir, "--mlflow-probe-interval", PROBE_INTERVAL, *args).start().wait_ready()


def mlflow_tree(app: AppProcess) -> dict[int, psutil.Process]:
    """Every process below the front: each MLflow child and its workers."""
    return {p.pid: p for p in app.tree()[1:]}


def serving_child(app: AppProcess) -> psutil.Process:
    children = psutil.Process(app.process.pid).children()
    assert len(children) == 1, f"one MLflow child expected, found {children}"
    return children[0]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def in_group(group: int) -> list[int]:
    """Processes still in a process group (a worker re-parented after its parent died keeps it)."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group and not gone(process.pid):
                found.append(process.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return found


def metric(app: AppProcess, name: str, labels: str = "") -> float:
    text = httpx.get(f"{app.url}/metrics", timeout=10).text
    match = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, flags=re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def watch_swap(app: AppProcess, old: psutil.Process, reason: str, timeout: float = 240) -> dict:
    """Waits until the old child's whole tree is gone and the replacement serves; returns measurements."""
    old_tree = [old, *old.children(recursive=True)]
    started = time.monotonic()
    before = resident_bytes(mlflow_tree(app).values())
    peak = before
    saw_replacing = False
    while not all(gone(p.pid) for p in old_tree):
        assert time.monotonic() - started < timeout, f"the old MLflow (pid {old.pid}) is still running:\n{app.log_text()[-3000:]}"
        peak = max(peak, resident_bytes(mlflow_tree(app).values()))
        health = app.health()
        assert health is not None and health.status_code == 200, health and health.text  # never unavailable
        saw_replacing = saw_replacing or health.json()["mlflow"].get("replacing") == reason
        time.sleep(0.2)
    took = time.monotonic() - started
    assert in_group(old.pid) == [], "a process of the old MLflow's group survived it"
    new = serving_child(app)
    assert new.pid != old.pid
    app.wait_until(lambda: metric(app, "mlflow_app_mlflow_replacing") == 0, 30, "the replacement to finish")
    return {"reason": reason, "seconds_to_old_gone": round(took, 1), "mlflow_rss_before_mib": before >> 20, "mlflow_rss_peak_mib": peak >> 20, "saw_replacing": saw_replacing}


def report(measurement: dict, load: Load) -> None:
    measurement |= {"calls": load.calls, "failed": len(load.failures)}
    print("swap-measurement", json.dumps(measurement))


@pytest.mark.parametrize(
    "options",
    [(), ("--workers", "2", "--no-mlflow-unix-socket"), ("on-postgresql",)],
    ids=["one-process-on-a-socket", "mlflow-server-with-workers-on-tcp", "on-postgresql"],
)
def test_a_sighup_reload_replaces_mlflow_without_failing_a_request(tmp_path, no_client_retries, options, request):
    on_postgresql = options == ("on-postgresql",)
    if on_postgresql:  # the database check runs before the new MLflow, beside the serving one
        postgres = request.getfixturevalue("postgres")
        name = f"swap{time.monotonic_ns()}"
        options = ("--backend-store-uri", postgres.create_database(name, name, "swap-pw"))
    app = start_app(tmp_path / "app", *options)
    try:
        with Load(app.url, tmp_path) as load:
            load.wait_for_calls(60)
            old = serving_child(app)
            os.kill(app.process.pid, signal.SIGHUP)
            measurement = watch_swap(app, old, "reload")
            load.wait_for_calls(60)  # the new MLflow serves the load
        report(measurement, load)
        assert load.failures == []
        assert metric(app, "mlflow_app_mlflow_replacements_total", '{reason="reload"}') == 1
        health = app.health().json()["mlflow"]
        assert health["restarts"] == 0 and health["state"] == "ready"
        assert "MLflow's replacement (reload) took" in app.log_text()
        if on_postgresql:  # checked (schema current, nothing migrated) before each of the two MLflows
            assert app.log_text().count("before MLflow starts") == 2
    finally:
        tree = list(mlflow_tree(app))
        app.stop()
        assert [pid for pid in tree if not gone(pid)] == []


def test_mlflow_above_its_memory_ceiling_is_replaced_without_failing_a_request(tmp_path, no_client_retries):
    # The ceiling: a little above what a fresh MLflow takes once it has served some requests, so the
    # steady load takes the child past it (MLflow grows as it serves) and a new one starts below it.
    probe = start_app(tmp_path / "probe")
    try:
        with Load(probe.url, tmp_path / "probe") as load:
            load.wait_for_calls(30)
            warm = resident_bytes(mlflow_tree(probe).values())
    finally:
        probe.stop()
    ceiling = warm + (8 << 20)
    app = start_app(tmp_path / "app", "--mlflow-max-memory", str(ceiling))
    try:
        with Load(app.url, tmp_path) as load:
            old = serving_child(app)
            app.wait_until(lambda: metric(app, "mlflow_app_mlflow_replacing") == 1 or gone(old.pid), 600, "the memory ceiling to be passed")
            measurement = watch_swap(app, old, "memory")
            measurement["ceiling_mib"] = ceiling >> 20
            load.wait_for_calls(30)
        report(measurement, load)
        assert load.failures == []
        assert metric(app, "mlflow_app_mlflow_replacements_total", '{reason="memory"}') >= 1
        assert "above --mlflow-max-memory" in app.log_text()
    finally:
        tree = list(mlflow_tree(app))
        app.stop()
        assert [pid for pid in tree if not gone(pid)] == []


def test_a_killed_mlflow_is_still_restarted(tmp_path, no_client_retries):
    app = start_app(tmp_path / "app")
    try:
        with Load(app.url, tmp_path) as load:
            load.wait_for_calls(30)
            old = serving_child(app)
            old_tree = [old, *old.children(recursive=True)]
            killed_at = time.monotonic()
            os.killpg(old.pid, signal.SIGKILL)
            app.wait_until(lambda: all(gone(p.pid) for p in old_tree), 30, "the killed MLflow gone")

            def restarted() -> bool:
                health = app.health()
                return health is not None and health.status_code == 200 and health.json()["mlflow"]["restarts"] == 1

            app.wait_until(restarted, 240, "MLflow restarted and ready")
            back = time.monotonic() - killed_at
            load.wait_for_calls(10)  # calls sent while it was down have come back
            failed_while_down = len(load.failures)
            load.wait_for_calls(30)
        report({"reason": "sigkill", "seconds_to_ready_again": round(back, 1)}, load)
        assert failed_while_down > 0  # nothing served while MLflow was down: the client saw 503s, as before
        assert len(load.failures) == failed_while_down  # and none once it was back
        health = app.health().json()["mlflow"]
        assert health["restarts"] == 1 and health["last_exit_code"] == -signal.SIGKILL
        assert metric(app, "mlflow_app_mlflow_replacements_total", '{reason="reload"}') == 0
        assert serving_child(app).pid != old.pid
    finally:
        tree = list(mlflow_tree(app))
        app.stop()
        assert [pid for pid in tree if not gone(pid)] == []
