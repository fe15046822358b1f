"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests, from Debian's `postgresql` package.

PostgreSQL refuses to run as root: when the tests do, the cluster runs as the `postgres` account
the package creates (else `nobody`), in a directory that account owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.app_process import free_port

SUPERUSER_PASSWORD = "pg-superuser-secret-0123"


def postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb and pg_ctl, if installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def account_for_server() -> str | None:
    """None when we may run postgres ourselves; else the unprivileged account to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL as")


class PostgresServer:
    """initdb + pg_ctl on a free 127.0.0.1 port, password authentication (scram) for TCP."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = free_port()
        self.account = account_for_server()
        self.root = Path(tempfile.mkdtemp(prefix="mlflow-app-pg-"))
        self.data = self.root / "data"

    def _run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.account, "--"] if self.account else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, check=check, timeout=timeout, cwd=self.root)

    def start(self) -> PostgresServer:
        password_file = self.root / "superuser-password"
        password_file.write_text(SUPERUSER_PASSWORD + "\n")
        if self.account:
            entry = pwd.getpwnam(self.account)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                  f"--pwfile={password_file}", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")  # fmt: skip
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c full_page_writes=off -c max_connections=200"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run `statement` as the superuser over TCP; returns rows as text."""
        import psycopg

        # autocommit: CREATE DATABASE cannot run in a transaction
        connection = psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=SUPERUSER_PASSWORD, dbname=database, autocommit=True)
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
                return "\n".join(" ".join(str(v) for v in row) for row in cursor.fetchall()) if cursor.description else ""
        finally:
            connection.close()

    def create_database(self, name: str, owner: str, password: str) -> str:
        """A new database owned by a new login role; returns its postgresql:// URI."""
        self.sql(f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'")
        self.sql(f"CREATE DATABASE {name} OWNER {owner}")
        return self.uri(owner, password, name)

    def uri(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
