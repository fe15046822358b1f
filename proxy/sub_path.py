"""Serving under a sub-path (`--static-prefix /mlflow`): what lies outside it, and paths as seen inside it.

MLflow runs with the same prefix, so its routes, its redirects and the URLs it makes itself (the
assistant's stream URL, for one) already carry it, and the front forwards paths as they came: the only
cost per request is one string prefix test. This module answers what falls outside the prefix and
gives the observer each path as MLflow's route table knows it (without the prefix).
"""

from __future__ import annotations

from starlette.types import Send

from proxy.exchange import Exchange

# What `route_path` gives a path outside the prefix: no MLflow route, so its label is `{other}`.
OUTSIDE = ""


class SubPath:
    """The prefix (`/mlflow`: leading slash, no trailing one) the whole app is served under."""

    __slots__ = ("prefix", "inside", "not_found")

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.inside = prefix + "/"  # `/mlflowx` is not inside `/mlflow`
        self.not_found = f"Not Found: this server serves MLflow under {self.inside} (--static-prefix); only /health answers outside it."

    async def answer_outside(self, exchange: Exchange, send: Send) -> None:
        """The prefix itself is sent to the UI at `<prefix>/` (its relative URLs need the slash); any other
        path outside it is a 404 in MLflow's shape, naming the prefix."""
        if exchange.path != self.prefix:
            await exchange.refuse(send, 404, self.not_found)
            return
        location = self.inside.encode()
        query = exchange.scope["query_string"]
        if query:
            location += b"?" + query
        exchange.status = 308
        headers = [(b"location", location), (b"content-length", b"0"), (b"x-request-id", exchange.request_id.encode())]
        await send({"type": "http.response.start", "status": 308, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def route_path(self, path: str) -> str:
        """`path` as MLflow's unprefixed route table names it; `OUTSIDE` for a path outside the prefix
        (the root `/health` stays itself)."""
        if path.startswith(self.inside):
            return path[len(self.prefix) :]
        return path if path == "/health" else OUTSIDE
