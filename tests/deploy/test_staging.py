"""The staged upload: only what the app runs, and the checks that run before anything is sent."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from deploy import DeployError
from deploy.staging import MAX_FILE_BYTES, check_limits, limit_problems, prepare_stage_dir, scan, stage_app
from deploy.ui_build import installed_mlflow
from launcher.cli import STAGE_DIR, main
from tests.deploy.conftest import GOLDEN, REPO, copy_project

FAKE_PAT = "dapi" + "0123456789abcdef" * 2  # the shape of a Databricks token, made up here


def staged_paths(root) -> set[str]:
    return {f.path for f in scan(root).files}


def test_only_what_the_app_runs(tmp_path):
    dest = tmp_path / "stage"
    dest.mkdir()
    staged = stage_app(REPO, dest, app_yaml="command: []\n", requirements="click==8.1\n")
    paths = {f.path for f in staged.files}
    assert {"app.yaml", "requirements.txt", "launcher/__main__.py", "launcher/cli.py", "proxy/app.py"} <= paths
    assert {p.split("/")[0] for p in paths} == {"app.yaml", "requirements.txt", "launcher", "proxy"}  # deploy/ runs only where one deploys
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")]
    assert staged.total_size == sum((dest / p).stat().st_size for p in paths)


def test_stage_command_builds_the_folder_databricks_yml_points_at(git_project, ui_wheel):
    result = CliRunner().invoke(main, ["stage", "--project-dir", str(git_project), "--ui-wheel", str(ui_wheel)])
    assert result.exit_code == 0, result.output
    folder = git_project / STAGE_DIR
    assert (folder / "app.yaml").read_text() == (GOLDEN / "app-git-mlflow.yaml").read_text()
    assert "mlflow @ git+https://github.com/mlflow/mlflow.git@" in (folder / "requirements.txt").read_text()
    assert (folder / "mlflow-ui" / "index.html").is_file()
    assert not list(folder.rglob("*.map"))
    assert "UI assets: the UI of mlflow 3.17.2 from mlflow-3.17.2-py3-none-any.whl: 3 files" in result.stdout
    assert f"Staged {folder}: " in result.stdout and "no file over 10 MB, nothing secret" in result.stdout
    # A second run replaces the earlier staging.
    (folder / "stale.txt").write_text("from an earlier run")
    assert CliRunner().invoke(main, ["stage", "--project-dir", str(git_project), "--ui-wheel", str(ui_wheel)]).exit_code == 0
    assert not (folder / "stale.txt").exists()


def test_a_folder_that_is_not_a_staging_is_left_alone(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DeployError, match="is not an earlier staging"):
        prepare_stage_dir(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        (".env", "X=1", "is a kind of file that holds secrets (.env)"),
        ("proxy/.env.production", "X=1", "is a kind of file that holds secrets (.env.production)"),
        ("deploy/id_rsa", "x", "is a kind of file that holds secrets (id_rsa)"),
        ("launcher/server.pem", "x", "is a kind of file that holds secrets (server.pem)"),
        (".databrickscfg", "[DEFAULT]", "is a kind of file that holds secrets (.databrickscfg)"),
        ("launcher/notes.py", f"TOKEN = '{FAKE_PAT}'", "holds what looks like a Databricks personal access token"),
        ("proxy/key.txt", "-----BEGIN RSA PRIVATE KEY-----\nabc", "holds what looks like a private key"),
        ("proxy/ssh.txt", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc", "holds what looks like a private key"),
        ("deploy/aws.py", "key = 'AKIAABCDEFGHIJKLMNOP'", "holds what looks like an AWS access key id"),
        ("deploy/gh.py", "t = 'ghp_" + "a" * 36 + "'", "holds what looks like a GitHub token"),
    ],
)
def test_secrets_are_refused(tmp_path, name, content, problem):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(content)
    assert limit_problems(scan(tmp_path)) == [f"{name} {problem}"]


def test_size_limit_is_the_platforms_10_mb_in_bytes_not_mebibytes(tmp_path):
    """The platform states 10 MB: 10,000,000 bytes. A file between that and 10 MiB is refused too."""
    (tmp_path / "at-limit.js").write_bytes(b"x" * 10_000_000)
    (tmp_path / "over.js").write_bytes(b"x" * 10_000_001)
    assert limit_problems(scan(tmp_path)) == ["over.js is 10,000,001 bytes, over the platform's limit of 10 MB (10,000,000 bytes) per file"]


def test_every_problem_in_one_line(tmp_path):
    (tmp_path / ".env").write_text("X=1")
    (tmp_path / "big.bin").write_bytes(b"\0" * (MAX_FILE_BYTES + 1))
    with pytest.raises(DeployError) as raised:
        check_limits(scan(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and message.startswith("Nothing was uploaded: ")
    assert ".env is a kind of file" in message and "big.bin is 10,000,001 bytes" in message


def test_the_checks_pass_our_packages_and_mlflows_ui(tmp_path):
    """No false alarm on what is really uploaded: our code (secret patterns included) and the UI build."""
    assert limit_problems(scan(copy_project(None, tmp_path / "project"))) == []
    _, build = installed_mlflow()
    assert limit_problems(scan(build)) == []
