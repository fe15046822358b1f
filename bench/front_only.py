"""The front alone, against a fixed fake upstream: what the hot path costs, beside nginx, in seconds.

    uv run python -m bench.front_only                                  # about 40 s
    uv run python -m bench.front_only --seconds 5 --concurrency 1,16,64 --repeats 3
    uv run python -m bench.front_only --serve-front --port 8001 --upstream-port 5001   # one front, to profile
    uv run python -m bench.report bench/results/front-only-<date>-<time>.json          # the tables again

No MLflow: `bench.fake_upstream` answers every request at once with prepared bytes, over
loopback TCP and over a Unix socket. In front of it, each in its own process:

- `front`, `front-unix`: the front's ASGI app (`proxy.app.create_app`) under uvicorn as
  `mlflow-app serve` runs it (`launcher.server.front_server_config`, uvloop, the request log on
  as by default, written to a file), told the upstream is ready; to the fake upstream over TCP,
  or over its Unix socket (`UpstreamState.unix_socket`). The UI directory is a one-file stand-in.
- `nginx`, `nginx-unix`: Debian's nginx from bench/nginx.conf.j2 (keep-alive upstream).
- `upstream`: the fake upstream alone, the floor.

Each is loaded with wrk (`-t1`, keep-alive) for GET small (200 B JSON), GET /big (64 KiB JSON)
and POST small (a 200 B body), at each `--concurrency`. Per run: requests/s, p50, p99, and the
proxy's CPU time per request, from /proc/<pid>/stat (user + system of the front process; of
nginx's master and workers) before and after, divided by the requests wrk completed. The
upstream's own CPU per request is kept beside it. Without wrk a Python load loop stands in.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.fake_upstream import BIG_BYTES, SMALL_BYTES, json_body
from bench.machine import REPO, load_average, machine
from bench.python_load import run_python_load
from bench.servers import Nginx, free_port, nginx_installed, stat_cpu_seconds, stop_group, tree_of, wait_for
from bench.wrk import Call, run_wrk

RESULTS = Path(__file__).with_name("results")
SETUPS = ("upstream", "front", "front-unix", "nginx", "nginx-unix")
PROXIES = ("front", "front-unix", "nginx", "nginx-unix")
# (front, nginx) pairs of the headline: the same path to the upstream on both sides.
HEADLINE_PAIRS = (("front", "nginx"), ("front-unix", "nginx-unix"))
CALLS = (
    Call("GET small", "GET", "/api/2.0/mlflow/experiments/get?experiment_id=1"),
    Call("GET big", "GET", "/big"),
    Call("POST small", "POST", "/api/2.0/mlflow/runs/log-metric", body=json_body(SMALL_BYTES)),
)
EXPECTED_BYTES = {"GET small": SMALL_BYTES, "GET big": BIG_BYTES, "POST small": SMALL_BYTES}
PACKAGES = ("uvicorn", "starlette", "httpx", "httpcore", "httptools", "uvloop")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# --- the front's own process ----------------------------------------------------------------


def serve_front(port: int, upstream_port: int | None, upstream_unix: str | None, ui_dir: Path) -> None:
    """Run the front as `mlflow-app serve` does (uvloop, front_server_config, its logging), with no
    launcher and no MLflow: the upstream at `upstream_port` or `upstream_unix` is taken as ready."""
    import uvicorn

    from launcher.logs import configure_logging
    from launcher.redaction import Redactor
    from launcher.server import bind_socket, front_server_config
    from launcher.settings import Settings
    from proxy.app import FrontConfig, create_app
    from proxy.assets import UiAssets
    from proxy.upstream import UpstreamPhase, UpstreamState

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level, Redactor.from_environment())  # one line per request, as served
    if upstream_unix:
        state = UpstreamState(base_url="http://localhost", unix_socket=upstream_unix, phase=UpstreamPhase.READY)
    else:
        state = UpstreamState(base_url=f"http://127.0.0.1:{upstream_port}", phase=UpstreamPhase.READY)
    app = create_app(FrontConfig(upstream_timeout_seconds=settings.upstream_timeout), state, UiAssets(ui_dir))
    sock = bind_socket("127.0.0.1", port, "--port")
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(uvicorn.Server(front_server_config(app, drain_seconds=1.0)).serve(sockets=[sock]))


def stand_in_ui(directory: Path) -> Path:
    """A UI directory of one small index.html: nothing to precompress, so start-up costs no CPU."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.html").write_text("<!doctype html><title>bench</title>\n")
    return directory


