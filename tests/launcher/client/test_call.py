"""`mlflow-app call` (launcher/client/call.py): arguments, where the token goes, output and exit codes."""

from __future__ import annotations

import io
import json
import os

import pytest
from click.testing import CliRunner

from launcher.cli import main
from launcher.client.app_token import TOKEN_URLS_ENV, AppTokenError, OtherWorkspace, TokenTargets
from launcher.client.call import Answer, Call, CallError, authorize, build_call
from tests.launcher.client.fake_token import FAKE_TOKEN, FakeToken
from tests.launcher.client.recording_server import RecordingServer
from tests.standin.workspace import WORKSPACE_ID, StandinWorkspace

APP = f"https://mlflow-{WORKSPACE_ID}.aws.databricksapps.com"


# --- arguments ----------------------------------------------------------------------------------


def test_get_by_default_post_with_json():
    assert build_call(f"{APP}/api/2.0/mlflow/experiments/search", None, None, None) == Call(f"{APP}/api/2.0/mlflow/experiments/search", "GET")
    posted = build_call(f"{APP}/x", None, '{"max_results": 5}', None)
    assert (posted.method, posted.body, posted.content, posted.headers) == ("POST", {"max_results": 5}, b'{"max_results": 5}', {"Content-Type": "application/json"})


def test_json_in_the_method_place_is_a_post():
    call = build_call(f"{APP}/x", '{"name": "e"}', None, None)
    assert (call.method, call.body) == ("POST", {"name": "e"})


def test_methods_are_case_insensitive_and_checked():
    assert build_call(f"{APP}/x", "delete", "{}", None).method == "DELETE"
    with pytest.raises(CallError, match="METHOD: 'FETCH' is not one of GET, HEAD, POST"):
        build_call(f"{APP}/x", "FETCH", None, None)


def test_get_sends_json_fields_as_query_parameters_like_the_mlflow_client():
    call = build_call(f"{APP}/x", "GET", '{"experiment_ids": ["1", "2"], "max_results": 5, "flag": true}', None)
    assert call.params == [("experiment_ids", "1"), ("experiment_ids", "2"), ("max_results", "5"), ("flag", "true")]
    assert call.content is None and "Content-Type" not in call.headers
    with pytest.raises(CallError, match="'filter' holds an object"):
        build_call(f"{APP}/x", "GET", '{"filter": {"a": 1}}', None).params


def test_json_from_a_file_and_from_stdin(tmp_path, monkeypatch):
    body = tmp_path / "body.json"
    body.write_text('{"name": "from-file"}')
    assert build_call(f"{APP}/x", "POST", f"@{body}", None).body == {"name": "from-file"}
    monkeypatch.setattr("sys.stdin", io.StringIO('{"name": "from-stdin"}'))
    assert build_call(f"{APP}/x", None, "@-", None).body == {"name": "from-stdin"}


def test_bad_json_and_missing_files_are_one_line():
    with pytest.raises(CallError, match=r"JSON: JSON is not valid JSON \(Expecting property name enclosed in double quotes at line 1, column 2\)"):
        build_call(f"{APP}/x", "POST", "{name: 1}", None)
    with pytest.raises(CallError, match="JSON: cannot read /nonexistent/body.json"):
        build_call(f"{APP}/x", "POST", "@/nonexistent/body.json", None)


def test_a_path_is_joined_to_the_app_url_prefix_included():
    assert build_call("/api/2.0/mlflow/runs/get", None, None, f"{APP}/").url == f"{APP}/api/2.0/mlflow/runs/get"
    assert build_call("api/x", None, None, "https://mlflow.example.com/team-a").url == "https://mlflow.example.com/team-a/api/x"
    with pytest.raises(CallError, match="is a path; give the app's URL with --app-url"):
        build_call("/api/x", None, None, None)
    with pytest.raises(CallError, match="--app-url: 'databricks' is not an http"):
        build_call("/api/x", None, None, "databricks")
    with pytest.raises(CallError, match="neither an http"):
        build_call("ftp://host/x", None, None, APP)


def test_headers_are_name_colon_value():
    assert build_call(f"{APP}/x", None, None, None, ("X-A: 1", "X-B:two words")).headers == {"X-A": "1", "X-B": "two words"}
    with pytest.raises(CallError, match="--header: 'X-A' is not 'Name: value'"):
        build_call(f"{APP}/x", None, None, None, ("X-A",))


# --- where the token goes -----------------------------------------------------------------------


def test_the_token_goes_to_an_apps_url_pinned_to_its_workspace():
    token = FakeToken()
    call, note = authorize(build_call(f"{APP}/api/x", None, None, None), token, TokenTargets())
    assert call.headers == {"Authorization": f"Bearer {FAKE_TOKEN}"} and note is None
    assert token.workspace_ids == [WORKSPACE_ID]


def test_an_app_of_another_workspace_is_called_without_the_token_and_a_note():
    token = FakeToken(OtherWorkspace("the app belongs to workspace 99, and the Databricks credentials (https://dbc-1.cloud.databricks.com) to workspace 1"))
    call, note = authorize(build_call("https://mlflow-99.aws.databricksapps.com/api/x", None, None, None), token, TokenTargets())
    assert "Authorization" not in call.headers
    assert note == (
        "no Databricks token sent to https://mlflow-99.aws.databricksapps.com: the app belongs to workspace 99, and the Databricks "
        f"credentials (https://dbc-1.cloud.databricks.com) to workspace 1; list its URL in {TOKEN_URLS_ENV} to send one anyway."
    )


