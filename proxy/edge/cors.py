"""CORS preflights answered at the edge, from the front's own origin policy.

A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) carries no credentials
by the Fetch standard, so it cannot be held to the token. Forwarding it would let anyone without
the token occupy MLflow's connections; the front answers it itself instead, with the headers
MLflow's CORS middleware (Starlette's) would send. Which origins may write is the edge policy's
decision (fnmatch patterns, as MLflow's settings take them), so the answer is built here rather
than by a middleware that matches origins its own way.
"""

from __future__ import annotations

from proxy.edge.policy import OriginVerdict
from proxy.exchange import Exchange

# As MLflow's server allows them (mlflow/server/fastapi_security.py).
ALLOWED_METHODS = b"GET, POST, PUT, DELETE, OPTIONS, PATCH"
ALLOWED_METHOD_NAMES = frozenset(ALLOWED_METHODS.decode().split(", "))
MAX_AGE_SECONDS = b"600"
VARY = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
REFUSED_ORIGIN = "Cross-origin request blocked: this server accepts requests only from its own origin; allow another with --cors-allowed-origins (MLFLOW_SERVER_CORS_ALLOWED_ORIGINS)."


async def answer_preflight(exchange: Exchange, verdict: OriginVerdict, any_origin: bool, send) -> None:
    """200 with the CORS grant for an allowed origin and method; else 400 in MLflow's shape.

    With `any_origin` (`--cors-allowed-origins '*'`), as MLflow does, the grant is `*` without
    credentials: browsers then send no cookies or Authorization across origins."""
    method = (exchange.header(b"access-control-request-method") or b"").strip().decode("latin-1")
    if verdict is OriginVerdict.FOREIGN:
        await exchange.refuse(send, 400, REFUSED_ORIGIN, [(b"vary", VARY)])
        return
    if method not in ALLOWED_METHOD_NAMES:
        await exchange.refuse(send, 400, f"Cross-origin request blocked: method '{method[:20]}' is not allowed.", [(b"vary", VARY)])
        return
    if any_origin:
        headers = [(b"access-control-allow-origin", b"*")]
    else:
        headers = [(b"access-control-allow-origin", exchange.header(b"origin") or b""), (b"access-control-allow-credentials", b"true")]
    headers += [
        (b"access-control-allow-methods", ALLOWED_METHODS),
        (b"access-control-max-age", MAX_AGE_SECONDS),
        (b"vary", VARY),
        (b"content-length", b"0"),
        (b"x-request-id", exchange.request_id.encode()),
    ]
    requested = exchange.scope_header(b"access-control-request-headers")
    if requested:
        headers.append((b"access-control-allow-headers", requested))  # MLflow allows any header
    exchange.status = 200
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
