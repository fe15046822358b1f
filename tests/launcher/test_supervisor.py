"""`Backoff` and `Supervisor`, with fake MLflow children that start in milliseconds."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from launcher.mlflow_process import MlflowProcess
from launcher.redaction import Redactor
from launcher.supervisor import Backoff, LivenessProbe, Supervisor
from proxy.upstream import UpstreamPhase, UpstreamState
from tests.app_process import free_port
from tests.launcher.fake_unix_server import unix_server_command
from tests.launcher.fakes import child_env, exit_command, is_gone, server_command, sleep_command, wait_gone

SECRET = "s3cr3t-token-value-0123456789"

# --- Backoff -----------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap():
    backoff = Backoff(initial=1, cap=8, stable_after=60)
    assert [backoff.next_delay(uptime=0) for _ in range(6)] == [1, 2, 4, 8, 8, 8]


def test_backoff_resets_after_a_stable_run():
    backoff = Backoff(initial=0.5, cap=30, stable_after=60)
    assert [backoff.next_delay(uptime=5) for _ in range(4)] == [0.5, 1, 2, 4]
    assert backoff.next_delay(uptime=60) == 0.5  # it stayed up long enough: a fresh problem
    assert backoff.next_delay(uptime=59.9) == 1  # a short run keeps escalating


def test_backoff_defaults():
    backoff = Backoff()
    delays = [backoff.next_delay(0) for _ in range(10)]
    assert delays[0] == 1.0 and max(delays) == 30.0


# --- Supervisor --------------------------------------------------------------------------------


@dataclass
class RecordingState(UpstreamState):
    """UpstreamState that remembers every phase it was put in."""

    history: list[UpstreamPhase] = field(default_factory=list)
    output: list[str] = field(default_factory=list)  # every line any child printed

    def mark(self, phase: UpstreamPhase) -> None:
        super().mark(phase)
        self.history.append(phase)

    def mark_ready(self) -> None:
        super().mark_ready()
        self.history.append(UpstreamPhase.READY)


class RecordingBackoff(Backoff):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[float, float]] = []  # (uptime, delay)

    def next_delay(self, uptime: float) -> float:
        delay = super().next_delay(uptime)
        self.calls.append((uptime, delay))
        return delay


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def supervise():
    """Starts a Supervisor over fake children; stops it and checks its task ended at teardown."""
    running: list[tuple[Supervisor, asyncio.Task]] = []

    def supervise(
        command: Callable[[int], list[str]],
        start_timeout: float = 10.0,
        backoff: Backoff | None = None,
        before_start=None,
        probe: LivenessProbe | None = None,
        unix_socket: str | None = None,
        **env: str,
    ) -> tuple[Supervisor, RecordingState, list[MlflowProcess], asyncio.Task]:
        """`command` gets the fake's port, or its socket path when `unix_socket` is given."""
        port = free_port()
        if unix_socket:
            state = RecordingState(base_url="http://localhost", unix_socket=unix_socket)
        else:
            state = RecordingState(base_url=f"http://127.0.0.1:{port}")
        made: list[MlflowProcess] = []

        def make_process(on_output: Callable[[str], None]) -> MlflowProcess:
            def tee(line: str) -> None:
                state.output.append(line)
                on_output(line)

            made.append(MlflowProcess(command(unix_socket or port), child_env(**env), state.base_url, tee, unix_socket))
            return made[-1]

        supervisor = Supervisor(
            make_process,
            state,
            start_timeout=start_timeout,
            backoff=backoff or Backoff(initial=0.01, cap=0.05, stable_after=60),
            redact=Redactor([SECRET]),
            probe=probe,
            before_start=before_start,
        )
        running.append((supervisor, asyncio.create_task(supervisor.run())))
        return supervisor, state, made, running[-1][1]

    yield supervise
    for supervisor, task in running:
        await supervisor.stop(grace_seconds=0.5)
        await asyncio.wait_for(task, 5)


