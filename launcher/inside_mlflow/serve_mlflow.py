"""MLflow's server in one process: what `mlflow server` sets up, then its ASGI app under uvicorn here.

`mlflow server` stays resident only to wait on uvicorn, which it starts as its own child and which
imports the whole server a second time. Run as the MLflow child instead (`python -m
launcher.inside_mlflow.serve_mlflow` with the options `launcher.mlflow_process.mlflow_command` builds), this module
does the CLI's part (the server's settings in the environment, the stores opened and their schema
migrated, the CLI's start-up checks) and then serves MLflow's app with uvicorn in this process.

Its stores (backend, registry, default artifact root, artifacts destination) arrive in the
environment, under the names `mlflow server` reads them from, and never on a command line: every
local user can read a process's command line (`ps`), and a store URI may hold a password.

It covers one worker and no job runner, and only the options our command passes. Anything else
that `mlflow server` would act on (another MLflow version, an option set in the environment that is
not mirrored here) makes it exec `mlflow server` with the same options, in the same process, so
the supervisor sees no difference.

Fenced: every MLflow internal it relies on is named here, as found in the versions of
`TESTED_MLFLOW` (mlflow/cli/__init__.py `server`, mlflow/server/__init__.py `_run_server`): the
environment names in `SERVER_ENV_NAMES` (checked on import), `resolve_default_artifact_root`, and the
functions `MlflowServer.load` looks up. tests/launcher/inside_mlflow/test_serve_mlflow.py runs MLflow's CLI with
the same options and compares what it sets up with what this module does.

Either way uvicorn logs with CHILD_LOG_CONFIG: MLflow's own log config plus a filter that folds the
traceback of a request whose client went away mid-body into one line (launcher/inside_mlflow/disconnects.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.client.mlflow_release import TESTED_MLFLOW, is_tested
from launcher.mlflow_package import mlflow_version

# `mlflow server` options read from the environment that this module does not mirror: when one is
# set, MLflow's own CLI runs instead. (Store URIs arrive in STORE_ENV; workers, host and port as
# options; the security settings are read by MLflow's middleware itself.)
CLI_ONLY_ENV = (
    "MLFLOW_READ_REPLICA_BACKEND_STORE_URI",
    "MLFLOW_ARTIFACTS_ONLY",
    "MLFLOW_GUNICORN_OPTS",
    "MLFLOW_UVICORN_OPTS",
    "MLFLOW_EXPOSE_PROMETHEUS",
    "MLFLOW_TRACE_ARCHIVAL_CONFIG",
    "MLFLOW_WORKSPACE_STORE_URI",
    "MLFLOW_ENABLE_WORKSPACES",
)
BOOLEAN_ENV = frozenset({"MLFLOW_ARTIFACTS_ONLY", "MLFLOW_ENABLE_WORKSPACES"})  # "false" or "0" counts as not set
# The store options of `mlflow server` and the environment variables its CLI reads them from (their
# click `envvar`): the only way our command passes them, since a URI may carry a password.
STORE_ENV = {
    "backend_store_uri": "MLFLOW_BACKEND_STORE_URI",
    "registry_store_uri": "MLFLOW_REGISTRY_STORE_URI",
    "default_artifact_root": "MLFLOW_DEFAULT_ARTIFACT_ROOT",
    "artifacts_destination": "MLFLOW_ARTIFACTS_DESTINATION",
}
SECRETS_CACHE_TTL_DEFAULT = "60"  # `mlflow server` defaults, which its CLI always passes on
SECRETS_CACHE_MAX_SIZE_DEFAULT = "1000"
ARTIFACTS_DESTINATION_DEFAULT = "./mlartifacts"
# The environment variables `_run_server` passes the server its settings in, by the names of
# mlflow.server.constants and mlflow.environment_variables (checked in MlflowServer.load).
SERVER_ENV_NAMES = {
    "BACKEND_STORE_URI_ENV_VAR": "_MLFLOW_SERVER_FILE_STORE",
    "REGISTRY_STORE_URI_ENV_VAR": "_MLFLOW_SERVER_REGISTRY_STORE",
    "ARTIFACT_ROOT_ENV_VAR": "_MLFLOW_SERVER_ARTIFACT_ROOT",
    "ARTIFACTS_DESTINATION_ENV_VAR": "_MLFLOW_SERVER_ARTIFACT_DESTINATION",
    "SERVE_ARTIFACTS_ENV_VAR": "_MLFLOW_SERVER_SERVE_ARTIFACTS",
    "SECRETS_CACHE_TTL_ENV_VAR": "MLFLOW_SERVER_SECRETS_CACHE_TTL",
    "SECRETS_CACHE_MAX_SIZE_ENV_VAR": "MLFLOW_SERVER_SECRETS_CACHE_MAX_SIZE",
    "_MLFLOW_SERVER_BOOT_ID": "_MLFLOW_SERVER_BOOT_ID",
    "_MLFLOW_IN_JOB_EXECUTOR": "_MLFLOW_IN_JOB_EXECUTOR",
    "_MLFLOW_SGI_NAME": "_MLFLOW_SGI_NAME",
}
# mlflow.server.handlers.STATIC_PREFIX_ENV_VAR, where `_run_server` puts --static-prefix (checked in MlflowServer.load).
STATIC_PREFIX_ENV_NAME = "_MLFLOW_STATIC_PREFIX"


def installed_mlflow_version() -> str | None:
    """The installed MLflow's version; None without one."""
    return mlflow_version()


