"""Code that runs inside the MLflow child process, never in the front.

The supervisor starts these as the child's own programs, or MLflow loads them into its server:
- `serve_mlflow.py`: the child's entry, `python -m launcher.inside_mlflow.serve_mlflow` (what
  `mlflow server` sets up, then MLflow's app under uvicorn in the same process).
- `migrate_database.py`: `python -m launcher.inside_mlflow.migrate_database`, the short child run
  before each start for a PostgreSQL store (connect, migrate the schema under a lock).
- `disconnects.py` and `uvicorn_log_config.yaml`: the child's uvicorn log configuration in every
  mode, which folds a client's aborted upload into one line.
- `workspace_plugin/`: for a Databricks workspace's stores, MLflow's `mlflow.app` plugin (`mlflow
  server --app-name mlflow-app-workspace`), declared by a dist-info the launcher writes at run time.

The front imports from here only names (`STORE_ENV`, the script's variables), never MLflow: every
import of MLflow stays inside functions.
"""
