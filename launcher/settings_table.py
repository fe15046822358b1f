"""Every setting of `mlflow-app serve`, declared once.

Each row names the `Settings` field, the option, the environment variables, the click type (ranges
and choices checked where the value is parsed), the default and the help. `Settings`
(launcher/settings.py) takes its fields and defaults from here, `serve`'s options are made from
here (launcher/cli.py), and so is the README's configuration table: `tests/launcher/
test_settings_table.py` fails when the README says otherwise, and
`uv run python -m launcher.settings_table` prints the rows to paste.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from proxy.edge.policy import DEFAULT_ALLOWED_HOSTS
from proxy.forwarding.compression import DEFAULT_MIN_BYTES
from proxy.forwarding.forwarder import DEFAULT_MAX_PER_CLIENT

LOG_LEVELS = ("debug", "info", "warning", "error")


def on_databricks_apps(environ: dict[str, str] | None = None) -> bool:
    """Whether we run on Databricks Apps, whose proxy authenticates every user before us."""
    return bool((os.environ if environ is None else environ).get("DATABRICKS_APP_NAME"))


def split_list(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


class ByteSize(click.ParamType):
    """A size in bytes: `2147483648`, `2GiB`, `512MiB`, `1.5G` (G, M, K count as GiB, MiB, KiB)."""

    name = "size"
    UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = match and self.UNITS.get(match.group(2).lower())
        if not unit or float(match.group(1)) * unit < 1:
            self.fail(f"'{value}' is not a size; give bytes, or a number with KiB, MiB or GiB (e.g. 2GiB).", param, ctx)
        return int(float(match.group(1)) * unit)


@dataclass(frozen=True)
class Setting:
    """One setting: where it comes from, what it may be, what it is for."""

    field: str  # the Settings attribute
    option: str  # as on the command line; "--x/--no-x" for a switch
    env: tuple[str, ...]  # the environment variables it is read from, the first one ours
    type: Any  # the Python type of the Settings field
    default: Any  # the Settings default (and the CLI's, unless on_apps says otherwise)
    help: str  # for --help and the README
    # A click type (IntRange, FloatRange, Choice, Path); None for text, a switch, or a number whose
    # range `validate` checks for Settings made in code as well (launcher/settings.py).
    click_type: Any = None
    on_apps: Any = None  # the default on Databricks Apps, where it differs
    dynamic: Callable[[], Any] | None = None  # computes the CLI's default from the environment instead
    shown: str | None = None  # how the default reads in --help and the README, when the value does not say it well
    metavar: str | None = None
    is_list: bool = False  # comma-separated on the command line, a tuple in Settings
    flag: bool = False  # a flag without a value (--no-auth)
    secret: bool = False  # never in a repr

    @property
    def is_switch(self) -> bool:
        return "/" in self.option

    def cli_default(self) -> Any:
        """The default as the CLI takes it, where we run deciding."""
        if self.dynamic is not None:
            return self.dynamic()
        if self.on_apps is not None and on_databricks_apps():
            return self.on_apps
        return self.default

    def readme_default(self) -> str:
        if self.shown is not None:
            return self.shown
        if self.is_switch or self.flag:
            return "on" if self.default else "off"
        if self.default is None or self.default == ():
            return "none"
        return f"`{self.default}`"

    def readme_row(self) -> str:
        names = ", ".join(f"`{name}`" for name in self.env)
        return f"| `{self.option.replace('/', ' / ')}` | {names} | {self.readme_default()} | {self.help} |"

    def click_option(self) -> Callable:
        options: dict[str, Any] = {"envvar": list(self.env), "show_envvar": True, "help": plain_text(self.help)}
        if self.flag:
            options |= {"is_flag": True, "default": self.default}
        else:
            environment_decides = self.on_apps is not None or self.dynamic is not None
            options["default"] = self.cli_default if environment_decides else _cli_value(self.default, self.is_list)
            if self.click_type is not None:
                options["type"] = self.click_type
            elif self.type in (int, float):
                options["type"] = self.type
            options["show_default"] = plain_text(self.shown) if self.shown is not None else (self.default not in (None, ()))
        if self.metavar:
            options["metavar"] = self.metavar
        return click.option(self.option, self.field, **options)


def plain_text(markdown: str) -> str:
    """The README's Markdown as --help shows it: no backticks, a link's text without its target."""
    return re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", markdown).replace("`", "")


def _cli_value(default: Any, is_list: bool) -> Any:
    if is_list:
        return None  # parsed by the caller; an absent list keeps the Settings default
    return default


def default_host() -> str:
    """All interfaces on Databricks Apps (the platform's proxy must reach us), loopback elsewhere."""
    return "0.0.0.0" if os.environ.get("DATABRICKS_APP_PORT") or on_databricks_apps() else "127.0.0.1"


def default_experiment_folder() -> str | None:
    """On Databricks Apps a workspace folder of the app's own, `/Shared/<app name>`; elsewhere none."""
    app_name = os.environ.get("DATABRICKS_APP_NAME", "").strip()
    return f"/Shared/{app_name}" if app_name else None


SERVE_SETTINGS: tuple[Setting, ...] = (
    Setting("host", "--host", ("MLFLOW_HOST",), str, "127.0.0.1", dynamic=lambda: default_host(), shown="`127.0.0.1`; `0.0.0.0` on Databricks Apps",
            help="Address the front listens on. MLflow itself listens on 127.0.0.1 or a private Unix socket only."),
    Setting("port", "--port", ("MLFLOW_PORT", "DATABRICKS_APP_PORT"), int, 8000, shown="`$DATABRICKS_APP_PORT`, else `8000`",
            help="Port the front listens on: the one port users, clients and monitoring reach."),
    Setting("static_prefix", "--static-prefix", ("MLFLOW_STATIC_PREFIX",), str | None, None, metavar="PATH",
            help="Serve everything under this path, for a reverse proxy that routes a path such as `/mlflow` to the server: the UI "
                 "at `/mlflow/`, the API at `/mlflow/api/…`, `/mlflow/health`, `/mlflow/metrics`; clients use "
                 "`MLFLOW_TRACKING_URI=http://host/mlflow`. Starts with `/`, no trailing slash, segments of letters, digits and "
                 "`-._~`. Other paths answer 404, except `/health` for probes. See [docs/self-hosted.md](docs/self-hosted.md#behind-a-reverse-proxy-under-a-path)."),
    Setting("backend_store_uri", "--backend-store-uri", ("MLFLOW_BACKEND_STORE_URI",), str | None, None, on_apps="databricks", metavar="URI",
            shown="an embedded SQLite database in `--data-dir`; `databricks` on Databricks Apps",
            help="Where MLflow keeps experiments and runs: `sqlite:///…`, `postgresql://…`, `mysql://…`, `file:/…`, or "
                 "`databricks` (a workspace's tracking store, with `DATABRICKS_HOST` and credentials)."),
    Setting("registry_store_uri", "--registry-store-uri", ("MLFLOW_REGISTRY_STORE_URI",), str | None, None, on_apps="databricks-uc", metavar="URI",
            shown="the backend store; `databricks-uc` on Databricks Apps",
            help="Where MLflow keeps registered models (e.g. `databricks-uc`, a workspace's Unity Catalog)."),
    Setting("default_artifact_root", "--default-artifact-root", ("MLFLOW_DEFAULT_ARTIFACT_ROOT",), str | None, None, metavar="URI",
            shown="MLflow's choice (`mlflow-artifacts:/` when serving artifacts)",
            help="Artifact location for new experiments."),
    Setting("serve_artifacts", "--serve-artifacts/--no-serve-artifacts", ("MLFLOW_SERVE_ARTIFACTS",), bool, True,
            help="Clients upload and download artifacts through the server over HTTP, so they need no access to the artifact store themselves."),
    Setting("artifacts_destination", "--artifacts-destination", ("MLFLOW_ARTIFACTS_DESTINATION",), str | None, None, metavar="URI",
            shown="`<data-dir>/artifacts`",
            help="Where served artifacts are stored: a path, `s3://`, `gs://`, `wasbs://`, `abfss://`, …"),
    Setting("experiment_folder", "--experiment-folder", ("MLFLOW_APP_EXPERIMENT_FOLDER",), str | None, None, dynamic=lambda: default_experiment_folder(),
            metavar="PATH", shown="none; `/Shared/<DATABRICKS_APP_NAME>` on Databricks Apps",
            help="Workspace folder (an absolute path) for experiments named without one, with a workspace tracking store (`databricks`): "
                 "`churn` becomes `<folder>/churn`, and the default experiment (`0`, what `mlflow.start_run()` uses with nothing set) "
                 "is `<folder>/Default`. Created at start if missing. Without it, such names are refused with a 400 saying to set it. "
                 "See [docs/databricks.md](docs/databricks.md)."),
    Setting("workers", "--workers", ("MLFLOW_WORKERS",), int, 1,
            help="MLflow's uvicorn workers. Each costs about 250 MB and a few CPU-seconds at start."),
    Setting("job_execution", "--job-execution/--no-job-execution", ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION",), bool, False,
            help="MLflow's background job runner (GenAI jobs such as scheduled scorers). Off: it starts about a dozen more "
                 "processes and 2 GiB of memory (see below)."),
    Setting("data_dir", "--data-dir", ("MLFLOW_APP_DATA_DIR",), Path, Path("mlflow-data"), click_type=click.Path(path_type=Path), shown="`./mlflow-data`",
            help="Directory of the embedded default: `mlflow.db` (SQLite) and `artifacts/`. Only created when used."),
    Setting("ui_dir", "--ui-dir", ("MLFLOW_APP_UI_DIR",), Path | None, None, click_type=click.Path(path_type=Path),
            shown="the build inside the installed `mlflow` package",
            help="The MLflow UI build the front serves."),
    Setting("mlflow_port", "--mlflow-port", ("MLFLOW_APP_MLFLOW_PORT",), int, 0, shown="a free loopback port",
            help="Loopback port of the MLflow child (implies TCP instead of the Unix socket)."),
    Setting("mlflow_unix_socket", "--mlflow-unix-socket/--no-mlflow-unix-socket", ("MLFLOW_APP_MLFLOW_UNIX_SOCKET",), bool, True,
            help="Run the MLflow child on a Unix socket in a directory only this user can open, instead of a loopback port every "
                 "local account can reach around `--auth-token`. TCP is kept with `--mlflow-port` or `--job-execution` (MLflow's job "
                 "runner calls the server over HTTP), and when the socket's path would pass 107 bytes (a long `TMPDIR`)."),
    Setting("log_format", "--log-format", ("MLFLOW_APP_LOG_FORMAT",), str, "text", click_type=click.Choice(["text", "json"]), on_apps="json",
            shown="`text`; `json` on Databricks Apps",
            help="`text` for people, `json` (one object per line) for log collectors."),
    Setting("log_level", "--log-level", ("MLFLOW_APP_LOG_LEVEL",), str, "info", click_type=click.Choice(LOG_LEVELS),
            help="Lowest level logged: `debug`, `info`, `warning` or `error`. The front's request log is `info`."),
    Setting("mlflow_log_level", "--mlflow-log-level", ("MLFLOW_APP_MLFLOW_LOG_LEVEL",), str | None, None, click_type=click.Choice(LOG_LEVELS),
            shown="`--log-level`",
            help="Lowest level of MLflow's own output in the log (also its `MLFLOW_LOGGING_LEVEL`). MLflow writes no access line per "
                 "request: the front's request line covers each one."),
    Setting("upstream_timeout", "--upstream-timeout", ("MLFLOW_APP_UPSTREAM_TIMEOUT",), float, 60.0,
            help="Seconds to wait for MLflow to start answering (and between bytes of a transfer) before the client gets 504."),
    Setting("mlflow_start_timeout", "--mlflow-start-timeout", ("MLFLOW_APP_MLFLOW_START_TIMEOUT",), float, 300.0,
            help="Seconds MLflow may take to become ready, migrations included, before it is restarted."),
    Setting("compress_responses", "--compress-responses/--no-compress-responses", ("MLFLOW_APP_COMPRESS_RESPONSES",), bool, True,
            help="Compress MLflow's large JSON answers (runs/search, metric history, ...) with brotli (quality 1) or gzip (level 1) for "
                 "clients that accept it, streamed, with `Vary: Accept-Encoding`; never artifacts, event streams, answers without a "
                 "`Content-Length` or already encoded. A 6.4 MB runs/search goes out as 0.64 MB for ~10 ms of CPU (docs/benchmarks.md)."),
    Setting("compress_min_bytes", "--compress-min-bytes", ("MLFLOW_APP_COMPRESS_MIN_BYTES",), int, DEFAULT_MIN_BYTES, click_type=click.IntRange(min=0),
            help="Smallest JSON answer, in bytes, that is compressed; smaller ones fit in the first TCP flight anyway."),
    Setting("drain_seconds", "--drain-seconds", ("MLFLOW_APP_DRAIN_SECONDS",), float, 8.0,
            help="On SIGTERM, how long in-flight requests may finish before MLflow is stopped."),
    Setting("mlflow_probe_interval", "--mlflow-probe-interval", ("MLFLOW_APP_MLFLOW_PROBE_INTERVAL",), float, 10.0,
            help="Seconds between health checks of a running MLflow (each allowed min(5, this) seconds)."),
    Setting("mlflow_probe_failures", "--mlflow-probe-failures", ("MLFLOW_APP_MLFLOW_PROBE_FAILURES",), int, 3,
            help="Failed checks in a row after which MLflow counts as hung and is replaced."),
    Setting("mlflow_max_memory", "--mlflow-max-memory", ("MLFLOW_APP_MLFLOW_MAX_MEMORY",), int | None, None, click_type=ByteSize(), metavar="SIZE",
            shown="off",
            help="Resident memory of MLflow's whole process tree (e.g. `2GiB`) above which a new MLflow is started beside it and "
                 "takes over once ready, without failing a request; checked every `--mlflow-probe-interval`. See "
                 "[docs/self-hosted.md](docs/self-hosted.md#reload-and-memory-ceiling)."),
    Setting("client_idle_timeout", "--client-idle-timeout", ("MLFLOW_APP_CLIENT_IDLE_TIMEOUT",), float, 60.0, click_type=click.FloatRange(min=0, min_open=True),
            help="Seconds a client may leave a request body unsent, or an answer unread, before the front cuts it off (408 in MLflow's "
                 "shape if nothing was answered yet) and frees its connection to MLflow."),
    Setting("client_min_rate", "--client-min-rate", ("MLFLOW_APP_CLIENT_MIN_RATE",), int, 1024, click_type=click.IntRange(min=0),
            help="Bytes per second a request body must average once it has taken `--client-idle-timeout`; a slower one is cut off with "
                 "408. `0`: no minimum."),
    Setting("max_upstream_per_client", "--max-upstream-per-client", ("MLFLOW_APP_MAX_UPSTREAM_PER_CLIENT",), int, DEFAULT_MAX_PER_CLIENT, click_type=click.IntRange(min=1),
            help="Requests one client address may have in progress at MLflow at once (the front keeps at most 512 connections to "
                 "MLflow); more get 429 with `Retry-After`, which the mlflow client retries. Behind a proxy, the address is the nearest "
                 "untrusted one in `X-Forwarded-For`, else the proxy's `X-Real-Ip` (see `--forwarded-allow-ips`)."),
    Setting("forwarded_allow_ips", "--forwarded-allow-ips", ("MLFLOW_APP_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"), tuple[str, ...] | None, None,
            is_list=True, metavar="LIST", shown="`127.0.0.1,::1`; `*` on Databricks Apps",
            help="Comma-separated addresses or networks of reverse proxies whose `X-Forwarded-For`, `-Host`, `-Proto`, `-Email`, "
                 "`-User` (and `X-Real-Ip`, `Forwarded`) are believed. From any other peer they are dropped and the front writes its "
                 "own. `*` trusts every peer."),
    Setting("allowed_hosts", "--allowed-hosts", ("MLFLOW_SERVER_ALLOWED_HOSTS",), tuple[str, ...], DEFAULT_ALLOWED_HOSTS, is_list=True, metavar="LIST",
            shown="loopback names, private addresses, `*.databricksapps.com`",
            help="Comma-separated `Host` names (fnmatch patterns) the server answers to. Others get 403 (DNS rebinding protection)."),
    Setting("cors_allowed_origins", "--cors-allowed-origins", ("MLFLOW_SERVER_CORS_ALLOWED_ORIGINS",), tuple[str, ...], (), is_list=True, metavar="LIST",
            help="Comma-separated origins, besides the server's own, whose pages may write through the API."),
    Setting("frame_options", "--frame-options", ("MLFLOW_APP_FRAME_OPTIONS",), str, "SAMEORIGIN", click_type=click.Choice(["SAMEORIGIN", "DENY", "NONE"], case_sensitive=False),
            help="`X-Frame-Options` on the UI's pages: `SAMEORIGIN` lets only this server frame them, `DENY` no one, `NONE` sends no "
                 "header (to embed the UI in a page of another origin)."),
    Setting("auth_token", "--auth-token", ("MLFLOW_APP_AUTH_TOKEN",), str | None, None, metavar="TOKEN", secret=True,
            help="Every request but `/health` must carry this token: `Authorization: Bearer <token>`, or HTTP Basic with any user name "
                 "and the token as password. At least 16 characters. Prefer the environment variable: a flag shows in the process list. "
                 "See [Security](#security)."),
    Setting("no_auth", "--no-auth", ("MLFLOW_APP_NO_AUTH",), bool, False, flag=True,
            help="Serve without a token on a `--host` other machines can reach. Without it, such a host needs `--auth-token` (except on "
                 "Databricks Apps)."),
)  # fmt: skip


def serve_options(command: Callable) -> Callable:
    """`serve`'s click options, in the table's order."""
    for setting in reversed(SERVE_SETTINGS):
        command = setting.click_option()(command)
    return command


def readme_rows() -> list[str]:
    """The README configuration table's rows for `serve`."""
    return [setting.readme_row() for setting in SERVE_SETTINGS]


if __name__ == "__main__":
    print("\n".join(readme_rows()))
