"""`--static-prefix`: read from MLflow's own variable, checked once, and handed to the MLflow child."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import launcher.server
from launcher.cli import main
from launcher.mlflow_process import MlflowProcess, mlflow_command, mlflow_environment
from launcher.settings import Settings, SettingsError, check_static_prefix


@pytest.fixture
def captured(monkeypatch, tmp_path) -> list[Settings]:
    """`serve` builds and validates Settings, then hands them here instead of running."""
    for name in ("MLFLOW_STATIC_PREFIX", "DATABRICKS_APP_NAME", "DATABRICKS_APP_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    runs: list[Settings] = []
    monkeypatch.setattr(launcher.server, "run_server", runs.append)
    return runs


def serve(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["serve", "--host", "127.0.0.1", *args], env=env, catch_exceptions=False)


def test_no_prefix_by_default(captured):
    assert serve().exit_code == 0
    assert captured[0].static_prefix is None


@pytest.mark.parametrize(("args", "env"), [(("--static-prefix", "/team/mlflow"), {}), ((), {"MLFLOW_STATIC_PREFIX": "/team/mlflow"})])
def test_the_option_or_mlflows_variable(captured, args, env):
    assert serve(*args, env=env).exit_code == 0
    assert captured[0].static_prefix == "/team/mlflow"


@pytest.mark.parametrize("prefix", ["mlflow", "/", "/mlflow/", "//mlflow", "/a//b", "/mlflow/..", "/./mlflow", "/ml flow", "/ml%20flow", "/{x}", "/ml?flow", "/ml#flow", ""])
def test_a_prefix_that_is_no_plain_path_is_refused_in_one_line(captured, prefix):
    result = serve("--static-prefix", prefix)
    assert result.exit_code != 0 and captured == []
    assert "--static-prefix" in result.output and "is not a path prefix" in result.output
    with pytest.raises(SettingsError):
        check_static_prefix(prefix)


@pytest.mark.parametrize("prefix", ["/mlflow", "/team-a/ml_flow.v2", "/~ops/mlflow", "/a..b"])
def test_plain_paths_pass(prefix):
    check_static_prefix(prefix)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_child_runs_with_the_same_prefix_and_is_probed_under_it(tmp_path, workers):
    settings = Settings(data_dir=tmp_path, static_prefix="/mlflow", workers=workers)
    command = mlflow_command(settings, 5123)
    assert command[command.index("--static-prefix") + 1] == "/mlflow"
    # As an option, not through MLflow's variable, which the child never inherits from us.
    assert "MLFLOW_STATIC_PREFIX" not in mlflow_environment(settings, {"MLFLOW_STATIC_PREFIX": "/other"})
    process = MlflowProcess(command, {}, "http://127.0.0.1:5123", lambda line: None, static_prefix="/mlflow")
    assert process.health_url == "http://127.0.0.1:5123/mlflow/health"


def test_without_a_prefix_the_child_has_none(tmp_path):
    assert "--static-prefix" not in mlflow_command(Settings(data_dir=tmp_path), 5123)
    assert MlflowProcess([], {}, "http://localhost", lambda line: None).health_url == "http://localhost/health"
