"""`Supervisor` replacing a serving child beside itself (reload, memory ceiling, liveness), with fake
MLflow children that start in milliseconds, each on a port of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from launcher.mlflow_process import SOCKET_NAME, SPARE_SOCKET_NAME, ChildAddress, MlflowProcess, address_beside
from launcher.process_memory import tree_pids, tree_resident_bytes
from launcher.server import why_not_beside
from launcher.settings import Settings
from launcher.supervisor import Backoff, LivenessProbe, Replacement, Supervisor
from proxy.upstream import UpstreamPhase, UpstreamState
from tests.app_process import free_port
from tests.launcher.fakes import child_env, exit_command, is_gone, server_command, sleep_command, wait_gone
from tests.launcher.test_supervisor import eventually


@dataclass
class RecordingState(UpstreamState):
    history: list[UpstreamPhase] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    def mark(self, phase: UpstreamPhase) -> None:
        super().mark(phase)
        self.history.append(phase)

    def mark_ready(self) -> None:
        super().mark_ready()
        self.history.append(UpstreamPhase.READY)


@dataclass
class Children:
    """What a test's supervisor started, and the knobs its fakes read."""

    state: RecordingState
    made: list[MlflowProcess] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)  # base_url -> requests the "front" holds there
    memory: dict[int, int] = field(default_factory=dict)  # pid -> bytes the fake measurement reports
    beside_command: Callable[[int], list[str]] | None = None  # a replacement's command, if not the first's

    def grandchildren(self) -> list[int]:
        return [int(line.split()[1]) for line in self.state.output if line.startswith("grandchild ")]


@pytest.fixture
async def replace():
    running: list[tuple[Supervisor, asyncio.Task]] = []

    def replace(
        command: Callable[[int], list[str]] = server_command,
        beside: bool = True,
        max_memory: int | None = None,
        drain_seconds: float = 5.0,
        probe: LivenessProbe | None = None,
        start_timeout: float = 10.0,
        **env: str,
    ) -> tuple[Supervisor, Children, asyncio.Task]:
        port = free_port()
        children = Children(RecordingState(base_url=f"http://127.0.0.1:{port}"))

        def at(port: int, on_output: Callable[[str], None], make_command: Callable[[int], list[str]]) -> MlflowProcess:
            def tee(line: str) -> None:
                children.state.output.append(line)
                on_output(line)

            children.made.append(MlflowProcess(make_command(port), child_env(**env), f"http://127.0.0.1:{port}", tee))
            return children.made[-1]

        def make_beside(on_output, serving: MlflowProcess) -> MlflowProcess:
            return at(free_port(), on_output, children.beside_command or command)

        supervisor = Supervisor(
            lambda on_output: at(port, on_output, command),
            children.state,
            start_timeout=start_timeout,
            backoff=Backoff(initial=0.01, cap=0.05, stable_after=60),
            probe=probe,
            replacement=Replacement(
                make_beside=make_beside if beside else None,
                in_flight_at=lambda base_url, unix_socket: children.in_flight.get(base_url, 0),
                max_memory=max_memory,
                memory_interval=0.05,
                drain_seconds=drain_seconds,
                stop_grace=0.5,
                measure=lambda pid: children.memory.get(pid, 1000),
            ),
        )
        running.append((supervisor, asyncio.create_task(supervisor.run())))
        return supervisor, children, running[-1][1]

    yield replace
    for supervisor, task in running:
        await supervisor.stop(grace_seconds=0.5)
        await asyncio.wait_for(task, 5)


def never_unready_after_first_ready(history: list[UpstreamPhase]) -> bool:
    return set(history[history.index(UpstreamPhase.READY) :]) == {UpstreamPhase.READY}


async def test_a_reload_starts_a_new_child_beside_and_stops_the_old_one_once_the_new_serves(replace):
    supervisor, children, run = replace(SPAWN_GRANDCHILD="devnull")
    state = children.state
    await eventually(lambda: state.ready, what="READY")
    old = children.made[0]
    old_base_url = state.base_url
    supervisor.reload()
    await eventually(lambda: state.replacing == "reload", what="a replacement in progress")
    assert state.ready and state.pid == old.pid  # the old child serves until the new one is ready
    await eventually(lambda: state.replacements.get("reload") == 1, what="the swap")
    new = children.made[1]
    assert (state.pid, state.base_url) == (new.pid, new.base_url) and new.base_url != old_base_url
    await eventually(lambda: state.replacing is None, what="the old child stopped")
    assert is_gone(old.pid) and new.returncode is None
    old_grandchild = children.grandchildren()[0]
    assert wait_gone(old_grandchild, timeout=1), "the old child's worker outlived it"
    assert never_unready_after_first_ready(state.history)
    assert state.restarts == 0  # nothing failed


