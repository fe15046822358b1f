"""A PostgreSQL store before MLflow starts, the front's side: which stores to check, their passwords
as secrets, and `DatabaseCheck`, which the supervisor runs before each MLflow start.

The check itself is a short child, `python -m launcher.inside_mlflow.migrate_database`, one per
PostgreSQL store: it connects, and creates or upgrades MLflow's schema under an advisory lock when it
is not current. Its output joins our log; its one failure line becomes the reason `/health` gives.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from urllib.parse import unquote

from launcher.inside_mlflow.migrate_database import FAILURE_PREFIX, OPTION_VARIABLE, URI_VARIABLE
from launcher.settings import Settings, uri_for_message, uri_password, uri_scheme

log = logging.getLogger("mlflow_app.database")

MIGRATION_SCRIPT = "launcher.inside_mlflow.migrate_database"


def postgres_store_uris(settings: Settings) -> list[tuple[str, str]]:
    """(option, URI) of each distinct PostgreSQL store, the tracking store first."""
    stores = [("--backend-store-uri", settings.effective_backend_store_uri)]
    if settings.registry_store_uri:
        stores.append(("--registry-store-uri", settings.registry_store_uri))
    found: list[tuple[str, str]] = []
    for option, uri in stores:
        if uri_scheme(uri) == "postgresql" and uri not in [u for _, u in found]:
            found.append((option, uri))
    return found


def store_passwords(settings: Settings) -> tuple[str, ...]:
    """Passwords inside the store URIs, to be masked wherever they might be printed."""
    passwords = []
    for uri in (settings.backend_store_uri, settings.registry_store_uri):
        if password := uri_password(uri):
            passwords += [password, unquote(password)]
    return tuple(passwords)


class DatabaseCheck:
    """Before each MLflow start: every PostgreSQL store answers and has this MLflow's schema."""

    def __init__(self, stores: list[tuple[str, str]], env: dict[str, str]):
        self.stores = stores
        self.env = env

    async def __call__(self, on_output: Callable[[str], None]) -> tuple[int, str] | None:
        """None when every store is ready; else (exit code, one-line reason)."""
        for option, uri in self.stores:
            code, failure = await self._run_child(option, uri, on_output)
            if code != 0:
                return code, f"cannot use its database: {failure or f'the database check exited with code {code}'}"
        return None

    async def _run_child(self, option: str, uri: str, on_output: Callable[[str], None]) -> tuple[int, str | None]:
        from launcher.mlflow_process import level_of, output_lines, spawn

        log.info("checking the database %s before MLflow starts", uri_for_message(uri))
        process = await spawn([sys.executable, "-m", MIGRATION_SCRIPT], {**self.env, URI_VARIABLE: uri, OPTION_VARIABLE: option})
        failure = None
        try:
            async for text in output_lines(process):
                on_output(text)
                if text.startswith(FAILURE_PREFIX):
                    failure = text.removeprefix(FAILURE_PREFIX)
                else:
                    level = level_of(text)
                    log.log(level, text.removeprefix(f"{logging.getLevelName(level)} "))
            return await process.wait(), failure
        finally:
            if process.returncode is None:  # stopped (cancelled) while it ran
                process.kill()
                await process.wait()
