"""Every setting of `mlflow-app serve` in one typed object, checked once at the edge."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
from dataclasses import field, make_dataclass
from pathlib import Path
from urllib.parse import urlsplit

from launcher.mlflow_package import mlflow_package_dir
from launcher.redaction import Redactor
from launcher.settings_table import SERVE_SETTINGS, default_host, on_databricks_apps, split_list  # noqa: F401 (names of this module)
from proxy.edge.forwarded import LOOPBACK_PROXIES

# Store URI schemes MLflow's server accepts (SQLAlchemy dialects may carry a driver: postgresql+psycopg).
TRACKING_STORE_SCHEMES = frozenset({"", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks"})
REGISTRY_STORE_SCHEMES = TRACKING_STORE_SCHEMES | {"databricks-uc", "uc"}
ARTIFACT_SCHEMES = frozenset(
    {
        "", "file", "s3", "gs", "wasbs", "abfss", "hdfs", "viewfs", "dbfs", "ftp", "sftp",
        "http", "https", "mlflow-artifacts", "oss",
    }
)  # fmt: skip


class SettingsError(ValueError):
    """A setting that cannot work; the message is one line that says what to change."""


# The fields and defaults come from the settings table; `extra_env` is set by tests and the
# deploy tooling, never from the command line.
_SettingsFields = make_dataclass(
    "Settings",
    [(row.field, row.type, field(default=row.default, repr=not row.secret)) for row in SERVE_SETTINGS] + [("extra_env", dict[str, str], field(default_factory=dict))],
    frozen=True,
)


class Settings(_SettingsFields):
    """Every setting of `mlflow-app serve`, typed and checked once (launcher/settings_table.py)."""

    @property
    def embedded_backend_uri(self) -> str:
        return f"sqlite:///{self.data_dir.resolve() / 'mlflow.db'}"

    @property
    def effective_backend_store_uri(self) -> str:
        return self.backend_store_uri or self.embedded_backend_uri

    @property
    def effective_artifacts_destination(self) -> str:
        return self.artifacts_destination or str(self.data_dir.resolve() / "artifacts")

    @property
    def effective_mlflow_log_level(self) -> str:
        return self.mlflow_log_level or self.log_level

    @property
    def effective_forwarded_allow_ips(self) -> tuple[str, ...]:
        """Peers whose X-Forwarded-* headers count: on Databricks Apps only the platform's proxy can
        reach the app at all, so any peer; elsewhere loopback (a reverse proxy on the same machine)."""
        if self.forwarded_allow_ips is not None:
            return self.forwarded_allow_ips
        return ("*",) if on_databricks_apps() else LOOPBACK_PROXIES

    @property
    def effective_ui_dir(self) -> Path:
        return self.ui_dir or installed_mlflow_ui_dir()

    @property
    def uses_data_dir(self) -> bool:
        return self.backend_store_uri is None or (self.serve_artifacts and not self.artifacts_destination)


def installed_mlflow_ui_dir() -> Path:
    """The UI build inside the installed `mlflow` package, found without importing mlflow (slow)."""
    package = mlflow_package_dir()
    if package is None:
        raise SettingsError("The mlflow package is not installed in this environment; install mlflow-app's dependencies (uv sync).")
    return package / "server" / "js" / "build"


def uri_scheme(uri: str) -> str:
    """The scheme of a store URI without a SQLAlchemy driver part; '' for a plain path."""
    if uri in ("databricks", "databricks-uc", "uc"):
        return uri  # bare store names MLflow treats as schemes, not as relative paths
    if len(uri) > 1 and uri[1] == ":" and uri[0].isalpha():
        return ""  # a Windows drive letter, not a scheme
    return urlsplit(uri).scheme.split("+", 1)[0].lower()


def check_scheme(option: str, uri: str | None, allowed: frozenset[str]) -> None:
    if uri is None:
        return
    try:
        scheme = uri_scheme(uri)
    except ValueError as exc:  # urlsplit refuses e.g. an unclosed '[' in the host
        raise SettingsError(f"{option}: '{uri_for_message(uri)}' is not a valid URI ({exc}); correct it, or pass a local path.") from None
    if scheme not in allowed:
        choices = ", ".join(sorted(s for s in allowed if s))
        raise SettingsError(f"{option}: unknown scheme '{scheme}' in '{uri_for_message(uri)}'; use one of {choices}, or a local path.")


# The Python module each SQLAlchemy PostgreSQL driver needs; a bare postgresql:// means psycopg (3).
POSTGRES_DRIVER_MODULES = {"": "psycopg", "psycopg": "psycopg", "psycopg2": "psycopg2", "pg8000": "pg8000", "asyncpg": "asyncpg"}


def check_database_driver(option: str, uri: str | None) -> None:
    """A postgresql:// store needs its driver installed (the optional `postgres` extra)."""
    if uri is None or uri_scheme(uri) != "postgresql":
        return
    driver = urlsplit(uri).scheme.partition("+")[2].lower()
    module = POSTGRES_DRIVER_MODULES.get(driver, driver)
    if importlib.util.find_spec(module) is None:
        raise SettingsError(
            f"{option}: the PostgreSQL driver '{module}' is not installed; install mlflow-app with its postgres extra (uv sync --extra postgres, or pip install 'mlflow-app[postgres]') and use postgresql://."
        )


