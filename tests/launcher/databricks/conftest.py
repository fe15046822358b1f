"""The stand-in workspace (tests/standin) and a clean Databricks environment, for Databricks mode's tests."""

from __future__ import annotations

import os

import pytest

from tests.standin.workspace import StandinWorkspace

PAT = "dapiSTANDINpat4f1e9c7b3a5d2e8f"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The stand-in without its MLflow: the check signs in and asks who it is, nothing more."""
    with StandinWorkspace(tmp_path_factory.mktemp("standin"), pat=PAT, with_mlflow=False) as running:
        yield running


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No Databricks variable from the machine running the tests, and no ~/.databrickscfg."""

    for name in list(os.environ):
        if name.startswith("DATABRICKS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


@pytest.fixture
def signed_in(workspace, env):
    env(**workspace.oauth_env())
    workspace.requests.clear()
    workspace.faults.token_delay = 0.0
    return workspace
