"""`mlflow-app call`: one authenticated request to a deployed app, as people do with curl.

The Databricks token (launcher/client/app_token.py) goes only where the mlflow client plugin would send it:
the apps of the workspace the credentials are for (https://<app>-<workspace id>.<region>.databricksapps.com)
and the prefixes in MLFLOW_APP_DATABRICKS_TOKEN_URLS. Other URLs are called without it, and stderr
says so. The token is never printed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from launcher.client.app_token import TOKEN_URLS_ENV, AppTokenError, DatabricksToken, OtherWorkspace, TokenTargets, origin

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Methods whose JSON goes in the query string, as the mlflow client sends its GET calls.
QUERY_METHODS = frozenset({"GET", "HEAD"})


class CallError(Exception):
    """The request could not be made or answered; the message is one line."""


@dataclass(frozen=True)
class Call:
    url: str
    method: str
    body: object = None  # parsed JSON, or None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def params(self) -> list[tuple[str, str]] | None:
        return query_params(self.body) if self.method in QUERY_METHODS and self.body is not None else None

    @property
    def content(self) -> bytes | None:
        if self.body is None or self.method in QUERY_METHODS:
            return None
        return json.dumps(self.body).encode()


def build_call(url: str, method: str | None, body: str | None, app_url: str | None, header_lines: tuple[str, ...] = ()) -> Call:
    """The request the command line asks for; raises CallError for anything that cannot be sent."""
    if method and body is None and method.upper() not in METHODS and looks_like_json(method):
        method, body = None, method  # `call URL '{"a": 1}'`: JSON in METHOD's place
    if method and method.upper() not in METHODS:
        raise CallError(f"METHOD: '{method}' is not one of {', '.join(METHODS)}.")
    parsed = read_json(body) if body is not None else None
    method = method.upper() if method else ("POST" if parsed is not None else "GET")
    headers = parse_headers(header_lines)
    if parsed is not None and method not in QUERY_METHODS:
        headers.setdefault("Content-Type", "application/json")
    return Call(absolute_url(url, app_url), method, parsed, headers)


def absolute_url(url: str, app_url: str | None) -> str:
    if url.startswith(("http://", "https://")):
        return url
    if "://" in url:
        raise CallError(f"URL: '{url}' is neither an http(s) URL nor a path such as /api/2.0/mlflow/experiments/search.")
    if not app_url:
        raise CallError(f"URL: '{url}' is a path; give the app's URL with --app-url (or MLFLOW_TRACKING_URI), or a full https:// URL.")
    if not app_url.startswith(("http://", "https://")) or not urlsplit(app_url).hostname:
        raise CallError(f"--app-url: '{app_url}' is not an http(s) URL; give the app's URL, e.g. https://<app>.databricksapps.com.")
    return app_url.rstrip("/") + "/" + url.lstrip("/")


def looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[", "@")


def read_json(text: str) -> object:
    """JSON from the argument itself, or from @file (@- for stdin)."""
    source = "JSON"
    if text.startswith("@"):
        name = text[1:]
        source = "stdin" if name == "-" else name
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except OSError as exc:
            raise CallError(f"JSON: cannot read {name} ({exc.strerror or exc}).") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CallError(f"JSON: {source} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).") from None


def query_params(body: object) -> list[tuple[str, str]]:
    """A flat JSON object as query parameters (lists repeat the name), as MLflow's REST API reads GET calls."""
    if not isinstance(body, dict):
        raise CallError("JSON: with GET, give a JSON object; its fields become query parameters.")
    params = []
    for name, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (dict, list)):
                raise CallError(f"JSON: '{name}' holds an object; with GET, fields must be strings, numbers or lists of them. Use POST.")
            params.append((name, json.dumps(item) if isinstance(item, bool) or item is None else str(item)))
    return params


def parse_headers(lines: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise CallError(f"--header: '{line}' is not 'Name: value'.")
        headers[name.strip()] = value.strip()
    return headers


def authorize(call: Call, token: DatabricksToken, targets: TokenTargets) -> tuple[Call, str | None]:
    """The call with the Databricks token added where it may go; and a note for stderr when it is not."""
    if any(name.lower() == "authorization" for name in call.headers):
        return call, None
    destination = targets.destination(call.url)
    if destination is None:
        note = f"no Databricks token sent: {origin(call.url)} is not a Databricks Apps URL (https://<app>-<workspace id>.<region>.databricksapps.com) and not under {TOKEN_URLS_ENV}."
        return call, note
    try:
        headers = token.headers(destination.workspace_id)
    except OtherWorkspace as exc:
        return call, f"no Databricks token sent to {origin(call.url)}: {exc}; list its URL in {TOKEN_URLS_ENV} to send one anyway."
    except AppTokenError as exc:
        raise CallError(str(exc)) from None
    return Call(call.url, call.method, call.body, {**call.headers, **headers}), None


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    content_type: str
    body: bytes
    location: str | None

    @property
    def ok(self) -> bool:
        return self.status < 400

    def status_line(self) -> str:
        line = f"HTTP {self.status} {self.reason}".rstrip()
        return f"{line} -> {self.location}" if self.location else line

    def printable_body(self) -> bytes:
        """Pretty JSON when the answer is JSON, the bytes as they came otherwise."""
        if "json" in self.content_type.lower() and self.body:
            try:
                return (json.dumps(json.loads(self.body), indent=2, ensure_ascii=False) + "\n").encode()
            except ValueError:
                pass
        return self.body


def send(call: Call, timeout: float) -> Answer:
    import httpx  # not at the top: `mlflow-app --help` stays fast

    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.request(call.method, call.url, params=call.params, content=call.content, headers=call.headers)
    except httpx.TimeoutException:
        raise CallError(f"{origin(call.url)} did not answer within {timeout:g} s (--timeout).") from None
    except httpx.HTTPError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CallError(f"cannot reach {origin(call.url)} ({reason}).") from None
    return Answer(response.status_code, response.reason_phrase, response.headers.get("content-type", ""), response.content, response.headers.get("location"))