# Object stores whose SDK is an optional extra of ours: scheme -> (the module MLflow imports, the extra).
OBJECT_STORE_SDKS = {"s3": ("boto3", "s3")}


def check_object_store_sdk(option: str, uri: str | None) -> None:
    """An s3:// artifact location needs boto3 in this environment (the optional `s3` extra): the
    MLflow child would otherwise fail on the first artifact with a traceback."""
    if uri is None:
        return
    scheme = uri_scheme(uri)
    if scheme not in OBJECT_STORE_SDKS:
        return
    module, extra = OBJECT_STORE_SDKS[scheme]
    if importlib.util.find_spec(module) is None:
        raise SettingsError(
            f"{option}: {scheme}:// needs the '{module}' package, which is not installed; install mlflow-app with its {extra} extra (uv sync --extra {extra}, or pip install 'mlflow-app[{extra}]')."
        )


def uri_password(uri: str | None) -> str | None:
    """The password in a URI's user part, as written (percent-encoded); None if none or unparsable."""
    try:
        return urlsplit(uri or "").password
    except ValueError:
        return None


def uri_for_message(uri: str) -> str:
    """A URI safe to print: its password, if any, masked (in the user part or a query parameter)."""
    password = uri_password(uri)  # unparsable: the Redactor's patterns below still mask user:password@
    if password:
        uri = uri.replace(f":{password}@", ":***@", 1)
    return Redactor()(uri)


