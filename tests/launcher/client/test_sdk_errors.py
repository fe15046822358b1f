"""databricks-sdk's messages on one line, as the client's token and the server's sign-in check report them."""

from __future__ import annotations

from launcher.client.sdk_errors import sdk_reason


def test_sdk_reason_drops_databricks_sdks_config_dump():
    error = ValueError("default auth: cannot configure default credentials. Config: host=https://x, client_id=y. Env: DATABRICKS_HOST")
    assert sdk_reason(error) == "default auth: cannot configure default credentials"
    assert sdk_reason(ValueError("two\nlines ")) == "two lines"
