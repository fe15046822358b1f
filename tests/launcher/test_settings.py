"""`Settings` and `validate()`: every refusal is one line naming the option and what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from launcher.settings import (
    Settings,
    SettingsError,
    default_host,
    installed_mlflow_ui_dir,
    split_list,
    uri_scheme,
    validate,
)


@pytest.fixture
def make(tmp_path: Path, ui_dir: Path):
    """Settings that pass validation unless a test overrides something."""

    def make(**overrides) -> Settings:
        return Settings(**{"data_dir": tmp_path / "data", "ui_dir": ui_dir, **overrides})

    return make


def refusal(settings: Settings) -> str:
    with pytest.raises(SettingsError) as caught:
        validate(settings)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    return message


def test_valid_settings_pass(make):
    validate(make())


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_port_out_of_range(make, port):
    message = refusal(make(port=port))
    assert message.startswith("--port:")
    assert str(port) in message and "1-65535" in message


@pytest.mark.parametrize("port", [1, 8000, 65535])
def test_port_in_range(make, port):
    validate(make(port=port))


@pytest.mark.parametrize("port", [-1, 65536])
def test_mlflow_port_out_of_range(make, port):
    message = refusal(make(mlflow_port=port))
    assert message.startswith("--mlflow-port:") and "0 (any free port)" in message


def test_workers_at_least_one(make):
    assert refusal(make(workers=0)).startswith("--workers:")


@pytest.mark.parametrize(
    "overrides",
    [{"upstream_timeout": 0}, {"mlflow_start_timeout": -1}, {"drain_seconds": -0.5}],
)
def test_timeouts(make, overrides):
    assert "--upstream-timeout" in refusal(make(**overrides))


@pytest.mark.parametrize(
    ("option", "field", "uri"),
    [
        ("--backend-store-uri", "backend_store_uri", "foo://x"),
        ("--backend-store-uri", "backend_store_uri", "mongodb://"),
        ("--backend-store-uri", "backend_store_uri", "databricks-uc"),  # a registry, not a tracking store
        ("--backend-store-uri", "backend_store_uri", "s3://bucket/db"),
        ("--registry-store-uri", "registry_store_uri", "redis://h:6379"),
        ("--default-artifact-root", "default_artifact_root", "sqlite:///x.db"),
        ("--artifacts-destination", "artifacts_destination", "ftps://h/x"),
    ],
)
def test_unknown_scheme(make, option, field, uri):
    message = refusal(make(**{field: uri}))
    assert message.startswith(f"{option}: unknown scheme '{uri_scheme(uri)}'")
    assert "use one of" in message and "or a local path" in message
    assert uri in message  # the operator sees what they passed


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///x.db",
        "sqlite:////abs/path/mlflow.db",
        "postgresql://u:p@h/db",
        "postgresql+psycopg://u:p@h/db",
        "mysql+pymysql://u:p@h:3306/db",
        "mssql+pyodbc://u:p@h/db",
        "databricks",
        "databricks://my-profile",
        "file:///x",
        "/var/lib/mlruns",
        "./mlruns",
        "mlruns",
    ],
)
def test_accepted_backend_store_uris(make, uri):
    validate(make(backend_store_uri=uri))


@pytest.mark.parametrize("uri", ["databricks-uc", "databricks-uc://profile", "uc", "databricks", "sqlite:///r.db"])
def test_accepted_registry_store_uris(make, uri):
    validate(make(registry_store_uri=uri))


@pytest.mark.parametrize("uri", ["s3://b/k", "gs://b/k", "wasbs://c@a.blob.core.windows.net/p", "dbfs:/x", "mlflow-artifacts:/", "/srv/artifacts", "file:///x"])
def test_accepted_artifact_uris(make, uri):
    validate(make(default_artifact_root=uri, artifacts_destination=uri))


@pytest.mark.parametrize(
    ("field", "uri"),
    [
        ("backend_store_uri", "mongodb://admin:hunter2secret@db.example.com:27017/mlflow"),
        ("backend_store_uri", "foo://:hunter2secret@h/db"),
        ("backend_store_uri", "mongodb://db.example.com/mlflow?password=hunter2secret"),
        ("backend_store_uri", "postgresql://u:hunter2secret@[broken/db"),  # unparsable, still masked
        ("registry_store_uri", "redis://user:hunter2secret@h:6379/0"),
        ("artifacts_destination", "ftps://user:hunter2secret@h/artifacts"),
    ],
)
def test_password_never_in_message(make, field, uri):
    message = refusal(make(**{field: uri}))
    assert "hunter2secret" not in message
    assert "***" in message


def test_unparsable_uri_is_a_settings_error(make):
    message = refusal(make(backend_store_uri="postgresql://u:p@[::1/db"))
    assert message.startswith("--backend-store-uri:") and "not a valid URI" in message


def test_data_dir_under_a_regular_file(make, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = refusal(make(data_dir=blocker / "data"))
    assert message.startswith("--data-dir: cannot write to")
    assert str(blocker / "data") in message
    assert "MLFLOW_APP_DATA_DIR" in message  # what to do


def test_data_dir_is_a_regular_file(make, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert refusal(make(data_dir=blocker)).startswith("--data-dir:")


def test_data_dir_is_created(make, tmp_path):
    validate(make(data_dir=tmp_path / "new" / "nested"))
    assert (tmp_path / "new" / "nested").is_dir()
    assert list((tmp_path / "new" / "nested").iterdir()) == []  # the write probe is gone


def test_data_dir_check_tolerates_a_concurrent_instance(tmp_path):
    """Two instances starting at once on one data dir must not trip over each other's probe."""
    code = "import sys; from pathlib import Path; from launcher.settings import check_data_dir\nfor _ in range(200): check_data_dir(Path(sys.argv[1]))"
    processes = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [p.communicate(timeout=30)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], errors
    assert list(tmp_path.iterdir()) == []


