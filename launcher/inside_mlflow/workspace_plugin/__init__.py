"""MLflow's `mlflow.app` plugin for a Databricks workspace's stores, loaded inside the MLflow child.

`plugin.py` (`create_workspace_app`) adapts MLflow's server handlers, then returns MLflow's app:
`experiments.py` gives new experiments `mlflow-artifacts:` locations and places relative names and
experiment 0 in the app's experiment folder, `artifacts.py` serves the
volume and Unity Catalog model files behind one `mlflow-artifacts` path space, `registry.py` adapts
the Unity Catalog registry store to MLflow's handlers (docs/databricks.md). The launcher passes
`--app-name mlflow-app-workspace` only when a store is a workspace's.
"""
