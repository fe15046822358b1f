"""Errors the front answers on its own behalf, in MLflow's JSON shape."""

from __future__ import annotations

import json

from starlette.responses import Response
from starlette.types import Send

# MLflow's error codes mapped by the HTTP status they travel with.
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "BAD_REQUEST",
    408: "BAD_REQUEST",
    413: "BAD_REQUEST",
    414: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED",
    431: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    502: "TEMPORARILY_UNAVAILABLE",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_body(status: int, message: str) -> bytes:
    """`{"error_code": ..., "message": ...}` as compact UTF-8 JSON."""
    document = {"error_code": ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": message}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def mlflow_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A response shaped like MLflow's own errors: `{"error_code": ..., "message": ...}`."""
    return Response(error_body(status, message), status_code=status, headers=headers, media_type="application/json")


async def send_mlflow_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """The same answer as `mlflow_error`, as two ASGI messages: no response object on the hot path."""
    body = error_body(status, message)
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *(headers or ())]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
