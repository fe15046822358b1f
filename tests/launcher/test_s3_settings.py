"""s3:// artifact locations: boto3 (the `s3` extra) checked at start, and AWS credentials masked."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.redaction import MASK, Redactor, aws_file_secrets
from launcher.settings import Settings, SettingsError, uri_for_message, validate
from tests.app_process import free_port
from tests.launcher.test_cli import clean_env

CONSOLE_SCRIPT = Path(sys.executable).parent / "mlflow-app"
MISSING_BOTO3 = "{option}: s3:// needs the 'boto3' package, which is not installed; install mlflow-app with its s3 extra (uv sync --extra s3, or pip install 'mlflow-app[s3]')."


@pytest.fixture
def without_boto3(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "boto3" else real_find_spec(name, *a))


@pytest.fixture
def make(tmp_path: Path):
    ui_dir = tmp_path / "ui"
    ui_dir.mkdir()
    (ui_dir / "index.html").write_text("<html></html>")
    return lambda **overrides: Settings(**{"data_dir": tmp_path / "data", "ui_dir": ui_dir, **overrides})


@pytest.mark.parametrize("option", ["artifacts_destination", "default_artifact_root"])
def test_an_s3_location_without_boto3_is_one_line_naming_the_extra(make, without_boto3, option):
    with pytest.raises(SettingsError) as caught:
        validate(make(**{option: "s3://bucket/prefix"}))
    assert str(caught.value) == MISSING_BOTO3.format(option="--" + option.replace("_", "-"))


def test_boto3_is_asked_for_only_where_an_s3_location_is_used(make, without_boto3):
    validate(make(artifacts_destination="gs://bucket/prefix"))  # another store: not ours to check
    validate(make(artifacts_destination="/srv/artifacts", default_artifact_root="mlflow-artifacts:/"))
    validate(make(artifacts_destination="s3://bucket/prefix", serve_artifacts=False))  # a destination MLflow does not use


def test_with_boto3_installed_an_s3_location_passes(make):
    assert importlib.util.find_spec("boto3") is not None, "the dev group installs boto3"
    validate(make(artifacts_destination="s3://bucket/prefix", default_artifact_root="s3://bucket/direct"))


def test_serve_without_boto3_exits_at_start_with_the_line(tmp_path):
    """The real console script on a Python where `import boto3` fails (a sitecustomize that blocks it)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['boto3'] = None  # `import boto3` now fails\n")
    env = clean_env(PYTHONPATH=str(shim), MLFLOW_ARTIFACTS_DESTINATION="s3://team-bucket/mlflow")
    blocked = subprocess.run([sys.executable, "-c", "import boto3"], env=env, capture_output=True, text=True, timeout=60)
    assert blocked.returncode != 0 and "ModuleNotFoundError" in blocked.stderr, "the shim must block boto3, or this test proves nothing"

    run = subprocess.run(
        [str(CONSOLE_SCRIPT), "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.splitlines() == ["Error: " + MISSING_BOTO3.format(option="--artifacts-destination")]
    assert run.stdout == ""
    assert not (tmp_path / "data").exists(), "nothing was started or created"


def test_aws_secret_variables_are_masked():
    environ = {
        "AWS_ACCESS_KEY_ID": "ASIAEXAMPLEKEYID0001",  # an identifier, not a secret: left readable
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYs3",
        "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEXAMPLEsession",
        "AWS_SECURITY_TOKEN": "IQoJb3JpZ2luX2VjEXAMPLElegacy",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "eksPodIdentityTOKEN0123",
    }
    redact = Redactor.from_environment(environ)
    line = redact(" ".join(environ.values()))
    assert line.split() == ["ASIAEXAMPLEKEYID0001", MASK, MASK, MASK, MASK]


def test_secrets_in_aws_shared_files_are_masked(tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = defaultSECRETvalue0\n[team]\naws_secret_access_key = teamSECRETvalue01\naws_session_token = teamSESSIONtoken01\n"
    )
    config = tmp_path / "config"
    config.write_text("[profile ci]\nregion = eu-west-1\naws_secret_access_key = configSECRETvalue\n")
    environ = {"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_CONFIG_FILE": str(config)}

    assert sorted(aws_file_secrets(environ)) == sorted(["defaultSECRETvalue0", "teamSECRETvalue01", "teamSESSIONtoken01", "configSECRETvalue"])
    line = Redactor.from_environment(environ)("keys defaultSECRETvalue0 teamSECRETvalue01 teamSESSIONtoken01 configSECRETvalue AKIADEFAULT eu-west-1")
    assert line == f"keys {MASK} {MASK} {MASK} {MASK} AKIADEFAULT eu-west-1"


def test_the_default_aws_files_are_read_from_home_and_broken_ones_skipped(tmp_path):
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\naws_secret_access_key = homeSECRETvalue01\n")
    (tmp_path / ".aws" / "config").write_text("not an ini file at all\n")
    assert aws_file_secrets({"HOME": str(tmp_path)}) == ["homeSECRETvalue01"]
    assert aws_file_secrets({"HOME": str(tmp_path / "nowhere")}) == []
    assert aws_file_secrets({}) == []


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("destination s3://AKIAKEY:wJalrSECRET/with+slash@bucket/prefix", "wJalrSECRET/with+slash"),
        ("MLFLOW_S3_ENDPOINT_URL=http://minio:minioSECRETpw@minio.internal:9000", "minioSECRETpw"),
        # A presigned URL, as boto3 makes them: the session token and the signature ride in the query.
        ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIA%2F20261202&X-Amz-Security-Token=IQoJsessionTOKEN&X-Amz-Signature=abc123", "IQoJsessionTOKEN"),
        ("PUT /bucket/k?partNumber=1&uploadId=u&X-Amz-Security-Token=IQoJsessionTOKEN&X-Amz-Signature=abc123 HTTP/1.1", "IQoJsessionTOKEN"),
    ],
)  # fmt: skip
def test_keys_inside_uris_are_masked(text, secret):
    assert secret not in Redactor()(text)
    assert "abc123" not in Redactor()(text)


def test_an_s3_destination_prints_without_its_keys():
    assert uri_for_message("s3://AKIAKEY:wJalrSECRET@bucket/prefix") == "s3://AKIAKEY:***@bucket/prefix"
    assert uri_for_message("s3://bucket/prefix") == "s3://bucket/prefix"
