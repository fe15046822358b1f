"""`requirements.txt` from `uv.lock`: exact pins for the platform's pip, git MLflow kept as a git URL."""

from __future__ import annotations

import re
import tomllib

import pytest

from deploy import DeployError
from deploy.requirements import export_requirements, locked_mlflow
from tests.deploy.conftest import FIXTURES, GIT_COMMIT, GIT_MLFLOW_VERSION, REPO

PIN = re.compile(r"[a-z0-9][a-z0-9._-]*(\[[a-z0-9,_-]+\])?==[^\s;]+( ; .+)?")


def test_this_checkout_pins_every_runtime_package_exactly():
    mlflow = locked_mlflow(REPO / "uv.lock")
    assert mlflow.from_registry and mlflow.describe() == f"mlflow {mlflow.version} from PyPI"
    text = export_requirements(REPO, mlflow)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert all(PIN.fullmatch(line) for line in lines), [line for line in lines if not PIN.fullmatch(line)]
    names = {re.split(r"[=\[ ]", line, maxsplit=1)[0] for line in lines}
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    versions = {p["name"]: p["version"] for p in lock["package"]}
    assert f"mlflow=={versions['mlflow']}" in lines
    # boto3 from the s3 extra: Unity Catalog may hand the app S3 credentials for model files.
    for dependency in ("databricks-sdk", "fastapi", "uvicorn", "httpx", "click", "brotli", "prometheus-client", "jinja2", "boto3"):
        assert f"{dependency}=={versions[dependency]}" in {line.split(" ;")[0] for line in lines}, dependency
    assert not names & {"mlflow-app", "pytest", "pytest-asyncio", "playwright", "hypothesis", "moto", "psycopg"}  # ours, development only, other extras


def test_git_mlflow_keeps_its_git_url_at_the_locked_commit():
    mlflow = locked_mlflow(FIXTURES / "git-mlflow" / "uv.lock")
    assert (mlflow.source, mlflow.version, mlflow.commit, mlflow.reference) == ("git", GIT_MLFLOW_VERSION, GIT_COMMIT, "branch master")
    assert mlflow.git_url == "https://github.com/mlflow/mlflow.git"
    text = export_requirements(FIXTURES / "git-mlflow", mlflow)
    assert f"mlflow @ git+https://github.com/mlflow/mlflow.git@{GIT_COMMIT}" in text.splitlines()
    assert f"mlflow-skinny @ git+https://github.com/mlflow/mlflow.git@{GIT_COMMIT}#subdirectory=libs/skinny" in text.splitlines()
    assert "click==8.3.1" in text.splitlines()
    assert f"# mlflow {GIT_MLFLOW_VERSION} from git https://github.com/mlflow/mlflow.git, branch master, commit {GIT_COMMIT}." in text


def test_a_local_checkout_is_refused():
    mlflow = locked_mlflow(FIXTURES / "local-mlflow" / "uv.lock")
    assert mlflow.source == "editable" and not mlflow.from_registry
    with pytest.raises(DeployError, match=r"'-e \.\./mlflow-checkout' comes from a local path the platform cannot reach"):
        export_requirements(FIXTURES / "local-mlflow", mlflow)


def test_missing_lock(tmp_path):
    with pytest.raises(DeployError, match="No uv.lock at"):
        locked_mlflow(tmp_path / "uv.lock")


def test_two_mlflow_versions_are_refused(tmp_path):
    entry = '[[package]]\nname = "mlflow"\nversion = "{}"\nsource = {{ registry = "https://pypi.org/simple" }}\n\n'
    (tmp_path / "uv.lock").write_text("version = 1\n\n" + entry.format("3.17.2") + entry.format("2.22.0"))
    with pytest.raises(DeployError, match="locks 2 versions of mlflow"):
        locked_mlflow(tmp_path / "uv.lock")


def test_uv_failure_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "uv.lock").write_text("not toml at all [")
    with pytest.raises(DeployError, match=r"`uv export` failed in .*: ") as raised:
        export_requirements(tmp_path, locked_mlflow(FIXTURES / "git-mlflow" / "uv.lock"))
    assert "\n" not in str(raised.value)


def test_without_uv(monkeypatch):
    monkeypatch.delenv("UV", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DeployError, match=r"uv is needed to read uv.lock"):
        export_requirements(REPO, locked_mlflow(REPO / "uv.lock"))
