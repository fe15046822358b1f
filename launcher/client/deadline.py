"""A blocking call bounded in time: databricks-sdk's token request has no timeout of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlinePassed(Exception):
    """The call did not return within its time; it goes on alone in its daemon thread."""


def call_with_deadline(function: Callable[[], T], timeout: float, name: str) -> T:
    """`function()` in a daemon thread named `name`: its value, or its exception raised here, or
    DeadlinePassed after `timeout` seconds."""
    outcome: list[tuple[bool, object]] = []

    def run() -> None:
        try:
            outcome.append((True, function()))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise DeadlinePassed(name)
    succeeded, value = outcome[0]
    if succeeded:
        return value  # type: ignore[return-value]
    raise value  # type: ignore[misc]