async def test_the_old_child_finishes_what_it_holds_before_it_is_stopped(replace):
    supervisor, children, run = replace()
    state = children.state
    await eventually(lambda: state.ready, what="READY")
    old = children.made[0]
    children.in_flight[old.base_url] = 2  # e.g. a download streaming from it
    supervisor.reload()
    await eventually(lambda: state.replacements.get("reload") == 1, what="the swap")
    await asyncio.sleep(0.5)
    assert old.returncode is None and state.replacing == "reload"  # still finishing its requests
    children.in_flight[old.base_url] = 0
    await eventually(lambda: is_gone(old.pid), what="the drained child stopped")
    await eventually(lambda: state.replacing is None, what="the replacement finished")


async def test_the_drain_is_bounded(replace):
    supervisor, children, run = replace(drain_seconds=0.3)
    state = children.state
    await eventually(lambda: state.ready, what="READY")
    old = children.made[0]
    children.in_flight[old.base_url] = 1  # never finishes
    supervisor.reload()
    await eventually(lambda: is_gone(old.pid) and state.replacing is None, what="the old child cut after the drain time")
    assert state.pid == children.made[1].pid and state.ready


async def test_a_replacement_that_dies_while_the_old_one_drains_is_restarted_without_waiting_for_the_drain(replace):
    supervisor, children, run = replace(drain_seconds=60)
    state = children.state
    await eventually(lambda: state.ready, what="READY")
    old = children.made[0]
    children.in_flight[old.base_url] = 1  # the old child would drain for a minute
    supervisor.reload()
    await eventually(lambda: state.replacements.get("reload") == 1, what="the swap")
    os.kill(children.made[1].pid, signal.SIGKILL)
    await eventually(lambda: is_gone(old.pid) and state.restarts == 1, timeout=5, what="the drain cut short and a restart")
    await eventually(lambda: state.ready and len(children.made) == 3, what="READY again")


async def test_a_child_above_the_memory_ceiling_is_replaced_and_its_memory_published(replace):
    supervisor, children, run = replace(max_memory=10_000)
    state = children.state
    await eventually(lambda: state.ready and state.memory_bytes == 1000, what="READY and measured")
    await asyncio.sleep(0.1)  # measured again below the ceiling: it grows from here
    old = children.made[0]
    children.memory[old.pid] = 20_000
    await eventually(lambda: state.replacements.get("memory") == 1 and state.replacing is None, what="a memory replacement")
    assert state.pid == children.made[1].pid and is_gone(old.pid)
    await eventually(lambda: state.memory_bytes == 1000, what="the new child measured")
    await asyncio.sleep(0.3)
    assert len(children.made) == 2  # the new one is below the ceiling: no further replacement


async def test_a_child_above_the_ceiling_from_its_start_is_not_replaced_again_and_again(replace, caplog):
    caplog.set_level(logging.WARNING, logger="mlflow_app")
    supervisor, children, run = replace(max_memory=500)  # every fake measures 1000 bytes
    state = children.state
    await eventually(lambda: state.ready and state.memory_bytes == 1000, what="READY and measured")
    await asyncio.sleep(0.5)  # ten measurements
    assert len(children.made) == 1 and not state.replacements
    assert any("as soon as it is ready, above --mlflow-max-memory" in r.getMessage() for r in caplog.records)


async def test_a_replacement_that_fails_leaves_the_old_child_serving_and_nothing_else_running(replace):
    supervisor, children, run = replace()
    state = children.state
    await eventually(lambda: state.ready, what="READY")
    old = children.made[0]
    children.beside_command = lambda port: exit_command(4, "ERROR cannot start")
    supervisor.reload()
    await eventually(lambda: len(children.made) == 2 and state.replacing is None, what="the failed replacement")
    assert state.ready and state.pid == old.pid and old.returncode is None
    assert is_gone(children.made[1].pid)
    assert state.failed_starts == 1 and not state.replacements
    assert never_unready_after_first_ready(state.history)


async def test_a_hung_child_is_replaced_beside_itself_and_counts_as_a_restart(replace):
    probe = LivenessProbe(interval=0.1, timeout=0.3, failures=2)
    supervisor, children, run = replace(probe=probe)
    state = children.state
    await eventually(lambda: state.ready, what="READY")
    old = children.made[0]
    os.kill(old.pid, signal.SIGSTOP)  # alive, answering nothing
    try:
        await eventually(lambda: state.replacements.get("liveness") == 1, what="the hung child replaced")
        await eventually(lambda: state.restarts == 1, what="the hang counted as a restart once the child is stopped")
        assert is_gone(old.pid) and "health check" in state.last_exit_reason and state.last_exit_code == -signal.SIGKILL
    finally:
        if not is_gone(old.pid):
            os.kill(old.pid, signal.SIGCONT)
    assert state.ready and state.pid == children.made[1].pid


