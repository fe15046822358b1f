"""One log line per request, and the request id that ties it to the client and to MLflow."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("mlflow_app.request")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The platform's `X-Request-Id` when it is a sane token, else a new one."""
    for key, value in headers:
        if key.lower() == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SAFE_REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestLog:
    """ASGI wrapper: measures each request and logs it once, whatever happens inside."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        # Forward the id to MLflow too, so its lines can be matched with ours.
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"x-request-id"]
        scope["headers"].append((b"x-request-id", request_id.encode()))
        counts = {"status": 0, "bytes_in": 0, "bytes_out": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counts["bytes_in"] += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                counts["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                counts["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, tagging_send)
        finally:
            log.info(
                "request",
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": counts["status"] or 500,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "bytes_in": counts["bytes_in"],
                        "bytes_out": counts["bytes_out"],
                        "request_id": request_id,
                        "user": header(scope["headers"], b"x-forwarded-email"),
                        "client": scope["client"][0] if scope.get("client") else None,
                    }
                },
            )
