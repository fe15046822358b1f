"""Keeps one MLflow child running: start, wait for readiness, replace, restart with backoff, stop.

A child that must be replaced while it still serves (SIGHUP asks for a reload, its memory passed
the ceiling, or it failed its liveness probe) is replaced beside itself: a new child starts at
another address, the front is pointed at it once it is ready, and the old one finishes the
requests it holds (up to the drain time) before it is stopped. A child that exits is restarted
as before: there is nothing left to serve in the meantime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from launcher.mlflow_process import MlflowProcess
from launcher.process_memory import tree_resident_bytes
from launcher.redaction import Redactor
from proxy.upstream import UpstreamPhase, UpstreamState

log = logging.getLogger("mlflow_app.launcher")


class Backoff:
    """Capped exponential delay between restarts, reset once a run has stayed up a while."""

    def __init__(self, initial: float = 1.0, cap: float = 30.0, stable_after: float = 60.0):
        self.initial = initial
        self.cap = cap
        self.stable_after = stable_after
        self.current = initial

    def next_delay(self, uptime: float) -> float:
        if uptime >= self.stable_after:
            self.current = self.initial
        delay = self.current
        self.current = min(self.current * 2, self.cap)
        return delay


@dataclass(frozen=True)
class LivenessProbe:
    """How a running MLflow is checked: `failures` health checks in a row failing means hung."""

    interval: float = 10.0
    timeout: float = 5.0
    failures: int = 3


# A step before each start (the database check): None when MLflow may start, else (exit code, why).
BeforeStart = Callable[[Callable[[str], None]], Awaitable[tuple[int, str] | None]]
# Why a replacement cannot start beside the serving child now (e.g. a fixed port); None when it can.
WhyNotBeside = Callable[[], str | None]
# Connections of the front to the child at (base_url, unix_socket) serving a request now.
InFlightAt = Callable[[str, str | None], int]
# A new child at an address other than the serving one's (given), its output to the callback.
MakeBeside = Callable[[Callable[[str], None], MlflowProcess], MlflowProcess]


@dataclass(frozen=True)
class Replacement:
    """How a child is replaced beside itself: the memory ceiling and the drain of the old one."""

    make_beside: MakeBeside | None = None  # None: a child is always restarted, never replaced beside itself
    why_not_beside: WhyNotBeside = lambda: None
    in_flight_at: InFlightAt = lambda base_url, unix_socket: 0
    max_memory: int | None = None  # bytes of the child's whole tree; None: memory never triggers one
    memory_interval: float = 10.0  # seconds between measurements
    drain_seconds: float = 8.0  # how long the old child may finish what it holds once the new one serves
    stop_grace: float = 5.0  # then SIGTERM, and SIGKILL after this
    measure: Callable[[int], int] = tree_resident_bytes


class Supervisor:
    """Runs `make_process()` until stopped, publishing what it sees in `state`."""

    def __init__(
        self,
        make_process: Callable[[Callable[[str], None]], MlflowProcess],
        state: UpstreamState,
        start_timeout: float,
        backoff: Backoff | None = None,
        redact: Redactor | None = None,
        probe: LivenessProbe | None = None,
        before_start: BeforeStart | None = None,
        replacement: Replacement | None = None,
    ):
        self.make_process = make_process
        self.state = state
        self.start_timeout = start_timeout
        self.backoff = backoff or Backoff()
        self.redact = redact or Redactor()
        self.probe = probe or LivenessProbe()
        self.before_start = before_start
        self.replacement = replacement or Replacement()
        self.process: MlflowProcess | None = None  # the child the front sends requests to
        self.others: set[MlflowProcess] = set()  # a replacement starting, or an old child draining
        self._stopping = asyncio.Event()
        self._reload = asyncio.Event()
        self._memory_retry_at = 0.0  # after a failed replacement, memory waits out a backoff

    def reload(self) -> None:
        """Replace the serving child beside itself (SIGHUP); ignored while none serves or one is being replaced."""
        if self.state.replacing:
            log.info("SIGHUP: MLflow is already being replaced (%s); ignored", self.state.replacing)
        elif not self.state.ready:
            log.info("SIGHUP: MLflow is %s, not serving; the child starting now is already a fresh one", self.state.phase.value)
        else:
            self._reload.set()

    def _remember(self, line: str) -> None:
        self.state.last_error_lines.append(self.redact(line)[:500])

    async def run(self) -> None:
        while not self._stopping.is_set():
            self.state.mark(UpstreamPhase.STARTING if self.state.restarts == 0 else UpstreamPhase.RESTARTING)
            failed = await self._before_start()
            if self._stopping.is_set():
                return
            if failed:  # counts as a start that never became ready: it feeds the crash loop
                self.state.failed_starts += 1
                await self._before_restart(*failed)
                continue
            self.process = self.make_process(self._remember)
            await self.process.start()
            self.state.pid = self.process.pid
            if self._stopping.is_set():  # stop() came while the child was being spawned
                await self.process.stop(grace_seconds=5)
                return
            code, reason = await self._run_once(self.process)
            if self._stopping.is_set():
                return
            # Its workers may outlive it (and hold the port): clear the whole group first.
            await self.process.stop(grace_seconds=2)
            await self._before_restart(code, reason)

    async def _before_start(self) -> tuple[int, str] | None:
        """The step before a start, if any; given up (None) when stop() comes first."""
        if self.before_start is None:
            return None
        step = asyncio.create_task(self.before_start(self._remember))
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({step, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not step.done():
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await step
            return None
        return step.result()

    async def _run_once(self, process: MlflowProcess) -> tuple[int, str]:
        """Wait for readiness, then watch until the child exits or hangs; returns (code, why)."""
        if not await process.wait_ready(self.start_timeout):
            self.state.failed_starts += 1
            if process.returncode is None and not self._stopping.is_set():
                await process.stop(grace_seconds=5)
                return await process.wait(), f"did not become ready within {self.start_timeout:.0f} s"
            code = await process.wait()
            return code, f"exited with code {code} before becoming ready"
        self._serve_from(process)
        log.info("MLflow is ready at %s (pid %s)", process.listens_at, process.pid)
        while True:
            reason, why = await self._until_replaced_or_gone(process)
            if reason == "exited":
                return process.returncode, why
            if reason == "liveness":
                log.error("MLflow %s; replacing it", why)
            beside = None if self._stopping.is_set() else await self._replace_beside(process, reason, why)
            if beside is process:  # not replaced: it keeps serving
                continue
            if beside is None:  # replaced by a restart: stop it, then start anew
                await process.stop(grace_seconds=2)
                return await process.wait(), why
            process = beside

    def _serve_from(self, process: MlflowProcess) -> None:
        """Point the front at `process` (ready) and publish it."""
        self.process = process
        self.state.point_at(process.base_url, process.unix_socket)
        self.state.pid = process.pid
        self.state.mark_ready()
        self.state.failed_starts = 0
        self.state.last_error_lines.clear()

    async def _until_replaced_or_gone(self, process: MlflowProcess) -> tuple[str, str]:
        """(reason, why) once the serving child exits ("exited") or must be replaced ("reload",
        "memory", "liveness"); returns at once, with "exited", when stop() comes."""
        watches = {
            asyncio.create_task(self._exit_of(process)),
            asyncio.create_task(self._until_hung(process)),
            asyncio.create_task(self._until_too_big(process)),
            asyncio.create_task(self._until_reload()),
            asyncio.create_task(self._until_stopping()),
        }
        try:
            done, _ = await asyncio.wait(watches, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for watch in watches:
                watch.cancel()
        return min(watch.result() for watch in done)  # "exited" first when several came at once

    async def _exit_of(self, process: MlflowProcess) -> tuple[str, str]:
        code = await process.wait()
        return "exited", f"exited with code {code}"

    async def _until_stopping(self) -> tuple[str, str]:
        await self._stopping.wait()
        return "exited", "stopping"

    async def _until_reload(self) -> tuple[str, str]:
        await self._reload.wait()
        self._reload.clear()
        return "reload", "was asked to reload (SIGHUP)"

    async def _until_too_big(self, process: MlflowProcess) -> tuple[str, str]:
        """Measures the child's tree every `memory_interval` (for /metrics); returns once it passes the ceiling."""
        policy = self.replacement
        ceiling = policy.max_memory
        first = True
        while True:
            used = await asyncio.to_thread(policy.measure, process.pid) if process.pid else 0
            self.state.memory_bytes = used
            if ceiling is not None and used > ceiling:
                if first:  # a new one would be as big: replacing it again and again would only cost CPU
                    log.warning(
                        "MLflow (pid %s) takes %.0f MiB as soon as it is ready, above --mlflow-max-memory (%.0f MiB); it is not replaced "
                        "for its memory: raise the ceiling above what MLflow takes at start", process.pid, used / 2**20, ceiling / 2**20,
                    )  # fmt: skip
                    ceiling = None
                elif time.monotonic() >= self._memory_retry_at:
                    return "memory", f"uses {used / 2**20:.0f} MiB, above --mlflow-max-memory ({ceiling / 2**20:.0f} MiB)"
            first = False
            await asyncio.sleep(policy.memory_interval)

    async def _until_hung(self, process: MlflowProcess) -> tuple[str, str]:
        """Returns (only) once MLflow has failed `probe.failures` health checks in a row."""
        failures = 0
        async with process.health_client(self.probe.timeout) as client:
            while failures < self.probe.failures:
                await asyncio.sleep(self.probe.interval)
                failures = 0 if await process.answers_health(client) else failures + 1
        return "liveness", f"stopped answering its health check ({failures} checks of {self.probe.timeout:g} s failed)"

    async def _replace_beside(self, old: MlflowProcess, reason: str, why: str) -> MlflowProcess | None:
        """A new child beside `old`, serving once ready, and `old` drained and stopped: returns the new
        child; `old` when it keeps serving (the new one failed, and `old` is not hung); None when it
        must be restarted instead (no second address, or hung with no replacement ready)."""
        why_not = self.replacement.why_not_beside() if self.replacement.make_beside else "no second address for MLflow was configured"
        if why_not:
            log.warning("MLflow %s; it is restarted rather than replaced beside itself, because %s", why, why_not)
            return None
        log.warning("MLflow %s; starting a new MLflow beside it (pid %s keeps serving until the new one is ready)", why, old.pid)
        self.state.replacing = reason
        started = time.monotonic()
        try:
            new = await self._start_beside(old)
            if new is None:
                self.state.failed_starts += 1
                self._memory_retry_at = time.monotonic() + self.backoff.next_delay(0)
                if reason == "liveness" or old.returncode is not None:
                    return None
                log.error("MLflow's replacement failed; pid %s keeps serving", old.pid)
                return old
            crashed = old.returncode is not None
            self._serve_from(new)
            self.state.replacements[reason] = self.state.replacements.get(reason, 0) + 1
            log.info("MLflow replaced (%s): pid %s serves at %s; pid %s finishes what it holds", reason, new.pid, new.listens_at, old.pid)
            await self._drain_and_stop(old, new)
            if crashed or reason == "liveness":  # it failed: a restart, whose exit /health reports
                self.state.restarts += 1
                self.state.last_exit_code = old.returncode
                self.state.last_exit_reason = f"exited with code {old.returncode}" if crashed else why
            log.info("MLflow's replacement (%s) took %.1f s; the old MLflow (pid %s) is stopped", reason, time.monotonic() - started, old.pid)
            return new
        finally:
            self.state.replacing = None

    async def _start_beside(self, old: MlflowProcess) -> MlflowProcess | None:
        """A new child started and ready while `old` serves; None (and nothing left running) when it failed."""
        failed = await self._before_start()
        if failed or self._stopping.is_set():
            if failed:
                log.error("MLflow's replacement cannot start: %s", failed[1])
            return None
        new = self.replacement.make_beside(self._remember, old)
        self.others.add(new)  # stop() stops it too
        serving = False
        try:
            await new.start()
            ready = asyncio.create_task(new.wait_ready(self.start_timeout))
            old_exited = asyncio.create_task(old.wait())
            stopping = asyncio.create_task(self._stopping.wait())
            try:
                while not ready.done():
                    await asyncio.wait({ready, old_exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if stopping.done():
                        ready.cancel()
                        break
                    if old_exited.done() and self.state.ready:  # nothing serves until the new one is ready
                        log.error("MLflow (pid %s) exited with code %s while its replacement was starting", old.pid, old.returncode)
                        self.state.last_exit_code = old.returncode
                        self.state.mark(UpstreamPhase.RESTARTING)
            finally:
                old_exited.cancel()
                stopping.cancel()
            serving = ready.done() and not ready.cancelled() and ready.result() and not self._stopping.is_set()
            if not serving and not self._stopping.is_set():
                why = f"exited with code {new.returncode}" if new.returncode is not None else f"was not ready within {self.start_timeout:.0f} s"
                log.error("MLflow's replacement (pid %s) %s", new.pid, why)
            return new if serving else None
        finally:
            self.others.discard(new)
            if not serving and new.process is not None:
                await new.stop(grace_seconds=2)  # its whole group, even when it has exited

    async def _drain_and_stop(self, old: MlflowProcess, new: MlflowProcess) -> None:
        """Let `old` finish the requests the front sent it (up to the drain time), then stop its whole
        tree; at once if `new` exits meanwhile, so that its restart need not wait for the drain."""
        self.others.add(old)
        try:
            policy = self.replacement
            deadline = time.monotonic() + policy.drain_seconds
            while old.returncode is None and new.returncode is None and time.monotonic() < deadline and not self._stopping.is_set():
                if policy.in_flight_at(old.base_url, old.unix_socket) == 0:
                    break
                await asyncio.sleep(0.05)
            else:
                if old.returncode is None and new.returncode is None and not self._stopping.is_set():
                    left = policy.in_flight_at(old.base_url, old.unix_socket)
                    log.warning("the old MLflow (pid %s) still serves %d requests after %.0f s; they are cut", old.pid, left, policy.drain_seconds)
            await old.stop(policy.stop_grace)
        finally:
            self.others.discard(old)

    async def _before_restart(self, code: int, reason: str) -> None:
        uptime = self.state.uptime_seconds()
        self.state.restarts += 1
        self.state.last_exit_code = code
        self.state.last_exit_reason = reason
        self.state.mark(UpstreamPhase.RESTARTING)
        delay = self.backoff.next_delay(uptime)
        last = " | ".join(list(self.state.last_error_lines)[-5:])
        if self.state.crash_loop:
            log.error("MLflow is in a crash loop (%d starts failed in a row); check its output and settings. Last output: %s", self.state.failed_starts, last)
        log.error("MLflow %s after %.1f s; restarting in %.0f s. Last output: %s", reason, uptime, delay, last)
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            pass

    async def stop(self, grace_seconds: float) -> None:
        """Stop supervising and stop the child (its whole process group)."""
        self._stopping.set()
        self.state.mark(UpstreamPhase.STOPPING)
        children = [child for child in (self.process, *self.others) if child is not None]
        await asyncio.gather(*(self._stop_child(child, grace_seconds) for child in children))
        self.state.mark(UpstreamPhase.DOWN)

    async def _stop_child(self, child: MlflowProcess, grace_seconds: float) -> None:
        if child.returncode is None and child.process is not None:
            log.info("stopping MLflow (pid %s)", child.pid)
            await child.stop(grace_seconds)
        else:
            await child.stop(0)  # reap anything left in its group
