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

from proxy.exchange import Exchange

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


class TokenCheck:
    """Every request but `/health` must carry the token (CORS preflights, which cannot, are
    answered by the front before this check: proxy.edge.cors).

    The `Authorization` header it accepted is not forwarded, so MLflow never sees the front's
    credential. Refusals are 401 in MLflow's error shape, with a Basic challenge so that a browser
    asks for it.
    """

    def __init__(self, token: str, open_paths: frozenset[str] = OPEN_PATHS):
        """`open_paths`: /health, and under a sub-path its /health as well."""
        if not token:
            raise ValueError("TokenCheck needs a non-empty token")
        self._token = token.encode("utf-8")
        self.open_paths = open_paths

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token=***)"

    def accepts(self, authorization: bytes | None) -> bool:
        credential = credential_from(authorization) if authorization else None
        # Constant time, so the comparison leaks nothing of the token through response timing.
        return credential is not None and hmac.compare_digest(credential, self._token)

    def admits(self, exchange: Exchange) -> bool:
        """Whether the request may go on; records on `exchange` whether it carried the token."""
        authenticated = exchange.count(b"authorization") == 1 and self.accepts(exchange.header(b"authorization"))
        exchange.authenticated = authenticated
        if exchange.path in self.open_paths:
            return True  # open, but told apart: /health shows MLflow's output only with the token
        exchange.drop_authorization = authenticated
        return authenticated


UNAUTHENTICATED_MESSAGE = "This server requires authentication: send 'Authorization: Bearer <token>' (MLFLOW_TRACKING_TOKEN for the mlflow client) or HTTP Basic with the token as password."
CHALLENGE = (b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode())
