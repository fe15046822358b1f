"""Databricks mode end to end: the real app as Databricks Apps runs it (DATABRICKS_APP_NAME, the
platform's OAuth machine-to-machine credentials) against the stand-in workspace, driven by the real
mlflow client pointed at the app. What the client does must land in the workspace's MLflow, which
only the app can reach with credentials, and no secret may show in anything the app prints or
answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import pytest
from mlflow.entities import Metric, Param, RunTag

from tests.app_process import APP_COMMAND, AppProcess, free_port
from tests.e2e.conftest import VOLUME, platform_env
from tests.standin.workspace import MLFLOW_API_PREFIXES

pytestmark = pytest.mark.e2e

START_FAILS_WITHIN_SECONDS = 60.0


@pytest.fixture(scope="module", autouse=True)
def module_start(standin_workspace) -> int:
    """Where this module's calls begin in the shared stand-in's log: other modules provoke refusals on purpose."""
    return len(standin_workspace.requests)


def log_entries(app: AppProcess) -> list[dict]:
    return [json.loads(line) for line in app.log_text().splitlines() if line.strip()]


# --- start -------------------------------------------------------------------------------------


def test_signs_in_as_the_service_principal_and_logs_json(databricks_app, standin_workspace):
    entries = log_entries(databricks_app)  # every line is JSON: the default on Databricks Apps
    messages = [e["message"] for e in entries]
    assert f"workspace {standin_workspace.url}: signed in as {standin_workspace.client_id} (oauth-m2m)" in messages
    started = next(m for m in messages if m.startswith("started MLflow"))
    assert "--backend-store-uri databricks --registry-store-uri databricks-uc" in started
    # The volume resource's path, as MLflow reaches it, and our adaptations loaded (launcher/inside_mlflow/workspace_plugin/).
    assert f"--artifacts-destination dbfs:{VOLUME}/mlflow" in started and "--app-name mlflow-app-workspace" in started
    assert not any("artifacts go to" in m for m in messages)


def test_the_child_gets_the_credentials_and_bounded_retries(databricks_app, standin_workspace):
    """MLflow signs in itself with the platform's variables; our retry, timeout and SDK profile settings ride along."""
    environ = open(f"/proc/{databricks_app.mlflow_pids()[0]}/environ", "rb").read().decode()
    child = dict(item.split("=", 1) for item in environ.split("\0") if "=" in item)
    assert child["DATABRICKS_HOST"] == standin_workspace.url
    assert child["DATABRICKS_CLIENT_ID"] == standin_workspace.client_id
    assert child["DATABRICKS_CLIENT_SECRET"] == standin_workspace.client_secret
    assert child["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert child["MLFLOW_DATABRICKS_ENDPOINT_HTTP_RETRY_TIMEOUT"] == "10"
    assert child["DATABRICKS_CONFIG_PROFILE"] == "mlflow-app"
    assert "retry_timeout_seconds = 10" in open(child["DATABRICKS_CONFIG_FILE"]).read()


# --- tracking through the app --------------------------------------------------------------------


def test_experiments(client, backing):
    experiment_id = client.create_experiment("/Users/e2e/experiments", tags={"team": "search"})
    client.set_experiment_tag(experiment_id, "stage", "draft")
    client.rename_experiment(experiment_id, "/Users/e2e/experiments-renamed")
    found = client.search_experiments(filter_string="name LIKE '/Users/e2e/experiments%'")
    assert [e.experiment_id for e in found] == [experiment_id]
    assert found[0].tags["stage"] == "draft" and found[0].tags["team"] == "search"

    landed = backing.get("experiments/get", experiment_id=experiment_id)["experiment"]
    assert landed["name"] == "/Users/e2e/experiments-renamed"
    assert {t["key"]: t["value"] for t in landed["tags"]} == {"team": "search", "stage": "draft"}
    # Not the workspace's dbfs:/databricks/mlflow-tracking/<id>: a location the app serves (launcher/inside_mlflow/workspace_plugin/).
    assert landed["artifact_location"].startswith("mlflow-artifacts:/experiments/")


def test_runs_params_metrics_and_search(client, backing):
    experiment_id = client.create_experiment("/Users/e2e/runs")
    run = client.create_run(experiment_id, run_name="first", tags={"kind": "e2e"})
    run_id = run.info.run_id
    client.log_param(run_id, "lr", "0.01")
    for step, loss in enumerate([0.9, 0.5, 0.3]):
        client.log_metric(run_id, "loss", loss, step=step, timestamp=1_700_000_000_000 + step)
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric("acc", 0.7 + i / 100, now, i) for i in range(5)],
        params=[Param("layers", "3"), Param("optimizer", "adam")],
        tags=[RunTag("phase", "train")],
    )
    client.set_terminated(run_id)
    other = client.create_run(experiment_id, run_name="second")
    client.log_metric(other.info.run_id, "loss", 0.95)

    found = client.search_runs([experiment_id], filter_string="metrics.loss < 0.5 and params.optimizer = 'adam'")
    assert [r.info.run_id for r in found] == [run_id]
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [0.9, 0.5, 0.3]

    landed = backing.get("runs/get", run_id=run_id)["run"]
    assert landed["info"]["status"] == "FINISHED"
    assert {p["key"]: p["value"] for p in landed["data"]["params"]} == {"lr": "0.01", "layers": "3", "optimizer": "adam"}
    assert {t["key"]: t["value"] for t in landed["data"]["tags"]}.items() >= {"kind": "e2e", "phase": "train"}.items()
    history = backing.get("metrics/get-history", run_id=run_id, metric_key="loss")["metrics"]
    assert [(m["step"], m["value"]) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.3)]
    assert len(backing.get("metrics/get-history", run_id=run_id, metric_key="acc")["metrics"]) == 5
    searched = backing.post("runs/search", {"experiment_ids": [experiment_id]})["runs"]
    assert len(searched) == 2


