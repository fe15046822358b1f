"""Getting mlflow-app onto Databricks Apps: `app.yaml`, `requirements.txt`, UI assets for MLflow builds
that lack them, the staged upload and its checks, and upload and deployment through databricks-sdk."""


class DeployError(Exception):
    """A deployment step that cannot go on; the message is one line that says what to do next."""
