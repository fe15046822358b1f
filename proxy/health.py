"""`/health`: 200 only when the front and MLflow can both serve; otherwise 503 naming what is not."""

from __future__ import annotations

from starlette.responses import JSONResponse

from proxy.upstream import UpstreamPhase, UpstreamState


def health_response(state: UpstreamState, with_output: bool = True) -> JSONResponse:
    """The answer for `state`; MLflow's last output and exit reason only `with_output` (not for anonymous callers)."""
    mlflow = {
        "state": state.phase.value,
        "restarts": state.restarts,
        "uptime_seconds": round(state.uptime_seconds(), 1),
    }
    if state.last_exit_code is not None:
        mlflow["last_exit_code"] = state.last_exit_code
        if with_output:  # it may name the database's host and user
            mlflow["last_exit_reason"] = state.last_exit_reason
    if state.ready:
        return JSONResponse({"status": "ok", "front": "ready", "mlflow": mlflow})
    if with_output and state.last_error_lines:
        mlflow["last_output"] = list(state.last_error_lines)
    reason = f"mlflow is {state.phase.value}"
    if state.crash_loop:
        mlflow["crash_loop"] = True
        reason = f"mlflow is in a crash loop: {state.failed_starts} starts failed in a row; see last_output"
    if with_output and state.last_exit_reason and state.phase is UpstreamPhase.RESTARTING:
        # e.g. "cannot use its database: PostgreSQL at db:5432 refused the password for user "mlflow"…"
        reason += f"; last: mlflow {state.last_exit_reason}"
    body = {
        "status": "unavailable",
        "reason": reason,
        "front": "ready",
        "mlflow": mlflow,
    }
    return JSONResponse(body, status_code=503, headers={"Cache-Control": "no-store"})
