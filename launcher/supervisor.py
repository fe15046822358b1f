"""Keeps one MLflow child running: start, wait for readiness, restart with backoff, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from launcher.mlflow_process import MlflowProcess
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
    ):
        self.make_process = make_process
        self.state = state
        self.start_timeout = start_timeout
        self.backoff = backoff or Backoff()
        self.redact = redact or Redactor()
        self.probe = probe or LivenessProbe()
        self.before_start = before_start
        self.process: MlflowProcess | None = None
        self._stopping = asyncio.Event()

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
        self.state.mark_ready()
        self.state.failed_starts = 0
        self.state.last_error_lines.clear()
        log.info("MLflow is ready at %s (pid %s)", process.listens_at, process.pid)
        exited = asyncio.create_task(process.wait())
        hung = asyncio.create_task(self._until_hung(process))
        await asyncio.wait({exited, hung}, return_when=asyncio.FIRST_COMPLETED)
        if not hung.done():
            hung.cancel()
            code = await exited
            return code, f"exited with code {code}"
        log.error("MLflow %s; replacing it", hung.result())
        await process.stop(grace_seconds=2)
        return await exited, hung.result()

    async def _until_hung(self, process: MlflowProcess) -> str:
        """Returns (only) once MLflow has failed `probe.failures` health checks in a row."""
        failures = 0
        async with process.health_client(self.probe.timeout) as client:
            while failures < self.probe.failures:
                await asyncio.sleep(self.probe.interval)
                failures = 0 if await process.answers_health(client) else failures + 1
        return f"stopped answering its health check ({failures} checks of {self.probe.timeout:g} s failed)"

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
        if self.process and self.process.returncode is None:
            log.info("stopping MLflow (pid %s)", self.process.pid)
            await self.process.stop(grace_seconds)
        elif self.process:
            await self.process.stop(0)  # reap anything left in its group
        self.state.mark(UpstreamPhase.DOWN)
