"""The workspace's error shape, shared by the stand-in's endpoints."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ApiError(Exception):
    """A refusal an endpoint raises; the workspace answers it as `databricks_error`."""

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def response(self) -> JSONResponse:
        return databricks_error(self.status, self.error_code, self.message)


def databricks_error(status: int, error_code: str, message: str) -> JSONResponse:
    """The REST API's error shape (the same one MLflow uses)."""
    return JSONResponse({"error_code": error_code, "message": message}, status_code=status)


def not_found(message: str) -> ApiError:
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", message)


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def already_exists(message: str) -> ApiError:
    return ApiError(409, "RESOURCE_ALREADY_EXISTS", message)
