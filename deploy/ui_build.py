"""MLflow's UI build for the upload, needed when the platform's MLflow has none.

pip installs MLflow from the requirements: a PyPI wheel carries the UI build, a git build does not
(building it takes yarn). For a git MLflow the upload carries a UI: the installed package's when it
has one of the same version, else the one inside the PyPI wheel of the nearest release.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.specifiers import SpecifierSet
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from deploy import DeployError
from deploy.requirements import LockedMlflow
from launcher.mlflow_package import mlflow_package_dir, mlflow_version

BUILD_IN_WHEEL = PurePosixPath("mlflow/server/js/build")
SOURCE_MAP_SUFFIX = ".map"  # debugging aids, several MB each: over the platform's 10 MB per file
PLATFORM_PYTHON = "3.11"  # what pip-based Databricks Apps run

Downloader = Callable[[str, Path], Path]


@dataclass(frozen=True)
class UploadedUiBuild:
    """A UI build written to the staged upload, and where it came from."""

    origin: str
    version: str
    files: int
    size: int
    maps_left_out: int

    def describe(self) -> str:
        maps = f", {self.maps_left_out} source maps left out" if self.maps_left_out else ", no source maps"
        return f"{self.origin}: {self.files} files, {self.size / 1e6:.1f} MB{maps}"


def nearest_release_spec(version: str) -> str:
    """The pip requirement for the newest release at or before `version` (3.18.0.dev0 → mlflow<3.18.0)."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        raise DeployError(f"mlflow's locked version '{version}' is not a version pip understands; lock a release or a git build of MLflow.") from None
    if parsed.is_prerelease:  # dev and rc builds come before their release: take the one before
        return f"mlflow<{parsed.base_version}"
    return f"mlflow=={parsed.public}"


def installed_mlflow() -> tuple[str | None, Path | None]:
    """The installed mlflow's version and UI build directory (None when absent), without importing it."""
    package = mlflow_package_dir()
    if package is None:
        return None, None
    build = package / "server" / "js" / "build"
    return mlflow_version(), build if (build / "index.html").is_file() else None


def pip_download(requirement: str, dest: Path) -> Path:
    """The wheel pip picks for `requirement`, downloaded into `dest` (no dependencies)."""
    if importlib.util.find_spec("pip") is not None:
        pip = [sys.executable, "-m", "pip"]
    elif found := shutil.which("pip3") or shutil.which("pip"):
        pip = [found]
    else:
        raise DeployError("pip is needed to fetch MLflow's UI from PyPI; install it, or pass --ui-wheel with an mlflow wheel.")
    command = [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", PLATFORM_PYTHON, "--dest", str(dest), requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob("mlflow-*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise DeployError(f"Could not download {requirement} from PyPI for its UI: {reason}. Pass --ui-wheel with an mlflow wheel instead.")
    return wheels[0]


def wheel_version(wheel: Path) -> str:
    try:
        name, version, _, _ = parse_wheel_filename(wheel.name)
    except InvalidWheelFilename:
        raise DeployError(f"{wheel.name} is not a wheel file name; pass an mlflow-<version>-py3-none-any.whl.") from None
    if name != "mlflow":
        raise DeployError(f"{wheel.name} is a {name} wheel; the UI build is only in the full mlflow wheel.")
    return str(version)


def check_ui_version(ui_version: str, target: str, requirement: str | None) -> None:
    """The UI's MLflow matches the one that will run: within `requirement` if given, and the same major."""
    if requirement and Version(ui_version) not in SpecifierSet(requirement.removeprefix("mlflow")):
        raise DeployError(f"Got mlflow {ui_version} for the UI, which is not {requirement}; pass --ui-wheel with the wheel to use.")
    if Version(ui_version).major != Version(target).major:
        raise DeployError(f"The UI of mlflow {ui_version} does not fit mlflow {target} (another major version); pass --ui-wheel with a wheel of MLflow {Version(target).major}.")


def extract_ui(wheel: Path, dest: Path) -> tuple[int, int, int]:
    """Write the wheel's UI build, source maps left out, into `dest`; (files, bytes, maps left out)."""
    files = size = maps = 0
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            path = PurePosixPath(member.filename)
            if member.is_dir() or not path.is_relative_to(BUILD_IN_WHEEL):
                continue
            relative = path.relative_to(BUILD_IN_WHEEL)
            if ".." in relative.parts:
                raise DeployError(f"{wheel.name} holds a path outside its UI build ({member.filename}); use another wheel.")
            if relative.suffix == SOURCE_MAP_SUFFIX:
                maps += 1
                continue
            target = dest.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
            files += 1
            size += member.file_size
    if not (dest / "index.html").is_file():
        raise DeployError(f"{wheel.name} has no UI build ({BUILD_IN_WHEEL}/index.html); use a wheel of the full mlflow package.")
    return files, size, maps


def copy_ui(build: Path, dest: Path) -> tuple[int, int, int]:
    """Copy an installed UI build, source maps left out, into `dest`; (files, bytes, maps left out)."""
    maps = sum(1 for p in build.rglob(f"*{SOURCE_MAP_SUFFIX}") if p.is_file())
    shutil.copytree(build, dest, ignore=shutil.ignore_patterns(f"*{SOURCE_MAP_SUFFIX}"))
    copied = [p for p in dest.rglob("*") if p.is_file()]
    return len(copied), sum(p.stat().st_size for p in copied), maps


def provide_ui(
    mlflow: LockedMlflow,
    dest: Path,
    *,
    ui_wheel: Path | None = None,
    installed: tuple[str | None, Path | None] | None = None,
    download: Downloader = pip_download,
) -> UploadedUiBuild | None:
    """Write a UI build into `dest` when the platform's MLflow will lack one; None when it has its own.

    In order: the wheel given, the installed build when it is the locked version, the PyPI wheel of
    the nearest release (through `download`). Every source's version is checked against the lock's.
    """
    if not mlflow.needs_ui_upload:
        return None
    if ui_wheel is not None:
        version = wheel_version(ui_wheel)
        check_ui_version(version, mlflow.version, None)
        return UploadedUiBuild(f"the UI of mlflow {version} from {ui_wheel.name}", version, *extract_ui(ui_wheel, dest))
    installed_version, installed_build = installed if installed is not None else installed_mlflow()
    if installed_build is not None and installed_version == mlflow.version:
        return UploadedUiBuild(f"the UI of the installed mlflow {installed_version}", installed_version, *copy_ui(installed_build, dest))
    requirement = nearest_release_spec(mlflow.version)
    with tempfile.TemporaryDirectory(prefix="mlflow-wheel-") as tmp:
        wheel = download(requirement, Path(tmp))
        version = wheel_version(wheel)
        check_ui_version(version, mlflow.version, requirement)
        counts = extract_ui(wheel, dest)
    return UploadedUiBuild(f"the UI of mlflow {version} from PyPI ({wheel.name}, nearest release to {mlflow.version})", version, *counts)
