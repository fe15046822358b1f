"""A stand-in for launcher.client.app_token.DatabricksToken: counts sign-ins, or fails as told."""

from __future__ import annotations

from launcher.client.app_token import AppTokenError

FAKE_TOKEN = "fake-databricks-oauth-token"


class FakeToken:
    def __init__(self, error: AppTokenError | None = None):
        self.calls = 0
        self.workspace_ids: list[str | None] = []  # the app's workspace each call pinned to
        self.error = error

    def headers(self, workspace_id: str | None = None) -> dict[str, str]:
        self.calls += 1
        self.workspace_ids.append(workspace_id)
        if self.error:
            raise self.error
        return {"Authorization": f"Bearer {FAKE_TOKEN}"}