def test_every_workspace_call_carried_an_issued_token(module_start, client, standin_workspace):
    client.search_experiments(max_results=1)
    calls = standin_workspace.mlflow_calls()
    assert calls, "nothing reached the workspace"
    assert {r.credential for r in calls} == {"oauth"}
    ours = [r for r in standin_workspace.requests[module_start:] if r.path.startswith(MLFLOW_API_PREFIXES)]
    assert ours and all(r.status < 400 or r.status == 404 for r in ours), [r for r in ours if r.status >= 400]
    tokens = [r for r in standin_workspace.requests if r.path == "/oidc/v1/token"]
    assert tokens and all(r.status == 200 for r in tokens)


# --- a failing workspace holds no request for minutes ---------------------------------------------


def test_the_public_scheme_is_https_where_the_platform_ends_tls(databricks_app):
    # The platform's proxy ends TLS and sends no X-Forwarded-Proto: the UI's page is
    # https://<app host>, and its writes must pass the same-origin check; an http:// page on the
    # same host is another origin.
    host = "mlflow-app-1234.aws.databricksapps.com"
    url = f"{databricks_app.url}/ajax-api/2.0/mlflow/experiments/search"
    body = {"max_results": 1}
    same = httpx.post(url, json=body, headers={"Host": host, "X-Forwarded-Host": host, "Origin": f"https://{host}"}, timeout=60)
    assert same.status_code == 200, same.text
    other = httpx.post(url, json=body, headers={"Host": host, "X-Forwarded-Host": host, "Origin": f"http://{host}"}, timeout=60)
    assert other.status_code == 403


@pytest.mark.parametrize(("fault", "value"), [("mlflow_status", 503), ("mlflow_delay", 120.0)])
def test_a_failing_workspace_fails_fast(databricks_app, standin_workspace, fault, value):
    """MLflow's defaults held such a call for 4 to 8 minutes; the front would have answered 504 at
    60 s and left MLflow's worker busy. Now MLflow itself gives up well within the upstream timeout."""
    setattr(standin_workspace.faults, fault, value)
    started = time.monotonic()
    try:
        response = httpx.get(f"{databricks_app.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"}, timeout=120)
    finally:
        setattr(standin_workspace.faults, fault, type(value)())
    elapsed = time.monotonic() - started
    assert 500 <= response.status_code < 600 and response.status_code != 504, response.text
    assert elapsed < 30, f"{fault}: {elapsed:.0f} s"


# --- secrets -----------------------------------------------------------------------------------


def test_no_secret_in_log_health_or_metrics(databricks_app, standin_workspace, client):
    client.search_experiments(max_results=1)  # at least one token in use by now
    secrets = [standin_workspace.client_secret, *standin_workspace.issued_tokens]
    assert len(secrets) >= 3  # the check's token and MLflow's own
    health = httpx.get(f"{databricks_app.url}/health", timeout=10).text
    metrics = httpx.get(f"{databricks_app.url}/metrics", timeout=10).text
    for where, text in (("log", databricks_app.log_text()), ("/health", health), ("/metrics", metrics)):
        for secret in secrets:
            assert secret not in text, f"a credential in {where}"
            assert secret.split(".", 1)[-1] not in text, f"a token's random part in {where}"


# --- refusing to start -------------------------------------------------------------------------


def test_start_refused_in_one_line(standin_workspace, tmp_path):
    """A wrong secret, an unreachable host, a missing variable: one line each, before MLflow starts."""
    cases = {
        "wrong-secret": {"DATABRICKS_CLIENT_SECRET": "doseWRONGsecret9e8d7c6b5a4f3"},
        "unreachable": {"DATABRICKS_HOST": f"http://127.0.0.1:{free_port()}"},
        "no-secret": {"DATABRICKS_CLIENT_SECRET": ""},
    }
    processes = {}
    for name, overrides in cases.items():
        args = ["--host", "127.0.0.1", "--port", str(free_port()), "--data-dir", str(tmp_path / name)]
        processes[name] = subprocess.Popen(
            [*APP_COMMAND, *args], env=platform_env(standin_workspace, **overrides), cwd=tmp_path,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
    results = {}
    try:
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=START_FAILS_WITHIN_SECONDS)
            results[name] = (process.returncode, stdout, stderr)
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)

    expected = {
        "wrong-secret": f"Error: DATABRICKS_CLIENT_SECRET: {standin_workspace.url} refused the credentials (invalid_client: Client authentication failed); check DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET.",
        "unreachable": "Error: DATABRICKS_HOST: cannot reach http://127.0.0.1:",
        "no-secret": "Error: DATABRICKS_CLIENT_SECRET is not set but DATABRICKS_CLIENT_ID is",
    }
    for name, (code, stdout, stderr) in results.items():
        assert code == 1, (name, stdout, stderr)
        assert stderr.strip().count("\n") == 0 and stderr.startswith(expected[name]), (name, stderr)
        assert "Traceback" not in stdout + stderr
        assert "started MLflow" not in stdout and "listening on" not in stdout, (name, stdout)
        assert "doseWRONGsecret" not in stdout + stderr and standin_workspace.client_secret not in stdout + stderr
