"""The workspace's refusals as the MLflow user should see them: a 403 that names the missing grant.

When the app's service principal lacks a grant, the workspace answers 403 `PERMISSION_DENIED`
("User does not have WRITE VOLUME on Volume 'main.default.mlflow'."). What reached the client
before (measured against the stand-in):
- from the Files API (the artifacts volume, a model version's files), databricks-sdk raises
  `PermissionDenied`, which MLflow's handlers do not catch: a 500, which the mlflow client retried
  until it gave up ("too many 500 error responses");
- from the registry and tracking stores, MLflow's own 403, whose text carried databricks-sdk's
  dump of its configuration (host, client id, the variables it read).

Here every such refusal becomes MLflow's `PERMISSION_DENIED` (403, which clients do not retry)
whose message starts `missing grant: <PRIVILEGE> on <name>`, then the workspace's sentence without
the dump:
- `GrantNamingRepository` around the server's artifact repository, which also knows the grant
  each call needs (READ VOLUME or WRITE VOLUME on the volume, EXECUTE on a model version's model)
  in case the workspace's text names none (its wording is reported, not documented);
- `name_refusals_of(store)` on the server's tracking and registry store instances;
- `install_refusal_handler(flask_app)` for a `PermissionDenied` raised anywhere else under
  MLflow's Flask handlers (e.g. the registry store moving a version's files).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
from contextlib import contextmanager

from launcher.client.sdk_errors import sdk_reason

log = logging.getLogger("mlflow_app.child")

# "User does not have USE SCHEMA on Schema 'main.default'." (the workspace's text, as users report it)
_DOES_NOT_HAVE = re.compile(r"does not have (?P<privilege>[A-Z][A-Z_ ]*?) (?:privilege )?on (?:[A-Za-z]+ )+?'(?P<name>[^']+)'")
# "User … does not have CAN_MANAGE permission on directory /Shared/x." (folders; the text is unverified)
_FOLDER = re.compile(r"does not have (?P<privilege>CAN_[A-Z]+) permission on (?:directory|folder) (?P<name>/\S*?)\.?(?:\s|$)")
# "User is not an owner of Function 'main.default.iris'." (the stand-in's; the workspace's is unverified)
_NOT_OWNER = re.compile(r"is not an? owner of (?:[A-Za-z]+ )+?'(?P<name>[^']+)'")
PREFIX = "missing grant"
DOCS_HINT = "grant it to the app's service principal (docs/databricks.md, 'Grants the app needs')"
# The artifact repository's calls that write; every other call reads.
WRITING_CALLS = frozenset({"log_artifact", "log_artifacts", "log_artifact_from_stream", "delete_artifacts"})


def missing_grant(text: str) -> str | None:
    """`<PRIVILEGE> on <name>` (or `ownership of <name>`) from a workspace refusal's text; None if it names none."""
    if match := _DOES_NOT_HAVE.search(text):
        return f"{match['privilege'].replace('_', ' ')} on {match['name']}"
    if match := _FOLDER.search(text):
        return f"{match['privilege'].replace('_', ' ')} on folder {match['name']}"
    if match := _NOT_OWNER.search(text):
        return f"ownership of {match['name']}"
    return None


def refusal_message(text: str, needed: str | None = None) -> str:
    """`missing grant: <grant>: the workspace refused … (<its sentence>); <what to do>`."""
    reason = sdk_reason(Exception(text)).removeprefix("PERMISSION_DENIED: ").removeprefix("PERMISSION_DENIED: ")
    grant = missing_grant(reason) or needed
    named = f"{PREFIX}: {grant}" if grant else PREFIX
    return f"{named}: the workspace refused the app's service principal ({reason}); {DOCS_HINT}."


def is_workspace_refusal(exc: BaseException, needed: str | None) -> bool:
    """A workspace 403 not yet turned into our message, that names a grant or whose call knows the
    grant it needs: databricks-sdk's `PermissionDenied`, or MLflow's PERMISSION_DENIED from a
    workspace answer. The app's own refusals (e.g. writing a model version's files) stay as they are."""
    from databricks.sdk.errors import PermissionDenied
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, PermissionDenied):
        return True
    if not isinstance(exc, MlflowException) or exc.error_code != "PERMISSION_DENIED" or str(exc.message).startswith(PREFIX):
        return False
    return missing_grant(str(exc.message)) is not None or (isinstance(exc, RestException) and needed is not None)


@contextmanager
def named_refusals(needed: str | None = None):
    """Turn a workspace refusal raised inside into MLflow's PERMISSION_DENIED naming the grant;
    `needed` (e.g. "WRITE VOLUME on main.default.mlflow") when the workspace's text names none."""
    try:
        yield
    except Exception as exc:
        if not is_workspace_refusal(exc, needed):
            raise
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

        text = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise MlflowException(refusal_message(text, needed), error_code=PERMISSION_DENIED) from None


def name_refusals_of(store) -> None:
    """Make every public method of `store` (the server's tracking or registry store instance) name
    the grant in the workspace's refusals; on that instance only, as the other adaptations."""
    from launcher.inside_mlflow import mlflow_internals

    base = type(store)

    def naming(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            with named_refusals():
                return method(self, *args, **kwargs)

        return call

    # Plain functions only: static and class methods, properties and attributes stay as they are.
    methods = {name: naming(value) for name in dir(base) if not name.startswith("_") and inspect.isfunction(value := inspect.getattr_static(base, name))}
    mlflow_internals.adapt_instance(store, type(f"GrantNaming{base.__name__}", (base,), methods))


def install_refusal_handler(flask_app) -> None:
    """Answer a databricks-sdk `PermissionDenied` that reaches MLflow's Flask app as a 403 in MLflow's
    shape, instead of Flask's 500."""
    from databricks.sdk.errors import PermissionDenied
    from flask import Response

    def answer(exc: PermissionDenied) -> Response:
        message = refusal_message(str(exc))
        log.warning("%s", message)
        return Response(json.dumps({"error_code": "PERMISSION_DENIED", "message": message}), status=403, mimetype="application/json")

    flask_app.register_error_handler(PermissionDenied, answer)


def volume_of(destination: str) -> str | None:
    """`catalog.schema.volume` of a `dbfs:/Volumes/…` (or `/Volumes/…`) destination; None for anything else."""
    parts = destination.removeprefix("dbfs:").strip("/").split("/")
    return ".".join(parts[1:4]) if len(parts) >= 4 and parts[0] == "Volumes" else None


class GrantNamingRepository:
    """The server's artifact repository (artifacts.ProxiedArtifactRouter), whose refusals name the
    grant each call needs: EXECUTE on the model for a model version's files, else READ VOLUME or
    WRITE VOLUME on the volume of the destination."""

    def __init__(self, repository, destination: str):
        self._repository = repository
        self._volume = volume_of(destination)

    def __getattr__(self, name: str):
        attribute = getattr(self._repository, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args, **kwargs):
            with named_refusals(self.needed(name, [*args, *kwargs.values()])):
                return attribute(*args, **kwargs)

        return call

    def needed(self, call: str, arguments: list) -> str | None:
        from launcher.inside_mlflow.workspace_plugin.artifacts import UC_MODELS_PREFIX

        for value in arguments:
            if isinstance(value, str) and value.strip("/").startswith(UC_MODELS_PREFIX + "/"):
                return f"EXECUTE on {value.strip('/')[len(UC_MODELS_PREFIX) + 1 :].split('/')[0]}"
        if self._volume is None:
            return None
        return f"{'WRITE' if call in WRITING_CALLS else 'READ'} VOLUME on {self._volume}"
