"""The folder that is uploaded: only what the app runs, checked against the platform's limits first.

It holds the packages the app runs (launcher/ and proxy/, not deploy/), `app.yaml`, `requirements.txt` and, when needed, the UI build. The checks
refuse a file over the platform's 10 MB, and anything that looks secret: the folder is copied into
the workspace, where other users and the app's snapshots may read it.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from deploy import DeployError

# What the app runs. Not deploy/: it runs on the machine that deploys, never on the platform.
PACKAGES = ("launcher", "proxy")
LEFT_OUT = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
# The platform's limit for one source file: "App files can't exceed 10 MB" (Databricks Apps docs,
# "Develop Databricks apps"), read as the SI megabyte, the stricter reading: 10,000,000 bytes.
MAX_FILE_BYTES = 10_000_000
STAGE_MARKER = "app.yaml"  # a folder holding it was staged by us and may be replaced

SECRET_FILE_NAMES = (
    ".env", ".env.*", "*.env", ".databrickscfg", ".netrc", ".pypirc", ".git-credentials", ".npmrc",
    "*.pem", "*.key", "*.p12", "*.pfx", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
)  # fmt: skip
SECRET_CONTENT = {
    "a Databricks personal access token": re.compile(rb"\bdapi[0-9a-f]{32}(-\d+)?\b"),
    "a Databricks OAuth secret": re.compile(rb"\bdose[0-9a-f]{32}\b"),
    "a private key": re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "an AWS access key id": re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a GitHub token": re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
}


@dataclass(frozen=True)
class StagedFile:
    path: str  # relative, with / separators, as it will sit in the workspace folder
    size: int


@dataclass(frozen=True)
class StagedApp:
    root: Path
    files: tuple[StagedFile, ...]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def largest(self) -> StagedFile:
        return max(self.files, key=lambda f: f.size)

    def describe(self) -> str:
        big = self.largest()
        return f"{len(self.files)} files, {self.total_size / 1e6:.2f} MB in all; largest {big.path} ({big.size / 1e6:.2f} MB)"


def prepare_stage_dir(dest: Path) -> None:
    """An empty `dest`: created, or emptied when it holds an earlier staging (and nothing else is touched)."""
    if dest.exists():
        if not dest.is_dir() or (any(dest.iterdir()) and not (dest / STAGE_MARKER).is_file()):
            raise DeployError(f"{dest} exists and is not an earlier staging (no {STAGE_MARKER}); choose an empty or new folder.")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)


def stage_app(project_dir: Path, dest: Path, *, app_yaml: str, requirements: str) -> StagedApp:
    """Copy our packages and write `app.yaml` and `requirements.txt` into `dest`; list everything in it."""
    for package in PACKAGES:
        source = project_dir / package
        if not (source / "__init__.py").is_file():
            raise DeployError(f"{project_dir} has no {package}/ package; pass --project-dir pointing at an mlflow-app checkout.")
        shutil.copytree(source, dest / package, ignore=LEFT_OUT)
    (dest / "app.yaml").write_text(app_yaml, encoding="utf-8")
    (dest / "requirements.txt").write_text(requirements, encoding="utf-8")
    return scan(dest)


def scan(root: Path) -> StagedApp:
    files = sorted(
        (StagedFile(p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*") if p.is_file()),
        key=lambda f: f.path,
    )
    return StagedApp(root, tuple(files))


def limit_problems(staged: StagedApp) -> list[str]:
    """What the platform or prudence forbids in the upload, one line each; empty when all is well."""
    problems = []
    for f in staged.files:
        name = f.path.rsplit("/", 1)[-1]
        if f.size > MAX_FILE_BYTES:
            problems.append(f"{f.path} is {f.size:,} bytes, over the platform's limit of 10 MB ({MAX_FILE_BYTES:,} bytes) per file")
        if any(fnmatch.fnmatch(name, pattern) for pattern in SECRET_FILE_NAMES):
            problems.append(f"{f.path} is a kind of file that holds secrets ({name})")
            continue
        content = (staged.root / f.path).read_bytes()
        for what, pattern in SECRET_CONTENT.items():
            if pattern.search(content):
                problems.append(f"{f.path} holds what looks like {what}")
    return problems


def check_limits(staged: StagedApp) -> None:
    """Raise DeployError naming every file that must not be uploaded."""
    problems = limit_problems(staged)
    if problems:
        raise DeployError(f"Nothing was uploaded: {'; '.join(problems)}. Remove these from {staged.root} (or from the packages they were copied from) and run again.")
