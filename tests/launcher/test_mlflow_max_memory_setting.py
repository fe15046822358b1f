"""`--mlflow-max-memory` (MLFLOW_APP_MLFLOW_MAX_MEMORY): a size in bytes or KiB/MiB/GiB, off by default."""

from __future__ import annotations

import pytest

from launcher.settings_table import ByteSize
from tests.launcher.test_cli import captured, invoke, only_run  # noqa: F401 (captured is a fixture)


def test_off_by_default(captured):  # noqa: F811
    assert only_run(invoke(), captured).mlflow_max_memory is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [("2GiB", 2 << 30), ("512MiB", 512 << 20), ("1.5G", 3 << 29), ("300m", 300 << 20), ("1048576", 1 << 20)],
)
def test_from_the_flag_or_the_environment(captured, given, expected):  # noqa: F811
    assert only_run(invoke("--mlflow-max-memory", given), captured).mlflow_max_memory == expected
    captured.clear()
    assert only_run(invoke(env={"MLFLOW_APP_MLFLOW_MAX_MEMORY": given}), captured).mlflow_max_memory == expected


@pytest.mark.parametrize("given", ["lots", "2TB", "-1", "0", "0.1"])
def test_a_size_that_is_not_one_fails_naming_the_option(captured, given):  # noqa: F811
    result = invoke("--mlflow-max-memory", given)
    assert result.exit_code == 2 and not captured
    assert "--mlflow-max-memory" in result.output and "2GiB" in result.output


def test_the_type_takes_bytes_as_given_in_code():
    assert ByteSize().convert(4096, None, None) == 4096