def check_data_dir(data_dir: Path) -> None:
    """The data directory exists (created if needed) and we can write to it."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-check-{os.getpid()}"  # per process: instances may share the directory
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(f"--data-dir: cannot write to '{data_dir}' ({reason}); pass a writable directory with --data-dir or MLFLOW_APP_DATA_DIR.") from None


def check_ui_dir(ui_dir: Path) -> None:
    if not (ui_dir / "index.html").is_file():
        raise SettingsError(
            f"--ui-dir: no MLflow UI build at '{ui_dir}' (index.html missing); point --ui-dir (MLFLOW_APP_UI_DIR) at a build, or install the full mlflow package rather than mlflow-skinny or a source checkout."
        )


def check_experiment_folder(folder: str | None) -> None:
    """A workspace folder is an absolute path of plain names: `/Shared/mlflow`, not `mlflow` or `/Shared/../x`."""
    if folder is None:
        return
    parts = folder.split("/")
    if not folder.startswith("/") or folder == "/" or any(part in ("", ".", "..") for part in parts[1:]):
        raise SettingsError(
            f"--experiment-folder: '{folder}' is not an absolute workspace folder; use a path such as /Shared/<app name> or /Users/<you>/mlflow (no trailing slash, no '.' or '..')."
        )


# Unreserved URL characters only (RFC 3986 §2.3): a prefix then reads the same percent-encoded or
# not, so the front can compare it with the raw request path and MLflow with the decoded one.
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def check_static_prefix(prefix: str | None) -> None:
    """A path prefix such as `/mlflow` or `/team/mlflow`: leading slash, no trailing one, plain segments."""
    if prefix is None:
        return
    segments = prefix.split("/")
    if not prefix.startswith("/") or any(not _PREFIX_SEGMENT.fullmatch(s) or s in (".", "..") for s in segments[1:]):
        raise SettingsError(
            f"--static-prefix: '{prefix}' is not a path prefix; use one such as /mlflow or /team/mlflow (a leading '/', no trailing '/', "
            "segments of letters, digits and '-._~', no '.' or '..'), or leave it unset to serve at the root."
        )


MIN_AUTH_TOKEN_LENGTH = 16


def is_loopback_host(host: str) -> bool:
    """Whether listening on `host` reaches this machine only; names other than localhost count as open."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth(settings: Settings, environ: dict[str, str] | None = None) -> None:
    """A usable token if one is set; and no open server on a shared network unless asked for."""
    token = settings.auth_token
    if token is not None:
        if len(token) < MIN_AUTH_TOKEN_LENGTH or not token.isascii() or not token.isprintable() or " " in token:
            raise SettingsError(
                f"--auth-token: use at least {MIN_AUTH_TOKEN_LENGTH} printable ASCII characters without spaces, e.g. the output of: python -c 'import secrets; print(secrets.token_urlsafe(32))'."
            )
        return
    if settings.no_auth or is_loopback_host(settings.host) or on_databricks_apps(environ):
        return
    raise SettingsError(
        f"--host: {settings.host} is reachable from other machines and no --auth-token is set; set --auth-token (MLFLOW_APP_AUTH_TOKEN), or pass --no-auth (MLFLOW_APP_NO_AUTH=true) to serve without authentication on purpose."
    )


def validate(settings: Settings) -> None:
    """Raise SettingsError for the first setting that cannot work."""
    if not 0 < settings.port < 65536:
        raise SettingsError(f"--port: {settings.port} is not a TCP port; use 1-65535.")
    if not 0 <= settings.mlflow_port < 65536:
        raise SettingsError(f"--mlflow-port: {settings.mlflow_port} is not a TCP port; use 0 (any free port) or 1-65535.")
    if settings.workers < 1:
        raise SettingsError("--workers: must be at least 1.")
    if settings.mlflow_probe_interval <= 0 or settings.mlflow_probe_failures < 1:
        raise SettingsError("--mlflow-probe-interval must be positive and --mlflow-probe-failures at least 1.")
    if settings.upstream_timeout <= 0 or settings.mlflow_start_timeout <= 0 or settings.drain_seconds < 0:
        raise SettingsError("--upstream-timeout and --mlflow-start-timeout must be positive, --drain-seconds not negative.")
    check_auth(settings)
    check_scheme("--backend-store-uri", settings.backend_store_uri, TRACKING_STORE_SCHEMES)
    check_scheme("--registry-store-uri", settings.registry_store_uri, REGISTRY_STORE_SCHEMES)
    check_scheme("--default-artifact-root", settings.default_artifact_root, ARTIFACT_SCHEMES)
    check_scheme("--artifacts-destination", settings.artifacts_destination, ARTIFACT_SCHEMES)
    check_experiment_folder(settings.experiment_folder)
    check_static_prefix(settings.static_prefix)
    check_database_driver("--backend-store-uri", settings.backend_store_uri)
    check_database_driver("--registry-store-uri", settings.registry_store_uri)
    check_object_store_sdk("--default-artifact-root", settings.default_artifact_root)
    if settings.serve_artifacts:
        check_object_store_sdk("--artifacts-destination", settings.artifacts_destination)
    if settings.uses_data_dir:
        check_data_dir(settings.data_dir)
    check_ui_dir(settings.effective_ui_dir)
