"""Warnings the launcher finds while the app runs, for `/health` to show (e.g. grants the app's
service principal lacks in its workspace). The launcher fills it, from any thread; the front reads it.
A warning never makes `/health` 503: the app still serves what it can."""

from __future__ import annotations


class StartupWarnings:
    """An ordered set of one-line warnings, safe to add to from another thread (a tuple swapped whole)."""

    def __init__(self) -> None:
        self._items: tuple[str, ...] = ()

    def add(self, warning: str) -> bool:
        """Add `warning` unless it is there already; whether it was new."""
        if warning in self._items:
            return False
        self._items = (*self._items, warning)
        return True

    def __iter__(self):
        return iter(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)