# --- the processes measured -------------------------------------------------------------------


@dataclass
class FakeUpstreamServer:
    """`python -m bench.fake_upstream` on a loopback port and a Unix socket."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def unix_socket(self) -> str:
        return str(self.workdir / "upstream.sock")

    def start(self) -> FakeUpstreamServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # as for its parent: nginx's workers connect to the socket in here
        self.process = _python(["-m", "bench.fake_upstream", "--port", str(self.port), "--unix", self.unix_socket], self.workdir / "upstream.log")
        wait_for(self.url + "/", 30, self.process)
        deadline = time.monotonic() + 10
        with httpx.Client(transport=httpx.HTTPTransport(uds=self.unix_socket)) as client:
            while True:  # the Unix socket is opened after the TCP one
                try:
                    if client.get("http://localhost/").status_code == 200:
                        return self
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)

    def stop(self) -> None:
        if self.process:
            stop_group(self.process, timeout=5)


@dataclass
class BareFront:
    """The front's app under uvicorn (`--serve-front`), without launcher or MLflow, on a fake upstream."""

    workdir: Path
    upstream_port: int | None = None
    upstream_unix: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> BareFront:
        ui_dir = stand_in_ui(self.workdir / "ui")
        upstream = ["--upstream-unix", self.upstream_unix] if self.upstream_unix else ["--upstream-port", str(self.upstream_port)]
        command = ["-m", "bench.front_only", "--serve-front", "--port", str(self.port), *upstream, "--ui-dir", str(ui_dir)]
        self.process = _python(command, self.workdir / "front.log")
        return self

    def wait(self, timeout: float = 60) -> BareFront:
        try:
            wait_for(self.url + "/health", timeout, self.process)
        except (RuntimeError, TimeoutError) as exc:  # the temporary directory and its log go with us: show the end of it
            tail = "\n".join((self.workdir / "front.log").read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the front ({' '.join(self.process.args[1:])}) did not start: {exc}\n{tail}") from None
        return self

    def stop(self) -> None:
        if self.process:
            stop_group(self.process, timeout=5)


def _python(arguments: list[str], log_path: Path) -> subprocess.Popen:
    """This interpreter on `arguments`, from the repository, output to `log_path`, in its own session."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, *arguments], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


@dataclass
class Setup:
    name: str
    url: str
    pids: list[int]  # the proxy's processes, whose CPU is counted; none for the upstream alone


def check(setup: Setup) -> str | None:
    """Each call once through `setup`: None if all answer 200 with the upstream's body, else why not."""
    with httpx.Client(base_url=setup.url, timeout=10) as client:
        for call in CALLS:
            try:
                response = client.request(call.method, call.path, content=call.body, headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                return f"{call.name}: {type(exc).__name__}"
            if response.status_code != 200 or len(response.content) != EXPECTED_BYTES[call.name]:
                return f"{call.name}: {response.status_code}, {len(response.content)} bytes: {response.text[:160]}"
    return None


# --- the run ----------------------------------------------------------------------------------


class FrontOnlyBench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.upstream: FakeUpstreamServer | None = None
        self.fronts: dict[str, BareFront] = {}
        self.nginxes: dict[str, Nginx] = {}
        self.setups: list[Setup] = []
        self.status: dict[str, str] = {}  # per setup: "measured" or why not
        self.load = run_wrk if args.load == "wrk" else run_python_load

    def start(self) -> None:
        self.workdir.chmod(0o755)  # nginx's workers (another user) reach the upstream's socket through it
        self.upstream = FakeUpstreamServer(self.workdir / "upstream").start()
        wanted = self.args.setups
        for name in ("front", "front-unix"):
            if name in wanted:
                unix = self.upstream.unix_socket if name.endswith("-unix") else None
                self.fronts[name] = BareFront(self.workdir / name, upstream_port=self.upstream.port, upstream_unix=unix).launch()
        for name in ("nginx", "nginx-unix"):
            if name not in wanted:
                continue
            if not nginx_installed():
                self.status[name] = "skipped: nginx not installed"
                continue
            unix = self.upstream.unix_socket if name.endswith("-unix") else None
            self.nginxes[name] = Nginx(self.workdir / name, mlflow_port=self.upstream.port, upstream_socket=unix).start(ready_path="/")
        for name in wanted:
            if name in self.status:
                continue
            if name == "upstream":
                setup = Setup(name, self.upstream.url, [])
            elif name in self.fronts:
                front = self.fronts[name].wait()
                setup = Setup(name, front.url, [front.process.pid])
            else:
                nginx = self.nginxes[name]
                setup = Setup(name, nginx.url, [p.pid for p in tree_of(nginx.process.pid)])  # master and workers
            problem = check(setup)
            if problem:
                self.status[name] = f"skipped: {problem}"
                log(f"{name}: {self.status[name]}")
                continue
            self.status[name] = "measured"
            self.setups.append(setup)

    def stop(self) -> None:
        for server in [*self.nginxes.values(), *self.fronts.values(), self.upstream]:
            if server:
                server.stop()

    def run(self) -> list[dict]:
        rows = []
        for setup in self.setups:  # connections made, code paths warm (wrk takes whole seconds only)
            run_python_load(setup.url, CALLS[0], max(self.args.concurrency), 0.3)
        for turn in range(self.args.repeats):
            for call in CALLS:
                for connections in self.args.concurrency:
                    for setup in self.setups:
                        rows.append(self.measure(setup, call, connections, turn))
        return rows

    def measure(self, setup: Setup, call: Call, connections: int, turn: int) -> dict:
        upstream_pids = [self.upstream.process.pid]
        proxy_before, upstream_before = stat_cpu_seconds(setup.pids), stat_cpu_seconds(upstream_pids)
        result = self.load(setup.url, call, connections, self.args.seconds)
        proxy_cpu, upstream_cpu = stat_cpu_seconds(setup.pids) - proxy_before, stat_cpu_seconds(upstream_pids) - upstream_before
        requests = max(result.requests, 1)
        row = {"setup": setup.name, "call": call.name, "c": connections, "repeat": turn, **result.as_dict()}
        row["proxy_cpu_us"] = round(1e6 * proxy_cpu / requests, 1) if setup.pids else None
        row["upstream_cpu_us"] = round(1e6 * upstream_cpu / requests, 1)
        cpu = f", proxy CPU {row['proxy_cpu_us']:.0f} µs/request" if setup.pids else ""
        log(f"{setup.name:<10} {call.name:<10} c={connections:<3} {result.rps:8.0f}/s p50 {result.p50_ms:6.3f} ms errors {result.errors}{cpu}")
        return row

    def front_memory(self) -> dict[str, float]:
        """Resident MiB of each front process after the runs."""
        out = {}
        for name, front in self.fronts.items():
            for line in Path(f"/proc/{front.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[name] = round(int(line.split()[1]) / 1024, 1)
        return out


# --- the report -------------------------------------------------------------------------------


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(rows: list[dict]) -> list[dict]:
    """One row per setup, call and concurrency: the median of the repeats."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["setup"], row["call"], row["c"]), []).append(row)
    keys = ("rps", "p50_ms", "p99_ms", "proxy_cpu_us", "upstream_cpu_us")
    return [
        {"setup": s, "call": call, "c": c, **{k: _median(group, k) for k in keys}, "errors": sum(r["errors"] for r in group), "repeats": len(group)} for (s, call, c), group in groups.items()
    ]


def headline(summary: list[dict]) -> list[dict]:
    """Front CPU µs/request beside nginx's and their ratio, per call and concurrency and per upstream path."""
    cpu = {(r["setup"], r["call"], r["c"]): r["proxy_cpu_us"] for r in summary}
    out = []
    for call in dict.fromkeys(r["call"] for r in summary):
        for c in sorted({r["c"] for r in summary if r["call"] == call}):
            for front, nginx in HEADLINE_PAIRS:
                f, n = cpu.get((front, call, c)), cpu.get((nginx, call, c))
                if f is not None:
                    out.append({"call": call, "c": c, "front": front, "front_cpu_us": f, "nginx": nginx, "nginx_cpu_us": n, "ratio": round(f / n, 1) if n else None})
    return out


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def render_front_only(results: dict) -> str:
    """The tables of docs/benchmarks.md's "The front alone" section, from a results file."""
    meta, machine_ = results["meta"], results["meta"]["machine"]
    dirty = machine_.get("uncommitted_front_files")
    out = [
        f"Run of {meta['date']}: `{meta['command']}`, {meta['seconds']:g} s per figure with {meta['load']}, "
        f"{meta['repeats']} repeat(s), {meta['total_seconds']:.0f} s in all. Machine: {machine_['cpu']}, {machine_['cores']} cores, "
        f"Linux {machine_['kernel']}. Load average before/after: {meta['load_before']} / {meta['load_after']}. "
        f"Versions: Python {machine_['python']}, uvicorn {machine_['uvicorn']}, Starlette {machine_['starlette']}, "
        f"httpx {machine_['httpx']}, httptools {machine_['httptools']}, uvloop {machine_['uvloop']}, nginx {machine_['nginx']}, "
        f"wrk {machine_['wrk']}; the front at {machine_['git']}" + (f" with uncommitted changes to {', '.join(dirty)}." if dirty else "."),
        "",
    ]
    first = next((h for h in results["headline"] if h["front"] == "front" and h["nginx_cpu_us"]), None)
    if first:
        out += [
            f"**Headline: the front spends {first['front_cpu_us']:.0f} µs of CPU per request, nginx {first['nginx_cpu_us']:.0f} µs: "
            f"{first['ratio']:.1f}×** ({first['call']}, c={first['c']}, TCP to the upstream).",
            "",
        ]
    skipped = {name: why for name, why in results["setups"].items() if why != "measured"}
    if skipped:
        out += ["Not measured: " + "; ".join(f"`{name}` ({why})" for name, why in skipped.items()) + ".", ""]
    out += [
        "Proxy CPU per request (µs), the front beside nginx on the same path to the upstream:",
        "",
        "| call | c | front | nginx | front ÷ nginx |",
        "|---|---|---|---|---|",
    ]
    for h in results["headline"]:
        label = "" if h["front"] == "front" else " (Unix socket)"
        out.append(f"| {h['call']}{label} | {h['c']} | {h['front_cpu_us']:.0f} | {_num(h['nginx_cpu_us'], '.0f')} | {_num(h['ratio'], '.1f')}{'×' if h['ratio'] else ''} |")
    floor = {(r["call"], r["c"]): r["p50_ms"] for r in results["summary"] if r["setup"] == "upstream"}
    out += [
        "",
        "| setup | call | c | req/s | p50 ms | added p50 ms | p99 ms | proxy CPU µs/request | upstream CPU µs/request | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate(SETUPS)}
    calls = {call.name: i for i, call in enumerate(CALLS)}
    for r in sorted(results["summary"], key=lambda r: (calls.get(r["call"], 99), r["c"], order.get(r["setup"], 99))):
        base = floor.get((r["call"], r["c"]))
        added = "" if r["setup"] == "upstream" or base is None else f"{r['p50_ms'] - base:+.3f}"
        out.append(
            f"| {r['setup']} | {r['call']} | {r['c']} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {added} | {r['p99_ms']:.3f} "
            f"| {_num(r['proxy_cpu_us'], '.0f')} | {_num(r['upstream_cpu_us'], '.0f')} | {r['errors']} |"
        )
    if results.get("front_rss_mib"):
        out += ["", "Front resident memory after the runs: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in results["front_rss_mib"].items()) + "."]
    return "\n".join(out) + "\n"


# --- the command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.front_only", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="duration of each load run; whole seconds with wrk (default 1)")
    parser.add_argument("--concurrency", default="1,16", help="connections, comma-separated (default 1,16)")
    parser.add_argument("--repeats", type=int, default=1, help="times each figure is measured; the median is reported (default 1)")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)} (default all)")
    parser.add_argument("--load", choices=("wrk", "python"), help="load generator (default wrk if installed, else a Python loop)")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/front-only-<date>-<time>.json)")
    parser.add_argument("--note", default="", help="free text kept with the results")
    serving = parser.add_argument_group("one front alone (for a profiler): --serve-front --port P --upstream-port N | --upstream-unix PATH")
    serving.add_argument("--serve-front", action="store_true", help="run one front in this process until SIGTERM instead of the benchmark")
    serving.add_argument("--port", type=int, default=8001, help="the front's loopback port (default 8001)")
    serving.add_argument("--upstream-port", type=int, help="the upstream's loopback TCP port")
    serving.add_argument("--upstream-unix", help="the upstream's Unix socket (instead of --upstream-port)")
    serving.add_argument("--ui-dir", type=Path, help="UI build directory (default a one-file stand-in)")
    args = parser.parse_args(argv)
    if args.serve_front and (args.upstream_port is None) == (args.upstream_unix is None):
        parser.error("--serve-front needs one of --upstream-port or --upstream-unix")
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    except ValueError:
        parser.error(f"--concurrency: {args.concurrency!r} is not a comma-separated list of numbers")
    unknown = set(args.setups.split(",")) - set(SETUPS)
    if unknown:
        parser.error(f"--setups: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SETUPS)}")
    args.setups = tuple(s for s in SETUPS if s in args.setups.split(","))
    args.load = args.load or ("wrk" if shutil.which("wrk") else "python")
    if args.load == "wrk" and not args.serve_front and (args.seconds < 1 or args.seconds != int(args.seconds)):
        parser.error(f"--seconds: wrk runs for whole seconds only, not {args.seconds:g}; use --load python for shorter runs")
    return args


def main(argv: list[str] | None = None) -> Path | None:
    """Run the benchmark (or, with --serve-front, one front); returns the results file written."""
    args = parse_args(argv)
    if args.serve_front:
        with tempfile.TemporaryDirectory(prefix="front-only-ui-") as tmp:
            serve_front(args.port, args.upstream_port, args.upstream_unix, args.ui_dir or stand_in_ui(Path(tmp)))
        return None
    started = datetime.datetime.now()
    meta = {
        "kind": "front-only",
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.front_only", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(PACKAGES),
        "load_before": load_average(),
        "seconds": args.seconds, "repeats": args.repeats, "concurrency": args.concurrency, "load": args.load, "note": args.note,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="front-only-") as tmp:
        bench = FrontOnlyBench(args, Path(tmp))
        try:
            bench.start()
            rows = bench.run()
            rss = bench.front_memory()
        finally:
            bench.stop()
    meta["load_after"] = load_average()
    meta["total_seconds"] = round((datetime.datetime.now() - started).total_seconds(), 1)
    summary = summarise(rows)
    results = {"meta": meta, "setups": bench.status, "headline": headline(summary), "summary": summary, "runs": rows, "front_rss_mib": rss}
    out = args.out or RESULTS / f"front-only-{started:%Y-%m-%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(render_front_only(results))
    log(f"results in {out}")
    return out


if __name__ == "__main__":
    main()
