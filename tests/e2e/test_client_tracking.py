"""The real mlflow client against the app: experiments and runs, as against a plain `mlflow server`."""

from __future__ import annotations

import time
import uuid

import pytest
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

pytestmark = pytest.mark.e2e


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_experiment_lifecycle(tracking):
    name = f"/Users/someone@example.com/{unique('exp')}"  # path-like names, as on Databricks
    experiment_id = tracking.create_experiment(name, tags={"team": "ml"})

    experiment = tracking.get_experiment_by_name(name)
    assert experiment.experiment_id == experiment_id
    assert experiment.tags["team"] == "ml"

    tracking.set_experiment_tag(experiment_id, "stage", "dev")
    renamed = name + "-renamed"
    tracking.rename_experiment(experiment_id, renamed)
    found = tracking.search_experiments(filter_string=f"name = '{renamed}'")
    assert [e.experiment_id for e in found] == [experiment_id]
    assert found[0].tags["stage"] == "dev"

    tracking.delete_experiment(experiment_id)
    assert tracking.get_experiment(experiment_id).lifecycle_stage == "deleted"
    active = tracking.search_experiments(view_type=ViewType.ACTIVE_ONLY, filter_string=f"name = '{renamed}'")
    assert active == []
    tracking.restore_experiment(experiment_id)
    assert tracking.get_experiment(experiment_id).lifecycle_stage == "active"


def test_duplicate_experiment_is_mlflows_own_error(tracking):
    name = unique("dup")
    tracking.create_experiment(name)
    with pytest.raises(MlflowException) as raised:
        tracking.create_experiment(name)
    assert raised.value.error_code == "RESOURCE_ALREADY_EXISTS"


def test_runs_params_metrics_tags_and_nesting(tracking):
    import mlflow

    experiment_id = tracking.create_experiment(unique("runs"))
    mlflow.set_experiment(experiment_id=experiment_id)  # nested runs follow the active experiment
    with mlflow.start_run(run_name="parent") as parent:
        mlflow.log_params({"lr": "0.1", "depth": "3"})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.set_tag("kind", "parent")
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("loss", 0.05, step=0)

    parent_run = tracking.get_run(parent.info.run_id)
    assert parent_run.data.params == {"lr": "0.1", "depth": "3"}
    assert parent_run.data.metrics["loss"] == pytest.approx(0.2)
    assert parent_run.data.tags["kind"] == "parent"
    assert parent_run.info.status == "FINISHED"

    history = tracking.get_metric_history(parent.info.run_id, "loss")
    assert [(m.step, round(m.value, 4)) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 1.0), (1, 0.5), (2, 0.3333), (3, 0.25), (4, 0.2)
    ]  # fmt: skip

    children = tracking.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [r.info.run_id for r in children] == [child.info.run_id]


def test_log_batch_and_search_with_filters_and_ordering(tracking):
    experiment_id = tracking.create_experiment(unique("search"))
    now = int(time.time() * 1000)
    run_ids = []
    for i, accuracy in enumerate([0.7, 0.9, 0.8]):
        run = tracking.create_run(experiment_id, run_name=f"r{i}")
        tracking.log_batch(
            run.info.run_id,
            metrics=[Metric("accuracy", accuracy, now, 0)] + [Metric("curve", i * s, now, s) for s in range(100)],
            params=[Param("i", str(i)), Param("model", "tree" if i != 1 else "linear")],
            tags=[RunTag("batch", "yes")],
        )
        tracking.set_terminated(run.info.run_id)
        run_ids.append(run.info.run_id)

    best_first = tracking.search_runs([experiment_id], order_by=["metrics.accuracy DESC"])
    assert [r.info.run_id for r in best_first] == [run_ids[1], run_ids[2], run_ids[0]]

    trees = tracking.search_runs([experiment_id], filter_string="params.model = 'tree' and metrics.accuracy > 0.75")
    assert [r.info.run_id for r in trees] == [run_ids[2]]
    assert len(tracking.get_metric_history(run_ids[2], "curve")) == 100

    page = tracking.search_runs([experiment_id], max_results=2, order_by=["params.i ASC"])
    rest = tracking.search_runs([experiment_id], max_results=2, order_by=["params.i ASC"], page_token=page.token)
    assert [r.data.params["i"] for r in [*page, *rest]] == ["0", "1", "2"]


def test_deleted_run_is_hidden_then_restored(tracking):
    experiment_id = tracking.create_experiment(unique("delrun"))
    run = tracking.create_run(experiment_id)
    tracking.delete_run(run.info.run_id)
    assert tracking.search_runs([experiment_id]) == []
    tracking.restore_run(run.info.run_id)
    assert [r.info.run_id for r in tracking.search_runs([experiment_id])] == [run.info.run_id]
