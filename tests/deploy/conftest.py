"""Fixtures for deploy/: projects locked to a PyPI or a git MLflow, fake mlflow wheels, and the stand-in
workspace with databricks-sdk pointed at it. Nothing here reaches the network."""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.deploy.standin_apps import TOKEN, StandinServer

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN = Path(__file__).resolve().parent / "golden"
BUILD = "mlflow/server/js/build/"
GIT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
GIT_MLFLOW_VERSION = "3.18.0.dev0"


def make_mlflow_wheel(directory: Path, version: str, *, name: str = "mlflow", ui: bool = True, extra: dict[str, str] | None = None) -> Path:
    """A small wheel shaped like MLflow's: a UI build (index.html, a hashed bundle and its source map)."""
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mlflow/__init__.py", f"__version__ = {version!r}\n")
        if ui:
            archive.writestr(BUILD + "index.html", f"<!doctype html><title>MLflow {version}</title>\n")
            archive.writestr(BUILD + "static-files/static/js/main.0a1b2c3d.js", "console.log('mlflow ui');\n")
            archive.writestr(BUILD + "static-files/static/js/main.0a1b2c3d.js.map", '{"version": 3}\n')
            archive.writestr(BUILD + "static-files/static/css/main.4e5f6a7b.css", "body { margin: 0 }\n")
        for member, text in (extra or {}).items():
            archive.writestr(member, text)
        archive.writestr(f"{name}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return wheel


def copy_project(fixture: str | None, dest: Path) -> Path:
    """A checkout of our packages, locked as in `fixtures/<fixture>` (or as this repository when None)."""
    dest.mkdir(parents=True)
    for package in ("launcher", "proxy", "deploy"):
        shutil.copytree(REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    source = REPO if fixture is None else FIXTURES / fixture
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(source / name, dest / name)
    return dest


@pytest.fixture
def git_project(tmp_path) -> Path:
    """A checkout whose uv.lock takes MLflow from a git branch: the platform's MLflow will have no UI."""
    return copy_project("git-mlflow", tmp_path / "git-project")


@pytest.fixture
def ui_wheel(tmp_path) -> Path:
    """The wheel of the release nearest to the git fixture's MLflow."""
    directory = tmp_path / "wheels"
    directory.mkdir()
    return make_mlflow_wheel(directory, "3.17.2")


@pytest.fixture
def standin(monkeypatch, tmp_path):
    """The stand-in workspace, with databricks-sdk's unified auth pointed at it (host and token only)."""
    for name in [n for n in os.environ if n.startswith("DATABRICKS_")]:
        monkeypatch.delenv(name)
    with StandinServer() as server:
        monkeypatch.setenv("DATABRICKS_HOST", server.url)
        monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
        monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))  # no profile of this machine's
        sdk_waiters_poll_quickly(monkeypatch)
        yield server


@pytest.fixture
def oauth_standin(standin, monkeypatch):
    """The stand-in, with databricks-sdk's unified auth set to an OAuth client (machine to machine)
    instead of a token, as a CI job that deploys with a service principal sets it."""
    monkeypatch.delenv("DATABRICKS_TOKEN")
    for name, value in standin.oauth_env().items():
        monkeypatch.setenv(name, value)
    return standin


def sdk_waiters_poll_quickly(monkeypatch) -> None:
    """databricks-sdk's waiters (`wait_get_app_active`, `Wait.result`) sleep 1 s, 2 s, … up to 10 s
    between GETs; the stand-in moves one step per GET, so tests shorten the sleeps and keep the
    waiters' logic (their deadline still runs on the real clock)."""
    from databricks.sdk.service import apps

    monkeypatch.setattr(apps, "time", SimpleNamespace(time=time.time, sleep=lambda seconds: time.sleep(0.01)))
