"""The installed MLflow package, found without importing it (an import costs seconds and hundreds of MB).

The one place that looks it up, for the front (the UI build it serves), the MLflow child (the schema
head in the migration files; the version `serve_mlflow` mirrors) and `deploy` (the UI build to
upload). Standard library only, so that any of them may import it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

DISTRIBUTIONS = ("mlflow", "mlflow-skinny")  # whichever provides the `mlflow` package


def mlflow_package_dir() -> Path | None:
    """The folder of the installed `mlflow` package; None when it is not installed."""
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def mlflow_version() -> str | None:
    """The installed MLflow's version (of `mlflow`, else `mlflow-skinny`); None when neither is installed."""
    for distribution in DISTRIBUTIONS:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
