"""Which databricks-sdk sign-ins give a token the Databricks Apps edge accepts, and what to say for the others.

The edge takes Databricks OAuth tokens only: not a personal access token, not an Entra ID token
(doc). databricks-sdk names the way it signed in (`Config.auth_type`). In 0.156, `Config.oauth_token()`
returns a token for every auth type whose provider is an `OAuthCredentialsProvider` and raises
ValueError for the rest; but that includes Entra ID tokens (azure-client-secret, github-oidc-azure)
and Google ones (google-credentials, google-id), which the edge refuses, and excludes
external-browser, whose token is a Databricks one. So the auth type decides first.
"""

from __future__ import annotations

# Auth types whose token is issued by the workspace's own OAuth server (databricks-sdk 0.156 names).
DATABRICKS_OAUTH = frozenset({"oauth-m2m", "databricks-cli", "external-browser", "env-oidc", "file-oidc", "github-oidc", "azure-devops-oidc", "runtime-oauth"})
# Auth types whose credential the edge refuses, and what that credential is, for the message.
NOT_ACCEPTED = {
    "pat": "a personal access token (DATABRICKS_TOKEN, or `token` in the profile)",
    "basic": "a user name and password",
    "azure-cli": "an Entra ID token (the Azure CLI's sign-in)",
    "azure-client-secret": "an Entra ID token (an Azure service principal's client secret)",
    "github-oidc-azure": "an Entra ID token (GitHub OIDC through Azure)",
    "google-credentials": "a Google token",
    "google-id": "a Google ID token",
    "metadata-service": "a token from a metadata service",
    "runtime": "a notebook's own token",
    "model-serving": "a model serving endpoint's token",
}
# databricks-sdk 0.156's ValueError from oauth_token() for an auth type without OAuth tokens.
NO_OAUTH_TOKEN_MARKER = "OAuth tokens are not available"


def refusal(auth_type: str | None, host: str | None, azure_client_id: str | None = None) -> str | None:
    """None when `auth_type` gives a Databricks OAuth token (or is unknown: oauth_token() decides);
    else one line saying what the credentials give and how to get an accepted one."""
    if auth_type == "external-browser" and azure_client_id:
        return not_accepted(auth_type, host, "an Entra ID token (external-browser with an Azure client ID)")
    if auth_type in NOT_ACCEPTED:
        return not_accepted(auth_type, host, NOT_ACCEPTED[auth_type])
    return None


def not_accepted(auth_type: str | None, host: str | None, what: str) -> str:
    return (
        f"the app accepts Databricks OAuth tokens only, and these Databricks credentials give {what} (auth type {auth_type}): "
        f"run `databricks auth login --host {host or '<workspace-url>'} --profile <name>` and set DATABRICKS_CONFIG_PROFILE=<name>, "
        "or use a service principal's DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET."
    )
