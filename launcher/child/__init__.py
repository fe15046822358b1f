"""Code that runs inside the MLflow child's server worker, not in the front.

MLflow loads it through its own `mlflow.app` plugin entry point (`mlflow server --app-name
mlflow-app-workspace`), which the launcher passes only when a store is a Databricks workspace's.
Every import of MLflow stays inside functions: the launcher imports this package's names cheaply.
"""
