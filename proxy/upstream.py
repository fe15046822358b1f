"""What the front knows about the MLflow child: where it listens and whether it can take requests.

The launcher owns the child process and writes this state; the proxy only reads it. Passing one
object in keeps `proxy/` free of any import from `launcher/`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum


class UpstreamPhase(str, Enum):
    STARTING = "starting"  # launched, not answering its health check yet
    READY = "ready"
    RESTARTING = "restarting"  # exited or hung; waiting out the backoff before a new start
    STOPPING = "stopping"
    DOWN = "down"  # stopped and not coming back (shutdown)


@dataclass
class UpstreamState:
    """The MLflow child as the front sees it. Mutated by the supervisor, read by the proxy."""

    base_url: str  # http://host[:port]: the Host MLflow is sent, and the origin its redirects name
    unix_socket: str | None = None  # when set, connect here instead of to base_url's host and port
    phase: UpstreamPhase = UpstreamPhase.STARTING
    pid: int | None = None
    restarts: int = 0
    ready_since: float | None = None  # monotonic clock
    last_exit_code: int | None = None
    last_exit_reason: str | None = None
    failed_starts: int = 0  # consecutive starts that never became ready
    last_error_lines: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    replacing: str | None = None  # why a new child is being started beside the serving one, while it is
    replacements: dict[str, int] = field(default_factory=dict)  # children replaced beside the old one, by reason
    memory_bytes: int | None = None  # resident memory of the child's whole process tree, last measured

    REPLACEMENT_REASONS = ("reload", "memory", "liveness")

    CRASH_LOOP_AFTER = 3

    @property
    def crash_loop(self) -> bool:
        """MLflow keeps exiting before it ever answers: a configuration error, not bad luck."""
        return self.failed_starts >= self.CRASH_LOOP_AFTER

    @property
    def ready(self) -> bool:
        return self.phase is UpstreamPhase.READY

    def mark_ready(self) -> None:
        self.phase = UpstreamPhase.READY
        self.ready_since = time.monotonic()

    def mark(self, phase: UpstreamPhase) -> None:
        self.phase = phase
        self.ready_since = None

    def point_at(self, base_url: str, unix_socket: str | None) -> None:
        """Send new requests to another child. Both fields change between two awaits of the event
        loop the front runs on, so no request sees one without the other."""
        self.base_url = base_url
        self.unix_socket = unix_socket

    def uptime_seconds(self) -> float:
        return 0.0 if self.ready_since is None else time.monotonic() - self.ready_since