def test_other_urls_get_no_token_and_a_note():
    token = FakeToken()
    call, note = authorize(build_call("https://dbc-1.cloud.databricks.com/api/x?q=secret", None, None, None), token, TokenTargets())
    assert "Authorization" not in call.headers and token.calls == 0
    assert note == (
        "no Databricks token sent: https://dbc-1.cloud.databricks.com is not a Databricks Apps URL "
        f"(https://<app>-<workspace id>.<region>.databricksapps.com) and not under {TOKEN_URLS_ENV}."
    )


def test_an_authorization_header_of_the_users_wins():
    token = FakeToken()
    call, note = authorize(build_call(f"{APP}/x", None, None, None, ("authorization: Bearer mine",)), token, TokenTargets())
    assert call.headers == {"authorization": "Bearer mine"} and token.calls == 0 and note is None


def test_no_token_is_an_error_not_a_call_without_it():
    with pytest.raises(CallError, match="No Databricks credentials"):
        authorize(build_call(f"{APP}/x", None, None, None), FakeToken(AppTokenError("No Databricks credentials found …")), TokenTargets())


# --- output -------------------------------------------------------------------------------------


def test_json_answers_are_indented_and_others_pass_as_they_came():
    assert Answer(200, "OK", "application/json", b'{"a":[1]}', None).printable_body() == b'{\n  "a": [\n    1\n  ]\n}\n'
    assert Answer(200, "OK", "text/plain", b"plain\x00bytes", None).printable_body() == b"plain\x00bytes"
    assert Answer(502, "Bad Gateway", "application/json", b"not json", None).printable_body() == b"not json"
    assert Answer(302, "Found", "", b"", "https://login.example.com/").status_line() == "HTTP 302 Found -> https://login.example.com/"


# --- the command, against a recording server and the stand-in workspace -------------------------


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("DATABRICKS_") or name.startswith("MLFLOW_TRACKING_") or name == TOKEN_URLS_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


@pytest.fixture
def workspace(tmp_path, env):
    with StandinWorkspace(tmp_path / "workspace", with_mlflow=False) as running:
        for name, value in running.oauth_env().items():
            env.setenv(name, value)
        yield running


def invoke(*args: str):
    return CliRunner().invoke(main, ["call", *args], catch_exceptions=False)


def test_the_command_sends_the_issued_token_and_prints_body_and_status(workspace, env):
    with RecordingServer() as app:
        env.setenv(TOKEN_URLS_ENV, app.url)
        app.answer_json(200, {"experiments": [{"experiment_id": "0", "name": "Default"}]})
        result = invoke(f"{app.url}/api/2.0/mlflow/experiments/search", "POST", '{"max_results": 5}')
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"experiments": [{"experiment_id": "0", "name": "Default"}]}
    assert result.stderr == "HTTP 200 OK\n"
    [sent] = app.requests
    assert (sent.method, sent.path, json.loads(sent.body)) == ("POST", "/api/2.0/mlflow/experiments/search", {"max_results": 5})
    token = sent.headers["authorization"].removeprefix("Bearer ")
    assert token in workspace.issued_tokens
    assert token not in result.stdout + result.stderr


def test_a_relative_path_uses_the_tracking_uri(workspace, env):
    with RecordingServer() as app:
        env.setenv(TOKEN_URLS_ENV, app.url)
        env.setenv("MLFLOW_TRACKING_URI", app.url + "/")
        result = invoke("/api/2.0/mlflow/experiments/get-by-name", "GET", '{"experiment_name": "Default"}')
    assert result.exit_code == 0
    assert app.requests[0].path == "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"


def test_http_errors_exit_1_with_the_body_on_stdout(workspace, env):
    with RecordingServer() as app:
        env.setenv(TOKEN_URLS_ENV, app.url)
        app.answer_json(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "No experiment"})
        result = invoke(f"{app.url}/api/2.0/mlflow/experiments/get")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert result.stderr == "HTTP 404 Not Found\n"


def test_a_slow_app_is_a_timeout_line(workspace, env):
    with RecordingServer(delay=3) as app:
        env.setenv(TOKEN_URLS_ENV, app.url)
        result = invoke(f"{app.url}/api/x", "--timeout", "0.5")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {app.url} did not answer within 0.5 s (--timeout).\n"


def test_without_credentials_nothing_is_sent(env):
    with RecordingServer() as app:
        env.setenv(TOKEN_URLS_ENV, app.url)
        result = invoke(f"{app.url}/api/x")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: No Databricks credentials found to call the app: set DATABRICKS_HOST")
    assert len(result.stderr.splitlines()) == 1 and app.requests == []


def test_a_profile_chooses_the_credentials(workspace, env, tmp_path):
    config = tmp_path / "databrickscfg"
    config.write_text(f"[standin]\nhost = {workspace.url}\nclient_id = {workspace.client_id}\nclient_secret = {workspace.client_secret}\n")
    for name in ("DATABRICKS_HOST", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        env.delenv(name)
    env.setenv("DATABRICKS_CONFIG_FILE", str(config))
    with RecordingServer() as app:
        env.setenv(TOKEN_URLS_ENV, app.url)
        result = invoke(f"{app.url}/api/x", "--profile", "standin")
    assert result.exit_code == 0, result.stderr
    assert app.requests[0].headers["authorization"].removeprefix("Bearer ") in workspace.issued_tokens


def test_a_personal_access_token_is_one_line_saying_what_to_use_and_nothing_is_sent(workspace, env):
    for name in ("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        env.delenv(name)
    env.setenv("DATABRICKS_TOKEN", "dapi0123456789abcdef0123456789abcdef")
    with RecordingServer() as app:
        env.setenv(TOKEN_URLS_ENV, app.url)
        result = invoke(f"{app.url}/api/x")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: the app accepts Databricks OAuth tokens only, and these Databricks credentials give a personal access token")
    assert len(result.stderr.splitlines()) == 1 and "dapi0123" not in result.stderr
    assert app.requests == []
