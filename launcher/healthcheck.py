"""`python -m launcher.healthcheck`: the container's HEALTHCHECK. Exit 0 when `/health` answers 200.

It asks the server in this container, at the address and port `serve` reads from the environment
(MLFLOW_HOST, MLFLOW_PORT), and prints one line: `healthy`, or why not.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 4.0


def health_url(environ: dict[str, str]) -> str:
    """`/health` of the server configured by `environ`; a wildcard address is reached on loopback."""
    host = environ.get("MLFLOW_HOST", "").strip() or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = environ.get("MLFLOW_PORT") or environ.get("DATABRICKS_APP_PORT") or "8000"
    return f"http://{host}:{port}/health"


def check(url: str) -> tuple[bool, str]:
    """(healthy, one line saying so or why not)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS) as response:
            return response.status == 200, "healthy"
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("reason", "")
        except ValueError:
            reason = ""
        return False, f"unhealthy: {url} answered {exc.code}" + (f" ({reason})" if reason else "")
    except (OSError, ValueError) as exc:
        return False, f"unhealthy: cannot reach {url} ({getattr(exc, 'reason', None) or exc})"


def main() -> int:
    healthy, line = check(health_url(dict(os.environ)))
    print(line, flush=True)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
