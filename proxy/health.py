"""`/health`: 200 only when the front and MLflow can both serve; otherwise 503 naming what is not."""

from __future__ import annotations

from starlette.responses import JSONResponse

from proxy.upstream import UpstreamState


def health_response(state: UpstreamState, with_output: bool = True) -> JSONResponse:
    """The answer for `state`; MLflow's last output lines only `with_output` (not for anonymous callers)."""
    mlflow = {
        "state": state.phase.value,
        "restarts": state.restarts,
        "uptime_seconds": round(state.uptime_seconds(), 1),
    }
    if state.last_exit_code is not None:
        mlflow["last_exit_code"] = state.last_exit_code
        mlflow["last_exit_reason"] = state.last_exit_reason
    if state.ready:
        return JSONResponse({"status": "ok", "front": "ready", "mlflow": mlflow})
    if with_output and state.last_error_lines:
        mlflow["last_output"] = list(state.last_error_lines)
    reason = f"mlflow is {state.phase.value}"
    if state.crash_loop:
        mlflow["crash_loop"] = True
        reason = f"mlflow is in a crash loop: {state.failed_starts} starts failed in a row; see last_output"
    body = {
        "status": "unavailable",
        "reason": reason,
        "front": "ready",
        "mlflow": mlflow,
    }
    return JSONResponse(body, status_code=503, headers={"Cache-Control": "no-store"})
