"""Secrets never leak: known credentials in the environment and in requests, every kind of answer,
then every byte the app printed or answered is searched for them."""

from __future__ import annotations

import base64
import http.client
import re
import time
import urllib.parse
import uuid

import httpx
import psutil
import pytest

from tests.e2e.conftest import AUTH_TOKEN, SECRET_ENV

pytestmark = pytest.mark.e2e

USER_ACCESS_TOKEN = "eyJSECRETuseraccess.9a7b3c1d5e.f0e2d4c6b8"  # a platform user's X-Forwarded-Access-Token
COOKIE_SECRET = "ckSECRETsession4d2f8a6c0e1b"
SECRETS = {**SECRET_ENV, "X-Forwarded-Access-Token": USER_ACCESS_TOKEN, "Cookie": COOKIE_SECRET}


def forms(secret: str) -> set[str]:
    """The ways a value can show up: as is, URL-encoded, inside Basic credentials, in a repr."""
    return {
        secret,
        urllib.parse.quote(secret, safe=""),
        base64.b64encode(f"user:{secret}".encode()).decode(),
        base64.b64encode(secret.encode()).decode().rstrip("="),
    }


class Recorder:
    """Sends requests to the app and keeps every status line, header and body it got back."""

    def __init__(self, url: str):
        self.url = url
        self.answers: list[tuple[str, int, str, bytes]] = []  # (what, status, headers, body)
        self.client = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {AUTH_TOKEN}"})

    def keep(self, what: str, response: httpx.Response) -> httpx.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        self.answers.append((what, response.status_code, headers, response.content))
        return response

    def request(self, what: str, method: str, path: str, **kwargs) -> httpx.Response:
        return self.keep(what, self.client.request(method, path, **kwargs))

    def raw(self, what: str, method: str, raw_path: str, headers: dict[str, str] | None = None) -> int:
        """Path sent byte for byte: httpx would normalise `..` away."""
        port = int(self.url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request(method, raw_path, headers={"Authorization": f"Bearer {AUTH_TOKEN}", **(headers or {})})
            response = connection.getresponse()
            body = response.read()
            self.answers.append((what, response.status, str(response.headers), body))
            return response.status
        finally:
            connection.close()


def leaks_in(text: str) -> list[str]:
    return sorted(name for name, secret in SECRETS.items() if any(form in text for form in forms(secret)))


def test_no_secret_appears_in_any_output(secured_app, tmp_path):
    app = secured_app
    r = Recorder(app.url)
    with_secrets = {
        "Authorization": f"Bearer {AUTH_TOKEN}",
        "X-Forwarded-Access-Token": USER_ACCESS_TOKEN,
        "Cookie": f"session={COOKIE_SECRET}; other=1",
        "X-Forwarded-Email": "someone@example.com",
    }
    # Under names that say "secret", and under names that do not (values the app cannot know). Not
    # under names MLflow reads: it echoes a bad `filter` back to its caller, which is no leak.
    query = {
        "token": SECRET_ENV["DATABRICKS_TOKEN"], "q": SECRET_ENV["DATABRICKS_CLIENT_SECRET"],
        "access_token": USER_ACCESS_TOKEN, "ref": USER_ACCESS_TOKEN, "view": COOKIE_SECRET,
    }  # fmt: skip

    # The UI: index, an asset, a 304.
    index = r.request("index", "GET", "/")
    assert index.status_code == 200
    asset = "/" + re.search(r'src="(static-files/static/js/main\.[0-9a-f]+\.js)"', index.text).group(1)
    etag = r.request("asset", "GET", asset).headers["etag"]
    assert r.request("304", "GET", asset, headers={"If-None-Match": etag}).status_code == 304

    # The front's own endpoints.
    assert r.request("health", "GET", "/health").status_code == 200
    metrics = r.request("metrics", "GET", "/metrics")
    assert metrics.status_code == 200 and b"mlflow_app_requests_total" in metrics.content

    # MLflow: success, its own errors, and what the front refuses.
    name = f"secrets-{uuid.uuid4().hex[:8]}"
    created = r.request("api ok", "POST", "/api/2.0/mlflow/experiments/create", json={"name": name}, headers=with_secrets)
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    assert r.request("api 404", "GET", "/api/2.0/mlflow/experiments/get", params={"experiment_id": "987654321"}).status_code == 404
    malformed = r.request("bad json", "POST", "/api/2.0/mlflow/experiments/create", content=b"{not json", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    foreign = r.request("origin", "POST", "/ajax-api/2.0/mlflow/experiments/create", json={"name": name + "x"}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert r.request("host", "GET", "/api/2.0/mlflow/experiments/search", headers={"Host": "attacker.example"}).status_code == 403
    for credentials in (
        f"Bearer {SECRET_ENV['DATABRICKS_TOKEN']}",
        "Basic " + base64.b64encode(f"u:{SECRET_ENV['DATABRICKS_CLIENT_SECRET']}".encode()).decode(),
        f"Bearer {USER_ACCESS_TOKEN}",
    ):
        bad = r.request("bad auth", "GET", "/api/2.0/mlflow/experiments/search", headers={"Authorization": credentials})
        assert bad.status_code == 401
    assert r.raw("traversal", "GET", "/static-files/%2e%2e/%2e%2e/etc/passwd") == 404

    # Secrets in headers and in the query string, to the API, the UI and an asset.
    search = r.request("secrets in query", "GET", "/api/2.0/mlflow/experiments/search", params={"max_results": 1, **query}, headers=with_secrets)
    assert search.status_code in (200, 400), search.text
    r.request("secrets in query (get)", "GET", "/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id, **query}, headers=with_secrets)
    assert r.request("secrets to the ui", "GET", "/", params=query, headers=with_secrets).status_code == 200
    r.request("secrets to an asset", "GET", asset, params=query, headers=with_secrets)
    r.request("secrets to a missing path", "GET", "/no/such/path", params=query, headers=with_secrets)

    # An artifact up and down.
    artifact = f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/secrets-test/notes.txt"
    assert r.request("upload", "PUT", artifact, content=b"hello", headers=with_secrets).status_code == 200
    download = r.request("download", "GET", artifact, params=query, headers=with_secrets)
    assert download.status_code == 200 and download.content == b"hello"

    # Something MLflow logs after it is ready (it writes no access lines): a request it fails on,
    # its traceback then in /health's last_output below.
    failing = r.request("an error MLflow logs", "POST", "/api/2.0/mlflow/experiments/create", content=b"[]", params=query, headers={**with_secrets, "Content-Type": "application/json"})
    assert failing.status_code >= 400
    time.sleep(1)  # its lines reach the front

    # MLflow down: 503 from the front, then back.
    mlflow_cli = psutil.Process(app.mlflow_pids()[0])
    mlflow_cli.kill()
    app.wait_until(lambda: app.health().status_code == 503, 30, "/health to report MLflow down")
    r.keep("health while down, anonymous", app.health())
    with_output = r.request("health while down, with the token", "GET", "/health")
    assert with_output.status_code == 503 and with_output.json()["mlflow"]["last_output"]
    down = r.request("503", "GET", "/api/2.0/mlflow/experiments/search", params=query, headers=with_secrets)
    assert down.status_code == 503, down.text
    app.wait_ready()
    r.request("health after", "GET", "/health")
    r.request("metrics after", "GET", "/metrics")
    time.sleep(1)  # the child's last lines reach the log

    found = {what: leaks_in(f"{status}\n{headers}\n{body.decode('latin-1')}") for what, status, headers, body in r.answers}
    assert {what: names for what, names in found.items() if names} == {}, "secrets in responses"

    log = app.log_text()
    assert leaks_in(log) == [], "secrets in app.log"
    child_lines = [line for line in log.splitlines() if " mlflow | " in line]
    assert child_lines, "MLflow's output should be folded into the log"
    assert leaks_in("\n".join(child_lines)) == []
    masked = [line for line in child_lines if "***" in line]
    print(f"\n{len(r.answers)} answers, {len(log.splitlines())} log lines ({len(child_lines)} from MLflow, {len(masked)} masked)")
    for line in masked:
        print("  masked mlflow line:", line[:200])
