"""`/health`: 200 only when MLflow is ready, otherwise 503 saying why."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from proxy.health import health_response
from proxy.upstream import UpstreamPhase, UpstreamState

NOT_READY = [phase for phase in UpstreamPhase if phase is not UpstreamPhase.READY]


def body_of(response) -> dict:
    return json.loads(response.body)


def state_in(phase: UpstreamPhase, **fields) -> UpstreamState:
    state = UpstreamState(base_url="http://127.0.0.1:1", **fields)
    if phase is UpstreamPhase.READY:
        state.mark_ready()
    else:
        state.mark(phase)
    return state


def test_ready_answers_200_ok():
    response = health_response(state_in(UpstreamPhase.READY, restarts=2, pid=4321))

    assert response.status_code == 200
    body = body_of(response)
    assert body["status"] == "ok"
    assert body["front"] == "ready"
    assert body["mlflow"]["state"] == "ready"
    assert body["mlflow"]["restarts"] == 2
    assert body["mlflow"]["uptime_seconds"] >= 0


@pytest.mark.parametrize("phase", NOT_READY, ids=lambda phase: phase.value)
def test_not_ready_answers_503_naming_the_phase(phase):
    response = health_response(state_in(phase))

    assert response.status_code == 503
    body = body_of(response)
    assert body["status"] == "unavailable"
    assert body["reason"] == f"mlflow is {phase.value}"
    assert body["mlflow"]["state"] == phase.value
    assert body["front"] == "ready"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("phase", NOT_READY, ids=lambda phase: phase.value)
def test_not_ready_includes_mlflows_last_output_and_exit_code(phase):
    state = state_in(phase, last_exit_code=1)
    state.last_error_lines.extend(["Traceback (most recent call last):", "sqlalchemy.exc.OperationalError: no such table"])

    body = body_of(health_response(state))

    assert body["mlflow"]["last_output"] == ["Traceback (most recent call last):", "sqlalchemy.exc.OperationalError: no such table"]
    assert body["mlflow"]["last_exit_code"] == 1


def test_while_restarting_the_reason_says_why_the_last_start_failed():
    why = 'cannot use its database: PostgreSQL at db:5432 refused the password for user "mlflow"; correct …'
    state = state_in(UpstreamPhase.RESTARTING, last_exit_code=1, last_exit_reason=why, failed_starts=3)

    body = body_of(health_response(state))
    anonymous = body_of(health_response(state, with_output=False))

    assert body["reason"] == f"mlflow is in a crash loop: 3 starts failed in a row; see last_output; last: mlflow {why}"
    assert body["mlflow"]["last_exit_reason"] == why
    # It names the database's host and user: not for callers without the token.
    assert anonymous["reason"] == "mlflow is in a crash loop: 3 starts failed in a row; see last_output"
    assert "last_exit_reason" not in anonymous["mlflow"] and anonymous["mlflow"]["last_exit_code"] == 1


def test_not_ready_without_output_has_no_last_output():
    assert "last_output" not in body_of(health_response(state_in(UpstreamPhase.STARTING)))["mlflow"]


def test_ready_leaves_out_old_output_but_keeps_the_last_exit_code():
    # After a restart the previous crash's output is history, not a reason for alarm.
    state = state_in(UpstreamPhase.READY, last_exit_code=137, restarts=1)
    state.last_error_lines.append("Killed")

    body = body_of(health_response(state))

    assert "last_output" not in body["mlflow"]
    assert body["mlflow"]["last_exit_code"] == 137


def test_uptime_counts_only_while_ready():
    assert body_of(health_response(state_in(UpstreamPhase.RESTARTING)))["mlflow"]["uptime_seconds"] == 0.0


async def test_health_over_http_follows_the_state_as_it_changes(start_front):
    front = start_front(phase=UpstreamPhase.STARTING)
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as http:
        starting = await http.get("/health")
        front.state.mark_ready()
        ready = await http.get("/health")
        front.state.mark(UpstreamPhase.RESTARTING)
        restarting = await http.get("/health")

    assert (starting.status_code, starting.json()["reason"]) == (503, "mlflow is starting")
    assert (ready.status_code, ready.json()["status"]) == (200, "ok")
    assert (restarting.status_code, restarting.json()["reason"]) == (503, "mlflow is restarting")
    assert starting.headers["content-type"] == "application/json"


def test_saturated_connections_answer_503_saying_so():
    from proxy.forwarding.upstream_client import PoolLoad

    busy = health_response(state_in(UpstreamPhase.READY), load=PoolLoad(in_use=512, limit=512, waiting=0))
    assert busy.status_code == 200
    assert body_of(busy)["connections"] == {"in_use": 512, "limit": 512, "waiting": 0}
    saturated = health_response(state_in(UpstreamPhase.READY), load=PoolLoad(in_use=512, limit=512, waiting=7))
    assert saturated.status_code == 503
    body = body_of(saturated)
    assert body["front"] == "saturated"
    assert "512 of 512" in body["reason"] and "7 requests wait" in body["reason"]


async def test_health_reports_a_full_pool_over_http(start_front, fake_mlflow):
    front = start_front()
    front.app.upstream.max_connections = 1
    async with httpx.AsyncClient(base_url=front.url, timeout=10, trust_env=False) as session:
        slow = asyncio.create_task(session.get("/slow"))  # holds the one connection
        while not fake_mlflow.calls:
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(session.get("/api/x"))
        await asyncio.sleep(0.2)
        health = await session.get("/health")
        slow.cancel()
        waiting.cancel()
    assert health.status_code == 503
    assert health.json()["connections"]["waiting"] == 1


def test_start_up_warnings_are_listed_without_changing_the_status():
    from proxy.startup_warnings import StartupWarnings

    warnings = StartupWarnings()
    assert "warnings" not in body_of(health_response(state_in(UpstreamPhase.READY), warnings=warnings))
    assert warnings.add("missing grant: WRITE VOLUME on main.default.mlflow (artifact uploads will be refused)")
    assert not warnings.add("missing grant: WRITE VOLUME on main.default.mlflow (artifact uploads will be refused)")  # once
    ready = health_response(state_in(UpstreamPhase.READY), warnings=warnings)
    assert ready.status_code == 200
    assert body_of(ready)["warnings"] == ["missing grant: WRITE VOLUME on main.default.mlflow (artifact uploads will be refused)"]
    starting = health_response(state_in(UpstreamPhase.STARTING), warnings=warnings)
    assert starting.status_code == 503 and body_of(starting)["warnings"] == list(warnings)
    # Like MLflow's output, they are for callers who may see it (they name the workspace's objects).
    assert "warnings" not in body_of(health_response(state_in(UpstreamPhase.READY), with_output=False, warnings=warnings))


def test_a_replacement_in_progress_keeps_200_and_says_so():
    state = state_in(UpstreamPhase.READY)
    state.replacing = "memory"
    response = health_response(state)
    assert response.status_code == 200
    assert body_of(response)["mlflow"]["replacing"] == "memory"
    state.replacing = None
    assert "replacing" not in body_of(health_response(state))["mlflow"]
