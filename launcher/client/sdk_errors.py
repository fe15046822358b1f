"""databricks-sdk's error messages as one line, for the client's token and the server's sign-in check."""

from __future__ import annotations


def sdk_reason(exc: BaseException) -> str:
    """An exception's message on one line, without the config dump databricks-sdk appends (masked, but long)."""
    text = " ".join(str(exc).split())
    for marker in (". Config:", " Config:"):
        text = text.split(marker)[0]
    return text.rstrip(".") or type(exc).__name__
