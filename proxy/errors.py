"""Errors the front answers on its own behalf, in MLflow's JSON shape."""

from __future__ import annotations

from starlette.responses import JSONResponse

# MLflow's error codes mapped by the HTTP status they travel with.
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "BAD_REQUEST",
    413: "BAD_REQUEST",
    431: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    502: "TEMPORARILY_UNAVAILABLE",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def mlflow_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A response shaped like MLflow's own errors: `{"error_code": ..., "message": ...}`."""
    body = {"error_code": ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": message}
    return JSONResponse(body, status_code=status, headers=headers)
