"""Redactor: what it masks in free text, and what it leaves alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher import redaction
from launcher.redaction import MASK, SECRET_ENV_VARS, Redactor

TOKEN = "dapi0123456789abcdef0123456789abcdef"


def test_known_secret_values_are_masked_wherever_they_appear():
    redact = Redactor([TOKEN, "s3cr3t-client-secret"])

    text = redact(f"auth with {TOKEN} failed; retrying with s3cr3t-client-secret and {TOKEN}")

    assert TOKEN not in text and "s3cr3t-client-secret" not in text
    assert text == f"auth with {MASK} failed; retrying with {MASK} and {MASK}"


def test_a_secret_containing_another_is_masked_whole():
    # The longer one goes first, so no tail of it survives the shorter one's replacement.
    redact = Redactor(["abcdef", "abcdef-123456"])

    assert redact("key=abcdef-123456!") == f"key={MASK}!"


@pytest.mark.parametrize("short", ["", "a", "12345", "true"])
def test_short_values_are_not_masked(short):
    redact = Redactor([short])

    assert redact.secrets == []
    assert redact("a true 12345 value") == "a true 12345 value"


def test_six_characters_is_long_enough_to_mask():
    assert Redactor(["pa55wd"])("login pa55wd ok") == f"login {MASK} ok"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:p@h/db", f"postgresql://u:{MASK}@h/db"),
        ("postgresql+psycopg2://mlflow:hunter2@db.internal:5432/mlflow", f"postgresql+psycopg2://mlflow:{MASK}@db.internal:5432/mlflow"),
        ("mysql://root:p%40ss@127.0.0.1/x", f"mysql://root:{MASK}@127.0.0.1/x"),
        ("backend store: postgresql://u:p@h/db, artifacts: s3://bucket/x", f"backend store: postgresql://u:{MASK}@h/db, artifacts: s3://bucket/x"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),  # a port is not a password
        ("https://user@example.com/x", "https://user@example.com/x"),  # no password at all
        ("sqlite:///tmp/mlflow.db", "sqlite:///tmp/mlflow.db"),
    ],
)
def test_passwords_inside_uris_are_masked(text, expected):
    assert Redactor()(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Authorization: Bearer {TOKEN}", f"Authorization: Bearer {MASK}"),
        ("authorization: bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", f"authorization: bearer {MASK}"),
        ("BEARER abc/def+ghi=", f"BEARER {MASK}"),
    ],
)
def test_bearer_tokens_are_masked(text, expected):
    assert Redactor()(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /x?token=abc123&run_id=7", f"GET /x?token={MASK}&run_id=7"),
        ("GET /x?run_id=7&access_token=abc123", f"GET /x?run_id=7&access_token={MASK}"),
        ("client_secret=xyz789 scope=all", f"client_secret={MASK} scope=all"),
        ("https://b.s3.amazonaws.com/k?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA/x", f"https://b.s3.amazonaws.com/k?X-Amz-Signature={MASK}&X-Amz-Credential={MASK}"),
        ("SECRET=shh", f"SECRET={MASK}"),
        ("password=hunter2", f"password={MASK}"),
        ("run_id=7&experiment_id=1", "run_id=7&experiment_id=1"),
    ],
)
def test_secret_query_parameters_are_masked(text, expected):
    assert Redactor()(text) == expected


def test_ordinary_text_is_left_alone():
    line = "INFO mlflow.server: started on http://127.0.0.1:5000 with 1 worker"
    assert Redactor([TOKEN])(line) == line


def test_from_environment_masks_the_values_of_secret_variables():
    environ = {
        "DATABRICKS_TOKEN": TOKEN,
        "DATABRICKS_CLIENT_SECRET": "dose0123456789abcdef",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCY",
        "DATABRICKS_HOST": "https://adb-123.azuredatabricks.net",  # not a secret
        "PGPASSWORD": "",  # set but empty: nothing to mask
    }

    redact = Redactor.from_environment(environ)

    text = redact(" ".join(environ.values()))
    assert TOKEN not in text
    assert "dose0123456789abcdef" not in text
    assert "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" not in text
    assert "https://adb-123.azuredatabricks.net" in text
    assert sorted(redact.secrets) == sorted([TOKEN, "dose0123456789abcdef", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"])


def test_from_environment_reads_the_process_environment_by_default(monkeypatch):
    for name in SECRET_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tracking-token-value")

    assert Redactor.from_environment()("sent tracking-token-value") == f"sent {MASK}"


def test_from_environment_with_no_secrets_masks_only_patterns():
    redact = Redactor.from_environment({"HOME": "/home/mlflow-user"})

    assert redact.secrets == []
    assert redact("home is /home/mlflow-user") == "home is /home/mlflow-user"


@pytest.mark.parametrize(
    ("text", "password"),
    [("postgresql://u:ab/cd@h/db", "ab/cd"), ("postgresql://u:p@ss@h/db", "p@ss"), ("mysql://u:x?y#z@h/db", "x?y#z")],
)
def test_unencoded_special_characters_in_uri_passwords_stay_masked(text, password):
    masked = Redactor()(text)
    assert password not in masked and masked.endswith("***@h/db")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '127.0.0.1:0 - "GET /api/2.0/mlflow/experiments/get?experiment_id=12&ref=eyJhbGciOi HTTP/1.1" 200 OK',
            f'127.0.0.1:0 - "GET /api/2.0/mlflow/experiments/get?experiment_id={MASK}&ref={MASK} HTTP/1.1" 200 OK',
        ),
        ('"POST /x?opaque-value HTTP/1.1" 400', f'"POST /x?{MASK} HTTP/1.1" 400'),
        ('"GET /x?a=1&&b= HTTP/1.0"', f'"GET /x?a={MASK}&&b={MASK} HTTP/1.0"'),
        ('"GET /api/2.0/mlflow/experiments/search HTTP/1.1" 200', '"GET /api/2.0/mlflow/experiments/search HTTP/1.1" 200'),
        ("see /docs?page=2 for more", "see /docs?page=2 for more"),  # not a request line
    ],
)
def test_query_values_in_request_lines_are_masked(text, expected):
    # MLflow's access log prints the whole target; a query can carry anything a client put there.
    assert Redactor()(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        '"GET /x?x=' + "a" * 100_000 + ' HTTP/1.1"',  # one long word: no scheme may start inside it
        "sig" * 33_000,  # a secret-parameter keyword at every position
        "a://b:" * 17_000,  # a URI start at every position, no "@" anywhere
        "a." * 50_000,
        "bearer " * 15_000,
        "a://b:" + "@" * 100_000,
    ],
    ids=["word", "keywords", "uri-starts", "dots", "bearers", "ats"],
)
def test_masking_is_linear_in_the_length_of_the_line(text):
    # Lines are masked on the front's event loop and clients choose their text (a 64 KiB query
    # string reaches MLflow's access line): a quadratic pattern here stalled every request for 20 s.
    import time

    started = time.perf_counter()
    Redactor(["dapiSECRETdb5e8c1a7f93d20b46"])(text)
    assert time.perf_counter() - started < 1.0


def test_bounded_patterns_still_mask_long_real_values():
    password = "p@ss/w0rd:" * 20  # 200 characters with unencoded "@", "/" and ":"
    assert Redactor()(f"postgresql://mlflow:{password}@db.internal:5432/mlflow") == f"postgresql://mlflow:{MASK}@db.internal:5432/mlflow"
    assert Redactor()("x?" + "token_" + "x" * 60 + "=abc") == "x?token_" + "x" * 60 + f"={MASK}"


def redact_without_shortcuts(redactor: Redactor, text: str) -> str:
    """What the redactor did before it skipped patterns whose literal is absent: every pattern, always."""
    for secret in redactor.secrets:
        text = text.replace(secret, MASK)
    text = redaction._URI_PASSWORD.sub(rf"\g<head>{MASK}\g<at>", text)
    text = redaction._BEARER.sub(rf"\g<1>{MASK}", text)
    text = redaction._REQUEST_LINE_QUERY.sub(redaction._mask_query_values, text)
    return redaction._SECRET_PARAM.sub(rf"\g<1>{MASK}", text)


PIECES = st.sampled_from(
    [
        "GET /a?b=1 HTTP/1.1",
        "Bearer ",
        "BEARER\t",
        "token=",
        "ſecret=",
        "SIGNATURE=",
        "Credential-x=",
        "postgresql://u:",
        "pw@host",
        "://",
        "@",
        "?",
        "=",
        "&",
        " ",
        "x",
        "K",
        "İ",
        "\n",
        '"',
    ],
)


@given(st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=12).map("".join))
def test_skipping_absent_patterns_masks_exactly_what_running_them_all_masks(text):
    redactor = Redactor(["s3cr3t-value"])
    assert redactor(text) == redact_without_shortcuts(redactor, text)
