"""The Dockerfile, run outside a container: its uv steps into a fresh environment, then its ENTRYPOINT.

There is no container engine here. This test reads the Dockerfile and does what a build and a
`docker run` would: copy what COPY copies into a scratch directory standing for /app, run the
`uv sync` commands there (uv's cache makes this quick once warm), and start the exact ENTRYPOINT
and CMD with the image's ENV (paths moved to the scratch directory), plus what `docker run -e`
would add. It checks that /health reaches 200, that the HEALTHCHECK command agrees, that logs go to
stdout only, and that SIGTERM stops the whole tree cleanly.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from tests.app_process import QUIET_ENV, free_port

pytestmark = pytest.mark.e2e

PROJECT = Path(__file__).resolve().parents[2]
AUTH_TOKEN = "imageTOKEN5d1e7a9c3b2f40"


@dataclass
class Stage:
    base: str
    name: str | None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def last(self, instruction: str) -> str | None:
        found = self.all(instruction)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """The Dockerfile's stages with their instructions; ARG defaults and ENV values substituted."""
    lines, pending = [], ""
    for raw in text.splitlines():
        if not pending and raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        if (pending + raw).strip():
            lines.append((pending + raw).strip())
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []

    def substitute(value: str, env: dict[str, str]) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), args.get(m.group(1), m.group(0))), value)

    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        env = stages[-1].env if stages else {}
        if instruction == "ARG":
            name, _, default = rest.partition("=")
            args.setdefault(name.strip(), default.strip())
        elif instruction == "FROM":
            parts = substitute(rest, {}).split()
            stages.append(Stage(base=parts[0], name=parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        elif instruction == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = substitute(value, env)
        elif instruction == "WORKDIR":
            stages[-1].workdir = substitute(rest, env)
        if stages and instruction != "FROM":
            stages[-1].instructions.append((instruction, rest))
    return stages


def exec_form(args: str) -> list[str]:
    """A JSON-array instruction's argv; shell form is refused (it would not be PID 1 or get signals)."""
    assert args.lstrip().startswith("["), f"not in exec form: {args}"
    return json.loads(args)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((PROJECT / "Dockerfile").read_text())


def test_the_image_runs_the_server_as_pid_1_unprivileged_with_a_healthcheck(stages):
    build, final = stages[0], stages[-1]
    assert final.base.endswith("-slim-bookworm") and final.base == build.base
    assert exec_form(final.last("ENTRYPOINT"))[:2] == ["mlflow-app", "serve"]
    assert final.last("USER") not in (None, "root", "0") and not final.last("USER").startswith(("root:", "0:"))
    assert exec_form(final.last("HEALTHCHECK").split(" CMD ", 1)[1]) == ["python", "-m", "launcher.healthcheck"]
    assert final.all("VOLUME") == [final.env["MLFLOW_APP_DATA_DIR"]]
    assert final.all("EXPOSE") == [final.env["MLFLOW_PORT"]]
    assert final.env["MLFLOW_HOST"] == "0.0.0.0"
    syncs = [run for run in build.all("RUN") if " uv sync " in f" {run} "]
    assert syncs and all("--frozen" in run and "--no-dev" in run and "--extra postgres" in run and "--extra s3" in run for run in syncs)
    ignored = (PROJECT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "mlflow-data" in ignored


def scratch_path(path: str, root: Path) -> str:
    """An absolute path of the image, moved under `root`; the image's /app becomes `root` itself."""
    return str(root) + path.removeprefix("/app") if path.startswith("/app") else str(root / path.lstrip("/"))


def test_the_images_install_and_start_steps_work_outside_a_container(stages, tmp_path):
    build, final = stages[0], stages[-1]
    app_dir = tmp_path / "app"  # the image's /app
    data_dir = tmp_path / "data"  # the image's /data volume
    app_dir.mkdir()
    data_dir.mkdir()

    # Build: COPY as the Dockerfile does, then its uv commands with its ENV.
    build_env = {**os.environ, **build.env, "UV_PROJECT_ENVIRONMENT": str(app_dir / ".venv")}
    build_env.pop("UV_COMPILE_BYTECODE")  # compiling ~1 GB of packages takes minutes; it changes no behaviour
    build_env.pop("UV_LINK_MODE")  # copy mode is for the image's cache mount; hard links from the cache are faster here
    build_env.pop("VIRTUAL_ENV", None)  # the test's own environment is not the one being built
    ran_uv = 0
    for name, args in build.instructions:
        if name == "COPY":
            *sources, destination = shlex.split(args)
            target = app_dir / destination.removeprefix("./") if destination not in ("./", ".") else app_dir
            for source in sources:
                if (PROJECT / source).is_dir():
                    shutil.copytree(PROJECT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(PROJECT / source, app_dir / Path(source).name)
        elif name == "RUN":
            argv = [word for word in shlex.split(args) if not word.startswith("--mount=")]
            if argv[0] == "pip":
                assert "uv==" in " ".join(argv)  # installs uv itself, which this machine has
                continue
            assert argv[0] == "uv", f"a build step this test does not reproduce: {args}"
            done = subprocess.run(argv, cwd=app_dir, env=build_env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{args} failed:\n{done.stderr[-3000:]}"
            ran_uv += 1
    assert ran_uv == 2
    venv = app_dir / ".venv"
    site_packages = next((venv / "lib").glob("python*/site-packages"))
    assert (site_packages / "launcher" / "healthcheck.py").is_file(), "the project is installed, not linked to the checkout"
    assert (site_packages / "psycopg").is_dir(), "the postgres extra is in the image"
    assert (site_packages / "boto3").is_dir(), "the s3 extra is in the image (artifacts in S3, docs/kubernetes.md)"
    assert not (site_packages / "pytest").exists(), "no dev dependencies in the image"

    # Run: the image's ENV, then what `docker run -e ...` adds.
    run_env = {
        name: value for name, value in os.environ.items()
        if not name.startswith(("MLFLOW_", "DATABRICKS_", "UV_")) and name != "VIRTUAL_ENV"
    }  # fmt: skip
    for name, value in final.env.items():
        value = value.replace("/app/", f"{app_dir}/")
        run_env[name] = scratch_path(value, tmp_path) if name == "MLFLOW_APP_DATA_DIR" else value
    assert run_env["MLFLOW_APP_DATA_DIR"] == str(data_dir)
    run_env["PATH"] = run_env["PATH"].replace("$PATH", os.environ["PATH"])
    port = free_port()
    run_env.update(QUIET_ENV, MLFLOW_PORT=str(port))
    argv = exec_form(final.last("ENTRYPOINT")) + exec_form(final.last("CMD") or "[]")
    executable = shutil.which(argv[0], path=run_env["PATH"])
    assert executable == str(venv / "bin" / "mlflow-app")
    workdir = scratch_path(final.workdir, tmp_path)

    # Without a token or --no-auth, a container that listens on 0.0.0.0 refuses to start, in one line.
    refused = subprocess.run([executable, *argv[1:]], cwd=workdir, env=run_env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: --host: 0.0.0.0 is reachable from other machines and no --auth-token is set")
    assert "MLFLOW_APP_AUTH_TOKEN" in refused.stderr

    run_env["MLFLOW_APP_AUTH_TOKEN"] = AUTH_TOKEN
    with open(tmp_path / "stdout", "wb") as stdout, open(tmp_path / "stderr", "wb") as stderr:
        server = subprocess.Popen([executable, *argv[1:]], cwd=workdir, env=run_env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, f"exited {server.returncode}:\n{(tmp_path / 'stdout').read_text()[-3000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no /health 200 within 240 s:\n{(tmp_path / 'stdout').read_text()[-3000:]}"
            time.sleep(0.5)
        tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        assert all(p.cmdline()[0].startswith(str(venv)) for p in tree), "every process runs from the image's environment"
        assert any("mlflow" in " ".join(p.cmdline()) for p in tree[1:]), "MLflow runs as the front's child"

        healthcheck = exec_form(final.last("HEALTHCHECK").split(" CMD ", 1)[1])
        probe = subprocess.run(healthcheck, cwd=workdir, env=run_env, capture_output=True, text=True, timeout=30)
        assert (probe.returncode, probe.stdout.strip()) == (0, "healthy")
        # Clients need the token; the embedded store is in the volume.
        assert httpx.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1").status_code == 401
        authorized = {"Authorization": f"Bearer {AUTH_TOKEN}"}
        assert httpx.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1", headers=authorized).status_code == 200
        assert (data_dir / "mlflow.db").is_file()

        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        assert time.monotonic() - started < 15 + 5  # the drain and MLflow's stop, within what platforms allow
        assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "a process outlived SIGTERM"
    finally:
        if server.poll() is None:
            server.kill()
        for process in tree:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass

    assert (tmp_path / "stderr").read_bytes() == b"", "logs go to stdout only"
    lines = (tmp_path / "stdout").read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # JSON, one object per line, as the image asks
    assert {"front", "mlflow"} <= {entry["source"] for entry in entries}
    assert AUTH_TOKEN not in "\n".join(lines)
