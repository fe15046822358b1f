"""Optional authentication at the front: one static token, as a bearer token or a Basic password.

The mlflow client sends `Authorization: Bearer <MLFLOW_TRACKING_TOKEN>`, or Basic with
`MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD`; a browser answers the Basic challenge with
its login prompt and then repeats the credentials on every same-origin request, the UI's API calls
included. So one token covers the UI, the API, artifacts and `/metrics` without a login page.
"""

from __future__ import annotations

import binascii
import hmac
from base64 import b64decode

from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.errors import mlflow_error

REALM = "mlflow-app"
# Probes (the platform's, a load balancer's) carry no credentials; /health tells nothing secret.
OPEN_PATHS = frozenset({"/health"})


def credential_from(authorization: bytes) -> bytes | None:
    """The secret an `Authorization` value carries: a bearer token, or a Basic password (any user)."""
    scheme, _, value = authorization.strip().partition(b" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == b"bearer" and value:
        return value
    if scheme == b"basic" and value:
        try:
            decoded = b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        _, colon, password = decoded.partition(b":")
        return password if colon else None
    return None


def is_cors_preflight(scope: Scope) -> bool:
    """A browser's CORS preflight, which by the Fetch standard never carries credentials."""
    names = {key.lower() for key, _ in scope["headers"]}
    return scope["method"] == "OPTIONS" and b"origin" in names and b"access-control-request-method" in names


class TokenAuth:
    """ASGI wrapper: every request but `/health` (and CORS preflights) must carry the token.

    The `Authorization` header it accepted is removed before the request goes on, so MLflow never
    sees the front's credential. Refusals are 401 in MLflow's error shape, with a Basic challenge
    so that a browser asks for it.
    """

    def __init__(self, app: ASGIApp, token: str):
        if not token:
            raise ValueError("TokenAuth needs a non-empty token")
        self.app = app
        self._token = token.encode("utf-8")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(app={self.app!r}, token=***)"

    def accepts(self, authorization: bytes | None) -> bool:
        credential = credential_from(authorization) if authorization else None
        # Constant time, so the comparison leaks nothing of the token through response timing.
        return credential is not None and hmac.compare_digest(credential, self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [value for key, value in scope["headers"] if key.lower() == b"authorization"]
        authenticated = len(values) == 1 and self.accepts(values[0])
        if scope["path"] in OPEN_PATHS or is_cors_preflight(scope):
            # Open, but told apart: /health shows MLflow's output only to callers with the token.
            scope.setdefault("state", {})["authenticated"] = authenticated
            await self.app(scope, receive, send)
            return
        if authenticated:
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]
            await self.app(scope, receive, send)
            return
        message = (
            "This server requires authentication: send 'Authorization: Bearer <token>' "
            "(MLFLOW_TRACKING_TOKEN for the mlflow client) or HTTP Basic with the token as password."
        )
        response = mlflow_error(401, message, headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
        await response(scope, receive, send)
