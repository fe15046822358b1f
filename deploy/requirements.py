"""`requirements.txt` for the platform's pip: the exact versions of `uv.lock`, with MLflow from git kept as
a git URL pinned to the locked commit."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from deploy import DeployError

# uv's own export walks the lock's markers and extras as its resolver does; the platform's pip
# evaluates the markers that remain (it runs CPython 3.11 on Linux).
UV_EXPORT = (
    "export", "--frozen", "--format", "requirements-txt", "--no-dev", "--no-hashes",
    "--no-emit-project", "--no-header", "--no-annotate",
)  # fmt: skip
# Extras that go to the platform when the project declares them. `s3` (boto3): a workspace whose Unity
# Catalog keeps model files in the customer's own S3 bucket hands MLflow S3 credentials, and without
# boto3 the first model registration there fails (docs/databricks.md, "Unity Catalog model files").
PLATFORM_EXTRAS = ("s3",)


@dataclass(frozen=True)
class LockedMlflow:
    """The `mlflow` package as `uv.lock` pins it."""

    version: str
    source: str  # uv's source kind: registry, git, url, path, directory or editable
    git_url: str | None = None
    commit: str | None = None
    reference: str | None = None  # "branch master", "tag v3.18.0", "rev …" when the lock names one

    @property
    def from_registry(self) -> bool:
        return self.source == "registry"

    @property
    def needs_ui_upload(self) -> bool:
        """Whether the upload must carry a UI build: only PyPI's mlflow wheel has one of its own."""
        return not self.from_registry

    def describe(self) -> str:
        if self.source == "git":
            ref = f", {self.reference}" if self.reference else ""
            return f"mlflow {self.version} from git {self.git_url}{ref}, commit {self.commit}"
        return f"mlflow {self.version} from {'PyPI' if self.from_registry else f'a {self.source} source'}"


def locked_mlflow(lock_path: Path) -> LockedMlflow:
    """The `mlflow` entry of a `uv.lock`."""
    if not lock_path.is_file():
        raise DeployError(f"No uv.lock at {lock_path}; run `uv lock` in the project, or pass --project-dir pointing at an mlflow-app checkout.")
    lock = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    entries = [p for p in lock.get("package", []) if p.get("name") == "mlflow"]
    if len(entries) != 1:
        raise DeployError(f"{lock_path} locks {len(entries)} versions of mlflow; pin one (the app runs one MLflow).")
    entry = entries[0]
    kind, location = next(iter(entry["source"].items()))
    if kind != "git":
        return LockedMlflow(entry["version"], kind)
    url = urlsplit(location)
    query = parse_qs(url.query)
    reference = next((f"{key} {query[key][0]}" for key in ("branch", "tag", "rev") if key in query), None)
    return LockedMlflow(entry["version"], "git", url._replace(query="", fragment="").geturl(), url.fragment or None, reference)


def uv_executable() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` sets UV to itself
    if not uv:
        raise DeployError("uv is needed to read uv.lock; install it (pip install uv) and run `uv run mlflow-app …`.")
    return uv


def export_requirements(project_dir: Path, mlflow: LockedMlflow) -> str:
    """`requirements.txt` with every runtime package of `uv.lock` at its exact version.

    Development dependencies and mlflow-app itself are left out: the platform runs our packages from
    the uploaded folder. A package from a local path is refused, since the platform cannot reach it.
    """
    extras = [arg for extra in declared_extras(project_dir) if extra in PLATFORM_EXTRAS for arg in ("--extra", extra)]
    result = subprocess.run([uv_executable(), *UV_EXPORT, *extras], cwd=project_dir, capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeployError(f"`uv export` failed in {project_dir}: {reason}")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("-e ", "--editable", ".", "/", "file:")) or " @ file:" in line:
            raise DeployError(f"requirements: '{line}' comes from a local path the platform cannot reach; lock it from PyPI or a git URL.")
    header = [
        "# Exact versions from uv.lock, written by `mlflow-app deploy`; Databricks Apps installs them with pip.",
        f"# {mlflow.describe()}.",
    ]
    return "\n".join(header + lines) + "\n"


def declared_extras(project_dir: Path) -> list[str]:
    """The optional-dependency groups the project's pyproject.toml declares."""
    pyproject = project_dir / "pyproject.toml"
    if not pyproject.is_file():
        return []
    return list(tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("optional-dependencies", {}))
