"""Keeps secrets out of anything the server prints or answers: log lines, `/health`, error bodies."""

from __future__ import annotations

import configparser
import os
import re
from pathlib import Path

# Environment variables whose values are credentials wherever they appear.
SECRET_ENV_VARS = (
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_SECRET",
    "DATABRICKS_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_APP_AUTH_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",  # the session token's older name, which boto3 still reads
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",  # ECS tasks and EKS Pod Identity: the credential endpoint's token
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
    "PGPASSWORD",
)
# Keys of the AWS shared credentials and config files whose values are credentials: boto3 reads
# them there when the environment holds none (the AWS credential chain, e.g. a mounted Secret).
AWS_FILE_SECRET_KEYS = ("aws_secret_access_key", "aws_session_token", "aws_security_token")
MASK = "***"
# Every pattern runs on each log line on the event loop, and clients choose much of that text (a
# 64 KiB query string): each is linear in the line's length. Hence a scheme only where a word
# starts, and bounded runs wherever a failed match would otherwise rescan the rest of the line.
# The password runs to the last "@" before any whitespace: unencoded "/" or "@" in it stay masked.
_URI_PASSWORD = re.compile(r"(?P<head>(?<![\w+.-])[a-zA-Z][\w+.-]{0,31}://[^:/?#@\s]{1,256}:)[^\s]{1,256}(?P<at>@)")
_BEARER = re.compile(r"(?i)(bearer\s+)[\w\-.~+/=]+")
_SECRET_PARAM_WORD = re.compile("token|secret|password|sig|credential")  # "sig" covers "signature"
_SECRET_PARAM = re.compile(r"(?i)((?:token|secret|password|sig|signature|credential)[\w-]{0,64}=)[^&\s\"']+")
# A request line as access logs print it (MLflow's uvicorn does): "GET /path?query HTTP/1.1".
_REQUEST_LINE_QUERY = re.compile(r"(?P<target>\b[A-Z]{3,10} /[^\s?\"]*)\?(?P<query>[^\s\"]*)(?= HTTP/\d)")


def _mask_query_values(match: re.Match) -> str:
    """Query values can carry anything a client chose to put there; the names are kept for debugging."""
    items = (name + f"={MASK}" if sep else MASK if name else "" for name, sep, _ in (i.partition("=") for i in match["query"].split("&")))
    return f"{match['target']}?{'&'.join(items)}"


def aws_file_secrets(environ: dict[str, str]) -> list[str]:
    """The secret values in the AWS shared credentials and config files boto3 would read (where
    AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE say, else ~/.aws/); none if absent or unreadable."""
    home = environ.get("HOME")
    defaults = (f"{home}/.aws/credentials", f"{home}/.aws/config") if home else (None, None)
    paths = (environ.get("AWS_SHARED_CREDENTIALS_FILE") or defaults[0], environ.get("AWS_CONFIG_FILE") or defaults[1])
    found = []
    for path in filter(None, paths):
        parser = configparser.RawConfigParser()
        try:
            parser.read(Path(path).expanduser(), encoding="utf-8")
        except (OSError, UnicodeDecodeError, configparser.Error):
            continue  # boto3 reports a broken file itself; masking stays on the other sources
        found += [value for section in parser.sections() for key in AWS_FILE_SECRET_KEYS if (value := parser.get(section, key, fallback=""))]
    return found


class Redactor:
    """Masks known secret values, passwords inside URIs, bearer tokens and request-line query values."""

    def __init__(self, secrets: list[str] | None = None):
        # Short values would mask ordinary words; real credentials are long.
        self.secrets = sorted({s for s in (secrets or []) if len(s) >= 6}, key=len, reverse=True)

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None, also: tuple[str | None, ...] = ()) -> Redactor:
        """Masks the values of SECRET_ENV_VARS, plus `also` (secrets given as flags, not variables)."""
        environ = os.environ if environ is None else environ
        from_files = aws_file_secrets(environ)
        return cls([*(environ[name] for name in SECRET_ENV_VARS if environ.get(name)), *from_files, *(s for s in also if s)])

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        # Each pattern needs a literal that a substring test finds far faster than the regex scans
        # (this runs for every request's log line); casefold, as re's IGNORECASE matches "ſ" as "s".
        if "@" in text and "://" in text:
            text = _URI_PASSWORD.sub(rf"\g<head>{MASK}\g<at>", text)
        folded = text.casefold()
        if "bearer" in folded:
            text = _BEARER.sub(rf"\g<1>{MASK}", text)
        if "?" in text:
            text = _REQUEST_LINE_QUERY.sub(_mask_query_values, text)
        if "=" in text and _SECRET_PARAM_WORD.search(folded):
            text = _SECRET_PARAM.sub(rf"\g<1>{MASK}", text)
        return text