async def test_without_a_second_address_a_reload_restarts_as_before(replace):
    supervisor, children, run = replace(beside=False)
    state = children.state
    await eventually(lambda: state.ready, what="READY")
    supervisor.reload()
    await eventually(lambda: state.restarts == 1 and state.ready, what="a restart")
    assert is_gone(children.made[0].pid) and not state.replacements
    assert UpstreamPhase.RESTARTING in state.history


async def test_an_old_child_that_crashes_while_its_replacement_starts_is_counted_and_replaced(replace):
    supervisor, children, run = replace()
    state = children.state
    await eventually(lambda: state.ready, what="READY")
    old = children.made[0]
    children.beside_command = lambda port: server_command(port, delay=1.0)
    supervisor.reload()
    await eventually(lambda: len(children.made) == 2, what="the replacement started")
    os.kill(old.pid, signal.SIGKILL)
    await eventually(lambda: state.phase is UpstreamPhase.RESTARTING, what="nothing serving")
    await eventually(lambda: state.ready and state.pid == children.made[1].pid, what="the replacement serving")
    await eventually(lambda: state.restarts == 1, what="the crash counted")
    assert state.last_exit_code == -signal.SIGKILL and state.last_exit_reason == f"exited with code {-signal.SIGKILL}"
    assert len(children.made) == 2


async def test_stop_during_a_replacement_stops_both_children(replace):
    supervisor, children, run = replace(SPAWN_GRANDCHILD="devnull")
    state = children.state
    await eventually(lambda: state.ready, what="READY")
    children.beside_command = lambda port: server_command(port, delay=30)
    supervisor.reload()
    await eventually(lambda: len(children.made) == 2 and children.made[1].pid, what="the replacement started")
    await supervisor.stop(grace_seconds=0.5)
    await asyncio.wait_for(run, 3)
    assert state.phase is UpstreamPhase.DOWN
    assert all(is_gone(child.pid) for child in children.made)
    assert all(wait_gone(pid, 1) for pid in children.grandchildren())


async def test_a_reload_while_nothing_serves_is_ignored(replace):
    supervisor, children, run = replace(command=lambda port: sleep_command(), start_timeout=30)
    await eventually(lambda: children.made and children.made[0].pid, what="a child starting")
    supervisor.reload()
    await asyncio.sleep(0.3)
    assert len(children.made) == 1 and not children.state.replacing


# --- the memory of a process tree ----------------------------------------------------------------


async def test_a_trees_memory_counts_its_children_and_grandchildren():
    command = [
        "python3", "-c",
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, \"-c\", \"b = bytearray(60 << 20); import time; time.sleep(30)\"]); time.sleep(30)']); "
        "time.sleep(30)",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(*command, start_new_session=True)
    try:
        await eventually(lambda: len(tree_pids(process.pid)) == 3, what="three processes")
        await eventually(lambda: tree_resident_bytes(process.pid) > 60 << 20, what="the grandchild's 60 MiB counted")
        assert tree_resident_bytes(free_port() + 4_000_000) == 0  # no such process
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


# --- where a replacement listens, and when it cannot start beside -------------------------------


def test_a_replacement_takes_the_other_socket_name_or_another_port(tmp_path):
    first = ChildAddress(unix_socket=str(tmp_path / SOCKET_NAME))
    second = address_beside(first, free_port=lambda: 1 / 0)
    assert second == ChildAddress(unix_socket=str(tmp_path / SPARE_SOCKET_NAME))
    assert address_beside(second, free_port=lambda: 1 / 0) == first  # and back again on the next one
    assert address_beside(ChildAddress(port=5000), free_port=lambda: 5001) == ChildAddress(port=5001)


def test_a_fixed_mlflow_port_or_a_changed_mlflow_install_means_a_restart(monkeypatch):
    import launcher.server

    monkeypatch.setattr(launcher.server, "mlflow_version", lambda: "3.17.2")
    assert why_not_beside(Settings(), "3.17.2") is None
    assert "--mlflow-port" in why_not_beside(Settings(mlflow_port=5123), "3.17.2")
    assert "changed (3.17.1 to 3.17.2)" in why_not_beside(Settings(), "3.17.1")
