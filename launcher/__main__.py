"""`python -m launcher`: the `mlflow-app` command without the console script, as Databricks Apps runs
it from the uploaded source folder (where our packages are not pip-installed)."""

from launcher.cli import main

main(prog_name="mlflow-app")
