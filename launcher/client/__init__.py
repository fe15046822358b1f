"""Code that runs inside users' mlflow clients and in `mlflow-app call`, never only on the server.

- `request_header_provider.py`: the `mlflow.request_header_provider` plugin MLflow loads in every
  client process with our package installed: a Databricks OAuth token on calls to a deployed app.
- `app_token.py`: that token, and the rule for which URLs may get it (an app of the credentials'
  workspace, or a listed prefix).
- `auth_types.py`: which databricks-sdk sign-ins give a token the Apps edge accepts.
- `call.py`: `mlflow-app call`, one authenticated request to a deployed app.
- `deadline.py`, `sdk_errors.py`: a blocking call bounded in time, and databricks-sdk's messages on
  one line; the server's start-up sign-in (launcher/databricks/sign_in.py) uses them too.

These modules import only the standard library (and mlflow, where MLflow is what loads them) at the
top, and nothing of the server's: no launcher.server, settings or supervisor, no proxy.
"""
