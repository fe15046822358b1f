"""One `wrk` run: a fixed request at a fixed concurrency for a fixed time, summarised as JSON."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# wrk's done() hook writes its summary where we can parse it (its text output rounds too much).
LUA = """
wrk.method = {method}
{body}
wrk.headers["Content-Type"] = "application/json"
{headers}
{vary}
done = function(summary, latency, requests)
  local f = io.open({out}, "w")
  local e = summary.errors
  f:write(string.format(
    '{{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}},' ..
    '"latency_us":{{"p50":%.1f,"p90":%.1f,"p99":%.1f,"max":%.1f,"mean":%.1f}}}}',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
  f:close()
end
"""

VARY = """
local template, n = wrk.body, {base}
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, (template:gsub({placeholder}, tostring(n))))
end
"""


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True)
class Call:
    """One request, repeated: method, path with query, optional JSON body and headers."""

    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # Writes: each request's body gets a fresh number for this placeholder (a new metric step), so
    # MLflow inserts new rows rather than taking its duplicate path.
    vary: bytes | None = None


@dataclass
class WrkResult:
    requests: int
    seconds: float
    bytes: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {
            "rps": round(self.rps, 1), "p50_ms": round(self.p50_ms, 3), "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3), "errors": self.errors, "requests": self.requests,
            "mb_per_s": round(self.mb_per_s, 1),
        }  # fmt: skip


def run_wrk(base_url: str, call: Call, connections: int, seconds: float, timeout_s: float = 30, step_base: int = 0) -> WrkResult:
    """Run wrk with one thread (the servers need the other core) and return its summary."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        out = Path(tmp) / "summary.json"
        body = ""
        if call.body is not None:
            body_path = Path(tmp) / "body"
            body_path.write_bytes(call.body)
            body = f'local bf = io.open({lua_string(str(body_path))}, "rb"); wrk.body = bf:read("*a"); bf:close()'
        vary = ""
        if call.vary is not None:
            vary = VARY.format(base=step_base, placeholder=lua_string(call.vary.decode()))
        headers = "\n".join(f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in call.headers)
        script = Path(tmp) / "call.lua"
        script.write_text(LUA.format(method=lua_string(call.method), body=body, headers=headers, vary=vary, out=lua_string(str(out))))
        command = [
            "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", f"--timeout={timeout_s:g}s",
            "-s", str(script), base_url.rstrip("/") + call.path,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        data = json.loads(out.read_text())
    errors = sum(data["errors"].values())
    latency = data["latency_us"]
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        bytes=data["bytes"],
        errors=errors,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
    )
