"""databricks.yml stays in step with app.yaml and with what `mlflow-app deploy` creates: the same folder,
the resources app.yaml reads, the same volume grant; users get CAN_USE, and the compute size is one the
platform offers. The app resource is checked against the bundle schema as databricks-bundles (the
Python form of the Databricks CLI's bundle schema) states it, when installed; no Databricks CLI runs."""

from __future__ import annotations

import re

import pytest
import yaml
from databricks.sdk.service.apps import ComputeSize

from deploy.render import databricks_app_config, render_app_yaml
from deploy.staging import STAGE_MARKER
from deploy.target import check_app_name
from deploy.workspace import DESCRIPTION, volume_resource
from launcher.cli import STAGE_DIR, deploy_command
from tests.deploy.conftest import REPO

BUNDLE = yaml.safe_load((REPO / "databricks.yml").read_text(encoding="utf-8"))
((APP_KEY, APP),) = BUNDLE["resources"]["apps"].items()


def test_the_app_runs_the_folder_stage_builds():
    assert APP["source_code_path"] == f"./{STAGE_DIR.as_posix()}"
    assert f"{STAGE_DIR.as_posix()}/**" in BUNDLE["sync"]["include"]


def test_app_yaml_is_the_one_source_of_command_and_env():
    """A `config` here would be written as app.yml beside our app.yaml: two files that could disagree."""
    assert "config" not in APP
    assert STAGE_MARKER == "app.yaml"


@pytest.mark.parametrize("ui_in_source", [False, True])
def test_every_value_from_in_app_yaml_is_a_resource_of_the_app(ui_in_source):
    env = yaml.safe_load(render_app_yaml(databricks_app_config(ui_in_source=ui_in_source)))["env"]
    wanted = {item["valueFrom"] for item in env if "valueFrom" in item}
    assert wanted and wanted <= {resource["name"] for resource in APP["resources"]}


def test_the_volume_is_granted_as_deploy_grants_it():
    (bundled,) = APP["resources"]
    ours = volume_resource("${var.artifact_volume}").as_dict()
    assert bundled == ours
    assert BUNDLE["variables"]["artifact_volume"]["description"]
    assert "default" not in BUNDLE["variables"]["artifact_volume"]  # each workspace names its own


def test_name_and_description():
    assert APP["name"] == "${var.app_name}"
    assert check_app_name(BUNDLE["variables"]["app_name"]["default"])
    assert APP["description"] == DESCRIPTION
    assert APP_KEY == "mlflow_app"


def test_secret_files_are_kept_out_of_the_sync():
    assert {"**/.env", "**/.env.*", "**/.databrickscfg"} <= set(BUNDLE["sync"]["exclude"])


def with_defaults(value):
    """`value` with every ${var.x} replaced by the variable's default, as the CLI would without --var."""
    if isinstance(value, dict):
        return {k: with_defaults(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_defaults(v) for v in value]
    if isinstance(value, str) and (found := re.fullmatch(r"\$\{var\.(\w+)\}", value)):
        return BUNDLE["variables"][found[1]].get("default", value)
    return value


def test_users_of_a_group_may_use_the_app():
    assert APP["permissions"] == [{"level": "CAN_USE", "group_name": "${var.app_users_group}"}]
    assert BUNDLE["variables"]["app_users_group"]["default"] == "users"  # every user of the workspace, until narrowed


def test_the_compute_size_is_one_the_platform_and_mlflow_app_deploy_offer():
    assert APP["compute_size"] == "${var.compute_size}"
    default = BUNDLE["variables"]["compute_size"]["default"]
    offered = next(p for p in deploy_command.params if p.name == "compute_size").type.choices
    assert default in offered and set(offered) <= {size.value for size in ComputeSize}


def test_the_app_resource_is_what_the_bundle_schema_allows():
    """Unknown fields, permission levels and compute sizes are refused here as `databricks bundle validate` would."""
    import databricks.bundles.apps as bundles  # the dev group carries databricks-bundles

    assert bundles.App.from_dict(APP).permissions[0].level == bundles.AppPermissionLevel.CAN_USE
    assert bundles.App.from_dict(with_defaults(APP)).compute_size == bundles.ComputeSize.MEDIUM
    with pytest.raises(ValueError, match="Unexpected field"):
        bundles.App.from_dict({**APP, "compute": "LARGE"})  # the check can fail
