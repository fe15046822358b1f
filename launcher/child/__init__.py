"""Code that runs inside the MLflow child's server worker, not in the front.

- The workspace plugin (app.py, artifacts.py, experiments.py, registry.py): MLflow loads it
  through its own `mlflow.app` plugin entry point (`mlflow server --app-name
  mlflow-app-workspace`), which the launcher passes only when a store is a Databricks workspace's.
- `disconnects.py` and `uvicorn_log_config.yaml`: the child's uvicorn log configuration in every
  mode, which folds a client's aborted upload into one line.

Every import of MLflow stays inside functions: the launcher imports this package's names cheaply.
"""
