"""Keeps one MLflow child running: start, wait for readiness, restart with backoff, stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from launcher.mlflow_process import MlflowProcess
from proxy.redaction import Redactor
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


class Supervisor:
    """Runs `make_process()` until stopped, publishing what it sees in `state`."""

    def __init__(
        self,
        make_process: Callable[[Callable[[str], None]], MlflowProcess],
        state: UpstreamState,
        start_timeout: float,
        backoff: Backoff | None = None,
        redact: Redactor | None = None,
    ):
        self.make_process = make_process
        self.state = state
        self.start_timeout = start_timeout
        self.backoff = backoff or Backoff()
        self.redact = redact or Redactor()
        self.process: MlflowProcess | None = None
        self._stopping = asyncio.Event()

    def _remember(self, line: str) -> None:
        self.state.last_error_lines.append(self.redact(line)[:500])

    async def run(self) -> None:
        while not self._stopping.is_set():
            self.state.mark(UpstreamPhase.STARTING if self.state.restarts == 0 else UpstreamPhase.RESTARTING)
            self.process = self.make_process(self._remember)
            await self.process.start()
            self.state.pid = self.process.pid
            if self._stopping.is_set():  # stop() came while the child was being spawned
                await self.process.stop(grace_seconds=5)
                return
            if await self.process.wait_ready(self.start_timeout):
                self.state.mark_ready()
                self.state.last_error_lines.clear()
                log.info("MLflow is ready at %s (pid %s)", self.state.base_url, self.process.pid)
            elif self.process.returncode is None and not self._stopping.is_set():
                log.error("MLflow did not become ready within %.0f s; restarting it", self.start_timeout)
                await self.process.stop(grace_seconds=5)
            code = await self.process.wait()
            if self._stopping.is_set():
                return
            # Its workers may outlive it (and hold the port): clear the whole group first.
            await self.process.stop(grace_seconds=2)
            uptime = self.state.uptime_seconds()
            self.state.restarts += 1
            self.state.last_exit_code = code
            self.state.mark(UpstreamPhase.RESTARTING)
            delay = self.backoff.next_delay(uptime)
            last = " | ".join(list(self.state.last_error_lines)[-5:])
            log.error("MLflow exited with code %s after %.1f s; restarting in %.0f s. Last output: %s", code, uptime, delay, last)
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
