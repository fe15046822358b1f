"""A stand-in for launcher.client.app_token.DatabricksToken: counts sign-ins, or fails as told."""

from __future__ import annotations

from launcher.client.app_token import AppTokenError

FAKE_TOKEN = "fake-databricks-oauth-token"


class FakeToken:
    def __init__(self, error: AppTokenError | None = None):
        self.calls = 0
        self.error = error

    def headers(self) -> dict[str, str]:
        self.calls += 1
        if self.error:
            raise self.error
        return {"Authorization": f"Bearer {FAKE_TOKEN}"}
