"""Databricks mode, on the server's side (docs/databricks.md).

- `defaults.py`: the settings' defaults on Databricks Apps (the workspace's stores, JSON logs).
- `sign_in.py`: the start-up check of the workspace and its credentials, before MLflow starts.
- `child_environment.py`: what the MLflow child needs to use a workspace's stores (its retry and
  timeout settings, a databricks-sdk profile, the declaration of our `mlflow.app` plugin).

The code that runs inside the MLflow child is in launcher/inside_mlflow/workspace_plugin/; the
code that runs inside users' mlflow clients is in launcher/client/.
"""
