"""The MLflow releases mlflow-app was read against and tested with, and the check of the installed one.

Every module that relies on MLflow's internals (the child's plugin and migration, the child's own
server set-up, the client plugin) checks against this one list. It lives in launcher/client/
because code running in users' clients may import nothing else of ours; the child's code uses it too.
"""

from __future__ import annotations

TESTED_MLFLOW = ("3.17",)  # major.minor releases; add one only after reading the fenced internals again


def is_tested(version: str | None) -> bool:
    """Whether `version` (e.g. "3.17.2") is of a tested major.minor release."""
    return bool(version) and ".".join(version.split(".")[:2]) in TESTED_MLFLOW


def untested_message(installed: str | None, what: str, then: str = "") -> str | None:
    """One line saying `what` was not tested with `installed` and what to do; None when it was."""
    if is_tested(installed):
        return None
    tested = " or ".join(TESTED_MLFLOW)
    line = (
        f"mlflow-app's {what} {'were' if ' and ' in what else 'was'} tested with MLflow {tested}; installed: {installed or 'none'}. "
        f"Install mlflow=={TESTED_MLFLOW[-1]}.* or an mlflow-app release made for {installed or 'your MLflow'}."
    )
    return f"{line} {then}" if then else line
