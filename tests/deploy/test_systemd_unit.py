"""deploy/systemd/mlflow-app.service and its example environment file, against the real CLI."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from launcher.cli import serve
from launcher.redaction import SECRET_ENV_VARS
from launcher.server import CHILD_STOP_GRACE_SECONDS
from launcher.settings import Settings

PROJECT = Path(__file__).resolve().parents[2]
UNIT = PROJECT / "deploy" / "systemd" / "mlflow-app.service"
ENV_FILE = PROJECT / "deploy" / "systemd" / "mlflow-app.env.example"  # not *.env: the Databricks upload refuses those


def read_unit(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"), empty_lines_in_values=False)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(text)
    return unit


def serve_envvars() -> set[str]:
    names: set[str] = set()
    for option in serve.params:
        names.update([option.envvar] if isinstance(option.envvar, str) else option.envvar or [])
    return names


def test_the_unit_restarts_on_failure_as_its_own_user_and_stops_within_the_drain():
    service = read_unit(UNIT.read_text())["Service"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == service["Group"] == "mlflow-app"
    assert service["EnvironmentFile"] == "/etc/mlflow-app/mlflow-app.env"
    # SIGTERM to the front alone: it drains, then stops MLflow's process group itself.
    assert (service["KillMode"], service["KillSignal"]) == ("mixed", "SIGTERM")
    assert float(service["TimeoutStopSec"]) >= Settings().drain_seconds + CHILD_STOP_GRACE_SECONDS + 5
    assert service["StateDirectory"] == "mlflow-app"
    assert "MLFLOW_APP_DATA_DIR=/var/lib/mlflow-app" in shlex.split(service["Environment"])
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"


def test_execstart_is_mlflow_app_serve_with_real_options():
    argv = shlex.split(read_unit(UNIT.read_text())["Service"]["ExecStart"])
    scripts = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(argv[0]).name in scripts and scripts[Path(argv[0]).name] == "launcher.cli:main"
    assert argv[1] == "serve"
    options = {opt for param in serve.params for opt in param.opts + param.secondary_opts}
    assert all(word.split("=")[0] in options for word in argv[2:] if word.startswith("-"))


def test_the_example_environment_file_sets_only_real_settings():
    known = serve_envvars() | set(SECRET_ENV_VARS)
    names = [line.split("=", 1)[0] for line in ENV_FILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert names and set(names) <= known, set(names) - known
    environment = shlex.split(read_unit(UNIT.read_text())["Service"]["Environment"])
    assert {item.split("=", 1)[0] for item in environment} <= known | {"MLFLOW_DISABLE_TELEMETRY"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (apt-get install systemd; ./run-tests does)")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify checks that ExecStart's program exists: point it at this environment's mlflow-app.
    installed = Path(sys.executable).parent / "mlflow-app"
    text = UNIT.read_text().replace("/opt/mlflow-app/.venv/bin/mlflow-app", str(installed))
    (tmp_path / "mlflow-app.service").write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "mlflow-app.service")], capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "mlflow-app.service" in line]
    assert done.returncode == 0 and problems == [], done.stdout + done.stderr
