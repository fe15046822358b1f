"""`/metrics` route labels of the real app come from MLflow's route table, never from request paths."""

from __future__ import annotations

import random
import string
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

OTHER = "{other}"
JUNK_PATHS = 300  # more than the 300-label cap the front used to have
REAL_ENDPOINT = "/api/2.0/mlflow/experiments/search"


def route_labels(metrics_text: str) -> set[str]:
    return {sample.labels["route"] for family in text_string_to_metric_families(metrics_text) for sample in family.samples if "route" in sample.labels}


def requests_counted(metrics_text: str, route: str, status: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "mlflow_app_requests_total" and sample.labels == {"method": "GET", "route": route, "status": status}:
                return sample.value
    return 0


def scrape(client: httpx.Client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.text


def scrape_once_counted(client: httpx.Client, counted_before: float) -> str:
    """`/metrics` once the real endpoint's request is in it: a request is counted after its last byte."""
    deadline = time.monotonic() + 5
    while True:
        text = scrape(client)
        if requests_counted(text, REAL_ENDPOINT, "200") > counted_before or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_paths_chosen_by_clients_never_become_route_labels(app):
    rng = random.Random()
    # Letters only, and not hex: a word the front's old guessing took for an endpoint name.
    secret = "secret" + "".join(rng.choices(string.ascii_lowercase, k=16))
    with httpx.Client(base_url=app.url, timeout=30) as client:
        text = scrape(client)
        before, counted_before = route_labels(text), requests_counted(text, REAL_ENDPOINT, "200")

        assert client.get(f"/api/2.0/mlflow/{secret}/x").status_code == 404
        for n in range(JUNK_PATHS):
            word = "".join(rng.choices(string.ascii_lowercase, k=10))
            junk = f"/api/2.0/mlflow/junk{word}/x" if n % 2 else f"/ajax-api/3.0/mlflow/{word}/get"  # API-shaped
            assert client.get(junk).status_code == 404, junk
        assert client.get(REAL_ENDPOINT, params={"max_results": 1}).status_code == 200

        text = scrape_once_counted(client, counted_before)

    assert secret not in text
    new_labels = route_labels(text) - before
    assert new_labels <= {OTHER, REAL_ENDPOINT, "/metrics"}, sorted(new_labels)[:10]  # /metrics: our scrapes
    assert requests_counted(text, REAL_ENDPOINT, "200") == counted_before + 1
    assert requests_counted(text, OTHER, "404") >= JUNK_PATHS + 1