def supports_installed_mlflow(version: str | None = None) -> bool:
    """Whether the installed MLflow is one whose server set-up this module mirrors."""
    version = version if version is not None else installed_mlflow_version()
    return is_tested(version)


def parse_arguments(argv: list[str], environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The `mlflow server` options `mlflow_command` passes, with `--uds` for uvicorn's socket.

    A store not given as an option is read from `environ` (STORE_ENV), as MLflow's CLI reads it.
    """
    environ = {} if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m launcher.inside_mlflow.serve_mlflow")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--uds")
    parser.add_argument("--uvicorn-opts", help=argparse.SUPPRESS)  # mlflow_server_command's own, rebuilt by it
    parser.add_argument("--workers", type=int)  # absent: MLflow's default (MLFLOW_WORKERS, else 4)
    for option, name in STORE_ENV.items():
        parser.add_argument(f"--{option.replace('_', '-')}", default=environ.get(name) or None, help=f"default: ${name}")
    parser.add_argument("--serve-artifacts", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--static-prefix")
    parser.add_argument("--app-name")
    return parser.parse_args(argv)


def store_environment(options: argparse.Namespace) -> dict[str, str]:
    """The stores in `options`, by the environment names `mlflow server` reads them from (STORE_ENV)."""
    return {name: value for option, name in STORE_ENV.items() if (value := getattr(options, option))}


def why_mlflow_server(options: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """Why MLflow's own CLI must run rather than this module; None when this module covers it all."""
    if not supports_installed_mlflow():
        return f"MLflow {installed_mlflow_version()} is not a version this module mirrors ({', '.join(TESTED_MLFLOW)})"
    if options.workers != 1:
        return f"--workers {options.workers} needs uvicorn's process manager" if options.workers else "--workers not given"
    if environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true").strip().lower() not in ("false", "0"):
        return "MLflow's job runner is on (MLFLOW_SERVER_ENABLE_JOB_EXECUTION), and its CLI starts it"
    if options.app_name == "basic-auth":
        return "--app-name basic-auth bootstraps its admin user in the CLI"
    for name in CLI_ONLY_ENV:
        value = environ.get(name, "").strip().lower()
        if value and not (name in BOOLEAN_ENV and value in ("false", "0")):
            return f"{name} is set"
    return None


# uvicorn's log config in the child, both ways it runs (tests/launcher/inside_mlflow/test_disconnects.py
# checks it is MLflow's own plus our filter).
CHILD_LOG_CONFIG = Path(__file__).resolve().parent / "uvicorn_log_config.yaml"
# MLflow's uvicorn access line per request repeats the front's request line (which has the status,
# duration, bytes, request id and user), and folding it into our log cost the front more CPU per
# request than forwarding the request did (docs/benchmarks.md).
NO_ACCESS_LOG = "--no-access-log"


def uvicorn_log_options() -> str:
    """uvicorn's log options in `--uvicorn-opts` (MLflow's CLI then leaves out its own --log-config)."""
    return f"--log-config {shlex.quote(str(CHILD_LOG_CONFIG))} {NO_ACCESS_LOG}"


def mlflow_server_command(options: argparse.Namespace) -> list[str]:
    """`python -m mlflow server` with the same options but the stores, which it reads from its
    environment (`store_environment`): a command line is readable by every local user."""
    command = [sys.executable, "-m", "mlflow", "server"]
    if options.uds:
        # MLflow's CLI appends these to uvicorn's command line (_build_uvicorn_command); uvicorn binds
        # --uds and ignores the --host/--port the CLI still adds (their defaults). Only our front can
        # reach the socket, and it sends X-Forwarded-For itself, so uvicorn may trust it: the peer of
        # a Unix socket has no address, and without a trusted X-Forwarded-For MLflow would see no
        # client (its assistant then treats every caller as remote).
        command += ["--uvicorn-opts", f"--uds {shlex.quote(options.uds)} --forwarded-allow-ips '*' {uvicorn_log_options()}"]
    else:
        command += ["--host", options.host, "--port", str(options.port), f"--uvicorn-opts={uvicorn_log_options()}"]
    if options.workers:
        command += ["--workers", str(options.workers)]
    command += ["--serve-artifacts"] if options.serve_artifacts else ["--no-serve-artifacts"]
    if options.static_prefix:
        command += ["--static-prefix", options.static_prefix]
    if options.app_name:
        command += ["--app-name", options.app_name]
    return command


def server_environment(options: argparse.Namespace, default_artifact_root: str, environ: Mapping[str, str]) -> dict[str, str]:
    """What `mlflow server` (its CLI, then `_run_server`) puts in the server's environment for these options."""
    names = SERVER_ENV_NAMES
    env = {
        names["BACKEND_STORE_URI_ENV_VAR"]: options.backend_store_uri,
        names["REGISTRY_STORE_URI_ENV_VAR"]: options.registry_store_uri or options.backend_store_uri,
        names["ARTIFACT_ROOT_ENV_VAR"]: default_artifact_root,
        # The CLI passes its option's value, default or MLFLOW_ARTIFACTS_DESTINATION, even when not serving.
        names["ARTIFACTS_DESTINATION_ENV_VAR"]: options.artifacts_destination or environ.get("MLFLOW_ARTIFACTS_DESTINATION") or ARTIFACTS_DESTINATION_DEFAULT,
        names["SECRETS_CACHE_TTL_ENV_VAR"]: SECRETS_CACHE_TTL_DEFAULT,
        names["SECRETS_CACHE_MAX_SIZE_ENV_VAR"]: SECRETS_CACHE_MAX_SIZE_DEFAULT,
        names["_MLFLOW_SERVER_BOOT_ID"]: uuid.uuid4().hex,
        names["_MLFLOW_IN_JOB_EXECUTOR"]: "false",
        names["_MLFLOW_SGI_NAME"]: "uvicorn",
        "MLFLOW_ENABLE_WORKSPACES": "false",  # the CLI writes what it resolved; set, it sends us to the CLI
    }
    if options.serve_artifacts:
        env[names["SERVE_ARTIFACTS_ENV_VAR"]] = "true"
    if options.static_prefix:  # read by mlflow.server.handlers when its routes are declared, at import
        env[STATIC_PREFIX_ENV_NAME] = options.static_prefix
    return env


@dataclass(frozen=True)
class MlflowServer:
    """The MLflow internals this module calls, looked up and checked in one place."""

    initialize_backend_stores: Callable  # mlflow.server.handlers: opens the stores; a SQL store migrates its schema
    validate_sql_trace_rollup_startup: Callable  # mlflow.tracing.trace_rollup_service: the CLI's start-up check
    assert_server_workspace_env_unset: Callable  # mlflow.utils.server_cli_utils: the CLI's start-up check
    find_app: Callable  # mlflow.server._find_app: an `mlflow.app` plugin's "module:attribute"
    is_factory: Callable  # mlflow.server._is_factory

    @classmethod
    def load(cls) -> MlflowServer:
        """Import them once the server's environment is set: mlflow.server reads it on import.

        Raises RuntimeError, in one line, when one is missing or an environment name has changed."""
        import mlflow.environment_variables as env_vars
        import mlflow.server as server
        import mlflow.server.constants as constants
        import mlflow.server.handlers as handlers
        import mlflow.tracing.trace_rollup_service as rollups
        import mlflow.utils.server_cli_utils as cli_utils

        for attribute, name in SERVER_ENV_NAMES.items():
            found = getattr(constants, attribute, None) or getattr(getattr(env_vars, attribute, None), "name", None)
            if found != name:
                raise RuntimeError(f"MLflow's {attribute} is {found!r}, not {name!r}: this MLflow is not one launcher/inside_mlflow/serve_mlflow.py mirrors")
        if getattr(handlers, "STATIC_PREFIX_ENV_VAR", None) != STATIC_PREFIX_ENV_NAME:
            raise RuntimeError(f"MLflow's STATIC_PREFIX_ENV_VAR is not {STATIC_PREFIX_ENV_NAME!r}: this MLflow is not one launcher/inside_mlflow/serve_mlflow.py mirrors")
        try:
            return cls(
                initialize_backend_stores=handlers.initialize_backend_stores,
                validate_sql_trace_rollup_startup=rollups.validate_sql_trace_rollup_startup,
                assert_server_workspace_env_unset=cli_utils.assert_server_workspace_env_unset,
                find_app=server._find_app,
                is_factory=server._is_factory,
            )
        except AttributeError as exc:
            raise RuntimeError(f"{exc}: this MLflow is not one launcher/inside_mlflow/serve_mlflow.py mirrors") from None


def say(level: str, message: str) -> None:
    print(f"{level} mlflow_app.child: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    options = parse_arguments(sys.argv[1:] if argv is None else argv, os.environ)
    if not options.backend_store_uri:
        say("ERROR", f"no backend store: set {STORE_ENV['backend_store_uri']} in the environment")
        sys.exit(2)
    if reason := why_mlflow_server(options, os.environ):
        say("INFO", f"running `mlflow server`: {reason}")
        command = mlflow_server_command(options)
        os.execve(command[0], command, {**os.environ, **store_environment(options)})

    # uvicorn first: mlflow.server installs its security middleware only in a process that has it.
    import uvicorn
    from mlflow.utils.server_cli_utils import resolve_default_artifact_root  # the CLI's; imports no mlflow.server

    default_artifact_root = resolve_default_artifact_root(options.serve_artifacts, options.default_artifact_root, options.backend_store_uri)
    os.environ.update(server_environment(options, default_artifact_root, os.environ))
    try:
        mlflow = MlflowServer.load()
    except RuntimeError as exc:
        say("ERROR", str(exc))
        sys.exit(1)
    mlflow.assert_server_workspace_env_unset()
    try:
        mlflow.initialize_backend_stores(options.backend_store_uri, options.registry_store_uri or options.backend_store_uri, default_artifact_root)
    except Exception:
        logging.getLogger("mlflow.server").exception("Error initializing backend store")
        sys.exit(1)
    mlflow.validate_sql_trace_rollup_startup(options.backend_store_uri)

    app, factory = "mlflow.server.fastapi_app:app", False
    if options.app_name:
        app = mlflow.find_app(options.app_name)
        factory = mlflow.is_factory(app)
    # On the socket only our front connects, and it sends X-Forwarded-For: trust it, as uvicorn
    # trusts 127.0.0.1 over TCP (and as mlflow_server_command does).
    address = {"uds": options.uds, "forwarded_allow_ips": "*"} if options.uds else {"host": options.host, "port": options.port}
    uvicorn.run(app, factory=factory, workers=1, log_config=str(CHILD_LOG_CONFIG), access_log=False, **address)


if __name__ == "__main__":
    main()