async def test_a_child_that_exits_at_once_is_restarted_with_backoff(supervise):
    backoff = RecordingBackoff(initial=0.01, cap=0.04, stable_after=60)
    lines = [
        f"ERROR cannot reach the database with token {SECRET}",
        "ERROR postgresql://mlflow:pgpass-9876@db.internal/mlflow refused",
        "ERROR " + "x" * 2000,
    ]
    supervisor, state, made, run = supervise(lambda port: exit_command(3, *lines), backoff=backoff)
    await eventually(lambda: state.restarts >= 4, what="four restarts")

    assert state.last_exit_code == 3
    assert len(made) >= 4
    assert [delay for _, delay in backoff.calls[:4]] == [0.01, 0.02, 0.04, 0.04]
    assert all(uptime == 0 for uptime, _ in backoff.calls)  # it never became ready
    assert state.history[0] is UpstreamPhase.STARTING
    assert UpstreamPhase.READY not in state.history
    assert set(state.history[1:]) == {UpstreamPhase.RESTARTING}
    assert state.phase is UpstreamPhase.RESTARTING
    assert not state.ready

    remembered = list(state.last_error_lines)
    assert any("cannot reach the database with token ***" in line for line in remembered)
    assert any("postgresql://mlflow:***@db.internal/mlflow" in line for line in remembered)
    assert all(SECRET not in line and "pgpass-9876" not in line for line in remembered)
    assert all(len(line) <= 500 for line in remembered)
    assert len(remembered) <= 20  # bounded, however often it crashes


async def test_a_child_that_becomes_ready_is_ready(supervise):
    supervisor, state, made, run = supervise(lambda port: server_command(port, delay=0.2))
    await eventually(lambda: state.phase is UpstreamPhase.READY, what="READY")
    assert state.ready
    assert state.pid == made[0].pid
    assert state.restarts == 0 and state.last_exit_code is None
    assert state.history == [UpstreamPhase.STARTING, UpstreamPhase.READY]
    assert state.uptime_seconds() >= 0
    # What it printed while starting was not an error: forgotten once it is ready.
    assert any("starting on" in line for line in state.output)
    assert not any("starting on" in line for line in state.last_error_lines)


async def test_a_crash_after_ready_restarts_it(supervise):
    backoff = RecordingBackoff(initial=0.01, cap=0.05, stable_after=60)
    supervisor, state, made, run = supervise(lambda port: server_command(port), backoff=backoff, EXIT_AFTER="0.3")
    await eventually(lambda: state.restarts >= 1, what="a restart")
    assert state.last_exit_code == 9
    assert "ERROR crashed" in state.last_error_lines
    assert backoff.calls[0][0] > 0  # the uptime it had when it crashed
    await eventually(lambda: state.phase is UpstreamPhase.READY and len(made) == 2, what="READY again")
    assert state.history[:4] == [
        UpstreamPhase.STARTING, UpstreamPhase.READY, UpstreamPhase.RESTARTING, UpstreamPhase.RESTARTING
    ]  # fmt: skip
    assert is_gone(made[0].pid)


async def test_leftovers_of_a_crashed_run_are_killed_before_the_restart(supervise):
    """MLflow's leader can die while its uvicorn worker lives on, holding the port the next run needs."""
    supervisor, state, made, run = supervise(lambda port: exit_command(1), SPAWN_GRANDCHILD="devnull")
    await eventually(lambda: len(made) >= 2, what="a restart")
    first_grandchild = next(int(line.split()[1]) for line in state.output if line.startswith("grandchild "))
    assert wait_gone(first_grandchild, timeout=1), "the crashed run's worker survived its restart"


async def test_stop_leaves_down_and_nothing_running(supervise):
    supervisor, state, made, run = supervise(lambda port: server_command(port), SPAWN_GRANDCHILD="inherit")
    await eventually(lambda: state.phase is UpstreamPhase.READY, what="READY")
    grandchild = next(int(line.split()[1]) for line in state.output if line.startswith("grandchild "))
    started = time.monotonic()
    await supervisor.stop(grace_seconds=0.5)
    assert time.monotonic() - started < 0.5 + 1.5
    await asyncio.wait_for(run, 2)  # run() ends, and publishes nothing after the stop
    assert state.phase is UpstreamPhase.DOWN
    assert state.history[-2:] == [UpstreamPhase.STOPPING, UpstreamPhase.DOWN]
    assert is_gone(made[0].pid)
    assert wait_gone(grandchild, timeout=1), "a grandchild that ignores SIGTERM survived stop()"
    assert state.restarts == 0  # stopping is not a crash


async def test_stop_while_starting(supervise):
    supervisor, state, made, run = supervise(lambda port: sleep_command(), start_timeout=30)
    await eventually(lambda: made and made[0].pid is not None, what="a child")
    await asyncio.sleep(0.1)
    await supervisor.stop(grace_seconds=1)
    await asyncio.wait_for(run, 2)
    assert state.phase is UpstreamPhase.DOWN
    assert len(made) == 1 and state.restarts == 0 and state.last_exit_code is None
    assert is_gone(made[0].pid)


