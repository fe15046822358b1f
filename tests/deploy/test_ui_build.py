"""UI assets for a git MLflow: which source is used, version checks, source maps left out. The PyPI
download is replaced by a local fake wheel; nothing here reaches the network."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from deploy import DeployError
from deploy.requirements import LockedMlflow
from deploy.ui_build import installed_mlflow, nearest_release_spec, provide_ui
from tests.deploy.conftest import GIT_MLFLOW_VERSION, make_mlflow_wheel

GIT_MLFLOW = LockedMlflow(GIT_MLFLOW_VERSION, "git", "https://github.com/mlflow/mlflow.git", "0" * 40, "branch master")
NO_INSTALLED_UI = (GIT_MLFLOW_VERSION, None)  # a git build installed here: no UI either


class FakePyPI:
    """Stands for `pip download`: records the requirement, answers with a wheel of the given version."""

    def __init__(self, directory: Path, version: str, **wheel_options) -> None:
        self.directory, self.version, self.wheel_options = directory, version, wheel_options
        self.requirements: list[str] = []

    def __call__(self, requirement: str, dest: Path) -> Path:
        self.requirements.append(requirement)
        return make_mlflow_wheel(dest, self.version, **self.wheel_options)


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("version", "spec"),
    [
        ("3.18.0.dev0", "mlflow<3.18.0"),
        ("3.18.0rc1", "mlflow<3.18.0"),
        ("3.18.0.dev0+g1a2b3c", "mlflow<3.18.0"),
        ("3.17.2", "mlflow==3.17.2"),
        ("3.17.2+local", "mlflow==3.17.2"),
    ],
)
def test_nearest_release(version, spec):
    assert nearest_release_spec(version) == spec


def test_unparsable_version():
    with pytest.raises(DeployError, match="is not a version pip understands"):
        nearest_release_spec("master")


def test_pypi_mlflow_needs_no_upload(tmp_path):
    pypi = FakePyPI(tmp_path, "3.17.2")
    assert provide_ui(LockedMlflow("3.17.2", "registry"), tmp_path / "ui", installed=NO_INSTALLED_UI, download=pypi) is None
    assert pypi.requirements == [] and not (tmp_path / "ui").exists()


def test_git_mlflow_gets_the_ui_of_the_nearest_release_without_source_maps(tmp_path):
    pypi = FakePyPI(tmp_path, "3.17.2")
    ui = provide_ui(GIT_MLFLOW, tmp_path / "ui", installed=NO_INSTALLED_UI, download=pypi)
    assert pypi.requirements == ["mlflow<3.18.0"]
    assert files(tmp_path / "ui") == {"index.html", "static-files/static/js/main.0a1b2c3d.js", "static-files/static/css/main.4e5f6a7b.css"}
    assert (ui.version, ui.files, ui.maps_left_out) == ("3.17.2", 3, 1)
    assert "mlflow 3.17.2 from PyPI (mlflow-3.17.2-py3-none-any.whl, nearest release to 3.18.0.dev0)" in ui.describe()
    assert "1 source maps left out" in ui.describe()


def test_a_wheel_outside_the_requirement_is_refused(tmp_path):
    with pytest.raises(DeployError, match=r"Got mlflow 3.18.0 for the UI, which is not mlflow<3.18.0"):
        provide_ui(GIT_MLFLOW, tmp_path / "ui", installed=NO_INSTALLED_UI, download=FakePyPI(tmp_path, "3.18.0"))


def test_another_major_version_is_refused(tmp_path):
    locked = LockedMlflow("3.0.0.dev0", "git", "https://github.com/mlflow/mlflow.git", "0" * 40)
    with pytest.raises(DeployError, match=r"The UI of mlflow 2.22.0 does not fit mlflow 3.0.0.dev0 \(another major version\)"):
        provide_ui(locked, tmp_path / "ui", installed=("3.0.0.dev0", None), download=FakePyPI(tmp_path, "2.22.0"))


def test_a_skinny_wheel_is_refused(tmp_path):
    with pytest.raises(DeployError, match="is a mlflow-skinny wheel; the UI build is only in the full mlflow wheel"):
        provide_ui(GIT_MLFLOW, tmp_path / "ui", installed=NO_INSTALLED_UI, download=FakePyPI(tmp_path, "3.17.2", name="mlflow_skinny"))


def test_a_wheel_without_ui_is_refused(tmp_path):
    with pytest.raises(DeployError, match=r"has no UI build \(mlflow/server/js/build/index.html\)"):
        provide_ui(GIT_MLFLOW, tmp_path / "ui", installed=NO_INSTALLED_UI, download=FakePyPI(tmp_path, "3.17.2", ui=False))


def test_a_wheel_escaping_its_build_is_refused(tmp_path):
    pypi = FakePyPI(tmp_path, "3.17.2", extra={"mlflow/server/js/build/../../../../escaped.txt": "x"})
    with pytest.raises(DeployError, match="holds a path outside its UI build"):
        provide_ui(GIT_MLFLOW, tmp_path / "ui", installed=NO_INSTALLED_UI, download=pypi)
    assert not (tmp_path / "escaped.txt").exists()


def test_the_installed_build_of_the_locked_version_is_used_first(tmp_path):
    build = tmp_path / "installed-build"
    (build / "static-files").mkdir(parents=True)
    (build / "index.html").write_text("<title>built here</title>")
    (build / "static-files" / "main.abc.js").write_text("x")
    (build / "static-files" / "main.abc.js.map").write_text("{}")
    pypi = FakePyPI(tmp_path, "3.17.2")
    ui = provide_ui(GIT_MLFLOW, tmp_path / "ui", installed=(GIT_MLFLOW_VERSION, build), download=pypi)
    assert pypi.requirements == []
    assert files(tmp_path / "ui") == {"index.html", "static-files/main.abc.js"}
    assert ui.describe().startswith(f"the UI of the installed mlflow {GIT_MLFLOW_VERSION}: 2 files")


def test_an_installed_build_of_another_version_is_not_used(tmp_path):
    build = tmp_path / "installed-build"
    build.mkdir()
    (build / "index.html").write_text("<title>3.17.2 from PyPI</title>")
    pypi = FakePyPI(tmp_path, "3.17.2")
    provide_ui(GIT_MLFLOW, tmp_path / "ui", installed=("3.17.2", build), download=pypi)
    assert pypi.requirements == ["mlflow<3.18.0"]


def test_a_given_wheel_comes_before_anything_else(tmp_path, ui_wheel):
    pypi = FakePyPI(tmp_path, "3.17.2")
    ui = provide_ui(GIT_MLFLOW, tmp_path / "ui", ui_wheel=ui_wheel, installed=NO_INSTALLED_UI, download=pypi)
    assert pypi.requirements == [] and ui.version == "3.17.2"
    assert ui.describe().startswith("the UI of mlflow 3.17.2 from mlflow-3.17.2-py3-none-any.whl: 3 files")


def test_a_given_wheel_of_another_major_version_is_refused(tmp_path):
    with pytest.raises(DeployError, match="another major version"):
        provide_ui(GIT_MLFLOW, tmp_path / "ui", ui_wheel=make_mlflow_wheel(tmp_path, "2.22.0"), installed=NO_INSTALLED_UI)


def test_the_real_wheel_layout(tmp_path):
    """The fake wheels put the build where MLflow's own wheel has it (checked against the installed package)."""
    version, build = installed_mlflow()
    assert build is not None and build.as_posix().endswith("mlflow/server/js/build")
    with zipfile.ZipFile(make_mlflow_wheel(tmp_path, version)) as archive:
        assert "mlflow/server/js/build/index.html" in archive.namelist()