def test_data_dir_not_checked_when_unused(make, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = make(data_dir=blocker / "data", backend_store_uri="postgresql://u:p@h/db", artifacts_destination="s3://b/artifacts")
    assert not settings.uses_data_dir
    validate(settings)
    # Either embedded default alone still needs it.
    assert make(data_dir=blocker / "d", backend_store_uri="postgresql://u:p@h/db").uses_data_dir
    assert make(data_dir=blocker / "d", artifacts_destination="s3://b/a").uses_data_dir
    assert not make(data_dir=blocker / "d", backend_store_uri="databricks", serve_artifacts=False).uses_data_dir


def test_ui_dir_without_index_html(make, tmp_path):
    empty = tmp_path / "empty-ui"
    empty.mkdir()
    message = refusal(make(ui_dir=empty))
    assert message.startswith("--ui-dir:") and "index.html" in message and str(empty) in message
    assert "MLFLOW_APP_UI_DIR" in message


def test_ui_dir_missing_entirely(make, tmp_path):
    assert refusal(make(ui_dir=tmp_path / "nowhere")).startswith("--ui-dir:")


def test_default_ui_dir_is_the_installed_mlflow_build(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert settings.effective_ui_dir == installed_mlflow_ui_dir()
    assert settings.effective_ui_dir.parts[-4:] == ("mlflow", "server", "js", "build")


def test_effective_defaults_are_absolute_inside_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=Path("relative-data"))
    db = tmp_path.resolve() / "relative-data" / "mlflow.db"
    assert settings.effective_backend_store_uri == f"sqlite:///{db}"
    assert settings.effective_backend_store_uri.startswith("sqlite:////")  # absolute path
    assert settings.effective_artifacts_destination == str(tmp_path.resolve() / "relative-data" / "artifacts")
    assert Path(settings.effective_artifacts_destination).is_absolute()
    assert settings.uses_data_dir


def test_explicit_stores_win_over_defaults(tmp_path):
    settings = Settings(data_dir=tmp_path, backend_store_uri="postgresql://h/db", artifacts_destination="s3://b/a")
    assert settings.effective_backend_store_uri == "postgresql://h/db"
    assert settings.effective_artifacts_destination == "s3://b/a"


def test_default_host_loopback_off_databricks(monkeypatch):
    monkeypatch.delenv("DATABRICKS_APP_PORT", raising=False)
    assert default_host() == "127.0.0.1"


def test_default_host_all_interfaces_on_databricks_apps(monkeypatch):
    monkeypatch.setenv("DATABRICKS_APP_PORT", "8000")
    assert default_host() == "0.0.0.0"


def test_default_host_ignores_empty_app_port(monkeypatch):
    monkeypatch.setenv("DATABRICKS_APP_PORT", "")
    assert default_host() == "127.0.0.1"


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        ("sqlite:///x.db", "sqlite"),
        ("SQLITE:///x.db", "sqlite"),
        ("postgresql+psycopg2://u:p@h/db", "postgresql"),
        ("mysql+pymysql://u:p@h/db", "mysql"),
        ("file:///x", "file"),
        ("s3://bucket/key", "s3"),
        ("mlflow-artifacts:/", "mlflow-artifacts"),
        ("databricks", "databricks"),
        ("databricks://profile", "databricks"),
        ("databricks-uc", "databricks-uc"),
        ("uc", "uc"),
        ("/abs/path", ""),
        ("relative/path", ""),
        ("mlruns", ""),
        ("C:\\mlruns", ""),  # a Windows drive, not a scheme
        ("c:/mlruns", ""),
        ("mongodb://", "mongodb"),
    ],
)
def test_uri_scheme(uri, scheme):
    assert uri_scheme(uri) == scheme


