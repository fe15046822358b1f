"""The `app.yaml` Databricks Apps runs: our command and the settings the app needs there, rendered from
`app.yaml.j2`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2

from deploy import DeployError

TEMPLATE = Path(__file__).resolve().parent.parent / "app.yaml.j2"

# Run from the uploaded source folder (the platform's working directory, on sys.path with -m):
# our packages are not pip-installed there, only requirements.txt is.
COMMAND = ("python", "-m", "launcher", "serve")

# The key shared by the app's volume resource and app.yaml's valueFrom; the platform puts the
# volume's path (/Volumes/<catalog>/<schema>/<volume>) in the variable.
VOLUME_RESOURCE = "artifact-volume"
VOLUME_ENV = "MLFLOW_ARTIFACTS_DESTINATION"

# Where the staged upload keeps MLflow's UI when the platform's MLflow has none (a git build).
UI_DIR_IN_SOURCE = "mlflow-ui"

# Set by the platform itself: a value of ours would be ignored or would break the app.
PLATFORM_ENV = frozenset(
    {
        "DATABRICKS_APP_NAME", "DATABRICKS_APP_PORT", "DATABRICKS_APP_URL", "DATABRICKS_HOST",
        "DATABRICKS_WORKSPACE_ID", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET",
    }
)  # fmt: skip
CREDENTIAL_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class EnvVar:
    """One `env` item: a literal `value`, or `value_from` an app resource's key."""

    name: str
    value: str | None = None
    value_from: str | None = None


@dataclass(frozen=True)
class AppConfig:
    command: tuple[str, ...]
    env: tuple[EnvVar, ...]


def databricks_app_config(*, ui_in_source: bool, extra_env: Iterable[tuple[str, str]] = ()) -> AppConfig:
    """The command and settings of `mlflow-app serve` on Databricks Apps.

    The workspace's tracking store and Unity Catalog registry, JSON logs (the platform keeps only
    stdout), artifacts on the app's volume resource, and the uploaded UI build when there is one.
    `extra_env` (NAME, VALUE) pairs add settings or replace ours of the same name.
    """
    env = {
        "MLFLOW_BACKEND_STORE_URI": EnvVar("MLFLOW_BACKEND_STORE_URI", "databricks"),
        "MLFLOW_REGISTRY_STORE_URI": EnvVar("MLFLOW_REGISTRY_STORE_URI", "databricks-uc"),
        "MLFLOW_APP_LOG_FORMAT": EnvVar("MLFLOW_APP_LOG_FORMAT", "json"),
        VOLUME_ENV: EnvVar(VOLUME_ENV, value_from=VOLUME_RESOURCE),
    }
    if ui_in_source:
        env["MLFLOW_APP_UI_DIR"] = EnvVar("MLFLOW_APP_UI_DIR", UI_DIR_IN_SOURCE)
    for name, value in extra_env:
        check_extra_env(name, value)
        env[name] = EnvVar(name, value)
    return AppConfig(COMMAND, tuple(env.values()))


def check_extra_env(name: str, value: str) -> None:
    if not ENV_NAME.fullmatch(name):
        raise DeployError(f"--env: '{name}' is not an environment variable name; use NAME=VALUE with letters, digits and _.")
    if name in PLATFORM_ENV:
        raise DeployError(f"--env: {name} is set by Databricks Apps itself; leave it out.")
    if CREDENTIAL_NAME.search(name):
        raise DeployError(f"--env: {name} looks like a credential, and app.yaml is uploaded in clear; leave it out (the app authenticates with its own service principal).")
    if not value.isprintable():
        raise DeployError(f"--env: the value of {name} holds control characters or line breaks; use a single printable line.")


def parse_env_options(items: Iterable[str]) -> list[tuple[str, str]]:
    """`--env NAME=VALUE` options as pairs, in the order given."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise DeployError(f"--env: '{item}' has no '='; use NAME=VALUE.")
        pairs.append((name, value))
    return pairs


def yaml_string(value: str) -> str:
    # A JSON string is a YAML double-quoted scalar; values are checked printable, so only " and \ get escaped.
    return json.dumps(value, ensure_ascii=False)


def render_app_yaml(config: AppConfig) -> str:
    """The text of `app.yaml` for `config`: the same input gives the same bytes."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    environment.filters["yaml_string"] = yaml_string
    template = environment.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(command=config.command, env=config.env)
