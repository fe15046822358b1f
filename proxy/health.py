"""`/health`: 200 only when the front and MLflow can both serve; otherwise 503 naming what is not.
Start-up warnings (proxy/startup_warnings.py, e.g. missing workspace grants) are listed for callers
who may see MLflow's output, ready or not, and never change the status."""

from __future__ import annotations

from starlette.responses import JSONResponse

from proxy.forwarding.upstream_client import PoolLoad
from proxy.startup_warnings import StartupWarnings
from proxy.upstream import UpstreamPhase, UpstreamState


def health_response(state: UpstreamState, with_output: bool = True, load: PoolLoad | None = None, warnings: StartupWarnings | None = None) -> JSONResponse:
    """The answer for `state`; MLflow's last output and exit reason, and the start-up `warnings`, only
    `with_output` (not for anonymous callers).

    With every connection to MLflow in use and requests waiting for one, the front cannot serve
    in time: 503, so that a load balancer sends new requests elsewhere until it drains."""
    mlflow = {
        "state": state.phase.value,
        "restarts": state.restarts,
        "uptime_seconds": round(state.uptime_seconds(), 1),
    }
    if state.replacing:  # a new MLflow is starting beside the serving one; requests keep being served
        mlflow["replacing"] = state.replacing
    if state.last_exit_code is not None:
        mlflow["last_exit_code"] = state.last_exit_code
        if with_output:  # it may name the database's host and user
            mlflow["last_exit_reason"] = state.last_exit_reason
    if state.ready and not (load is not None and load.saturated):
        return JSONResponse(with_warnings(with_connections({"status": "ok", "front": "ready", "mlflow": mlflow}, load), warnings, with_output))
    front = "ready"
    if state.ready:  # but saturated
        front = "saturated"
        reason = f"every connection to mlflow is in use ({load.in_use} of {load.limit}) and {load.waiting} requests wait for one"
    else:
        reason = unavailable_reason(state, mlflow, with_output)
    body = {"status": "unavailable", "reason": reason, "front": front, "mlflow": mlflow}
    return JSONResponse(with_warnings(with_connections(body, load), warnings, with_output), status_code=503, headers={"Cache-Control": "no-store"})


def unavailable_reason(state: UpstreamState, mlflow: dict, with_output: bool) -> str:
    """Why MLflow cannot serve; adds its last output to `mlflow` for callers who may see it."""
    if with_output and state.last_error_lines:
        mlflow["last_output"] = list(state.last_error_lines)
    reason = f"mlflow is {state.phase.value}"
    if state.crash_loop:
        mlflow["crash_loop"] = True
        reason = f"mlflow is in a crash loop: {state.failed_starts} starts failed in a row; see last_output"
    if with_output and state.last_exit_reason and state.phase is UpstreamPhase.RESTARTING:
        # e.g. "cannot use its database: PostgreSQL at db:5432 refused the password for user "mlflow"…"
        reason += f"; last: mlflow {state.last_exit_reason}"
    return reason


def with_connections(body: dict, load: PoolLoad | None) -> dict:
    if load is not None:
        body["connections"] = {"in_use": load.in_use, "limit": load.limit, "waiting": load.waiting}
    return body


def with_warnings(body: dict, warnings: StartupWarnings | None, with_output: bool) -> dict:
    if warnings and with_output:  # they name the workspace's catalogs and volumes
        body["warnings"] = list(warnings)
    return body