@pytest.mark.parametrize(
    ("value", "items"),
    [(None, ()), ("", ()), ("a", ("a",)), (" a , b,,c ", ("a", "b", "c")), (",", ())],
)
def test_split_list(value, items):
    assert split_list(value) == items


# --- authentication at the front -----------------------------------------------------------------

TOKEN = "s3cret-front-token-0123456789"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_needs_no_token(make, monkeypatch, host):
    monkeypatch.delenv("DATABRICKS_APP_NAME", raising=False)
    validate(make(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "mlflow.example.com", ""])
def test_a_reachable_host_without_a_token_is_refused(make, monkeypatch, host):
    monkeypatch.delenv("DATABRICKS_APP_NAME", raising=False)
    message = refusal(make(host=host))
    assert message.startswith("--host: ")
    assert "--auth-token (MLFLOW_APP_AUTH_TOKEN)" in message and "--no-auth (MLFLOW_APP_NO_AUTH=true)" in message


def test_a_reachable_host_with_a_token_or_no_auth_passes(make, monkeypatch):
    monkeypatch.delenv("DATABRICKS_APP_NAME", raising=False)
    validate(make(host="0.0.0.0", auth_token=TOKEN))
    validate(make(host="0.0.0.0", no_auth=True))


def test_databricks_apps_authenticates_users_itself(make, monkeypatch):
    monkeypatch.setenv("DATABRICKS_APP_NAME", "mlflow")
    validate(make(host="0.0.0.0"))


@pytest.mark.parametrize("token", ["", "short", "x" * 15, "has a space in it here", "tab\tinside-0123456789", "ünïcødé-0123456789"])
def test_unusable_tokens_are_refused_without_being_echoed(make, token):
    message = refusal(make(auth_token=token))
    assert message.startswith("--auth-token: ") and "secrets.token_urlsafe" in message
    if token:
        assert token not in message


def test_the_token_is_never_in_the_settings_repr(make):
    assert TOKEN not in repr(make(auth_token=TOKEN))