async def test_stop_during_backoff_does_not_wait_it_out(supervise, caplog):
    supervisor, state, made, run = supervise(lambda port: exit_command(1), backoff=Backoff(initial=60, cap=60))
    await eventually(lambda: state.restarts == 1, what="the first exit")
    caplog.set_level(logging.INFO, logger="mlflow_app")
    caplog.clear()
    started = time.monotonic()
    await supervisor.stop(grace_seconds=1)
    assert time.monotonic() - started < 1
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]  # nothing to kill: no alarm
    await asyncio.wait_for(run, 2)
    assert state.phase is UpstreamPhase.DOWN
    assert len(made) == 1 and state.restarts == 1  # no new start after stop


async def test_a_child_never_ready_within_start_timeout_is_killed_and_restarted(supervise):
    supervisor, state, made, run = supervise(lambda port: sleep_command(), start_timeout=0.4)
    await eventually(lambda: state.restarts >= 1 and len(made) >= 2, what="a restart after the start timeout")
    assert state.last_exit_code == -signal.SIGTERM  # we stopped it; it did not exit by itself
    assert is_gone(made[0].pid)
    assert state.phase in (UpstreamPhase.RESTARTING, UpstreamPhase.STARTING)
    assert UpstreamPhase.READY not in state.history


# --- MLflow on a Unix socket -------------------------------------------------------------------


async def test_on_a_unix_socket_readiness_and_the_liveness_probe_go_over_it(supervise, tmp_path):
    probe = LivenessProbe(interval=0.05, timeout=1, failures=2)
    supervisor, state, made, run = supervise(unix_server_command, probe=probe, unix_socket=str(tmp_path / "mlflow.sock"))
    await eventually(lambda: state.ready, what="READY")
    await asyncio.sleep(0.5)  # ten probes: each would fail if it went anywhere but the socket
    assert state.ready and state.restarts == 0 and len(made) == 1


async def test_on_a_unix_socket_a_crashed_childs_socket_file_does_not_stop_the_restart(supervise, tmp_path):
    path = tmp_path / "mlflow.sock"
    supervisor, state, made, run = supervise(unix_server_command, unix_socket=str(path), EXIT_AFTER="0.3")
    await eventually(lambda: state.restarts >= 1, what="a crash")
    assert state.last_exit_code == 9
    await eventually(lambda: state.ready and len(made) == 2, what="READY again on the same path")
    assert path.is_socket()


async def test_stop_before_run_starts_nothing():
    made: list[MlflowProcess] = []
    state = UpstreamState(base_url="http://127.0.0.1:1")
    supervisor = Supervisor(lambda on_output: made.append(None), state, start_timeout=1)  # type: ignore[func-returns-value]
    await supervisor.stop(grace_seconds=1)
    await asyncio.wait_for(supervisor.run(), 1)
    assert made == [] and state.phase is UpstreamPhase.DOWN


# --- the step before each start (the database check) ------------------------------------------


async def test_a_failing_step_before_start_counts_as_a_failed_start_and_mlflow_never_starts(supervise):
    async def database_refuses(on_output):
        on_output(f"ERROR database: refused the password {SECRET}")
        return 1, "cannot use its database: refused the password"

    supervisor, state, made, run = supervise(lambda port: server_command(port), before_start=database_refuses)
    await eventually(lambda: state.crash_loop, what="a crash loop")

    assert made == []
    assert (state.last_exit_code, state.last_exit_reason) == (1, "cannot use its database: refused the password")
    assert state.phase is UpstreamPhase.RESTARTING
    assert "ERROR database: refused the password ***" in state.last_error_lines


async def test_mlflow_starts_once_the_step_succeeds(supervise):
    calls = []

    async def database_comes_up(on_output):
        calls.append(1)
        return (1, "cannot use its database: connection refused") if len(calls) < 3 else None

    supervisor, state, made, run = supervise(lambda port: server_command(port), before_start=database_comes_up)
    await eventually(lambda: state.ready, what="READY")

    assert len(calls) == 3 and len(made) == 1
    assert state.restarts == 2 and state.failed_starts == 0


async def test_stop_during_the_step_cancels_it_and_starts_nothing(supervise):
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def slow_migration(on_output):
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    supervisor, state, made, run = supervise(lambda port: server_command(port), before_start=slow_migration)
    await asyncio.wait_for(entered.wait(), 5)
    started = time.monotonic()
    await supervisor.stop(grace_seconds=1)
    await asyncio.wait_for(run, 2)

    assert time.monotonic() - started < 2
    assert cancelled.is_set() and made == []
    assert state.phase is UpstreamPhase.DOWN and state.restarts == 0
