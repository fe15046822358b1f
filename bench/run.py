"""The benchmark: MLflow alone, MLflow behind nginx, MLflow behind our front, in one run.

    uv run python -m bench.run                       # everything (about 45 minutes on 2 cores)
    uv run python -m bench.run --artifact-mib 256 --repeats 3 --workloads api,ui
    uv run python -m bench.run --mlflow-workers 1,2 --workloads api    # a table per worker count
    uv run python -m bench.run --front-child unix                      # the front on its default socket

With `--front-child tcp` (the default) one `mlflow-app serve --mlflow-port N` is started; its
MLflow child (same command line as `mlflow server` with our defaults) is "MLflow alone", reached
on that loopback port, and nginx proxies to that same child. So the three setups share one MLflow
process and database, and differ only in what stands in front of it. With `--front-child unix`
the front keeps its child on the launcher's default (a Unix socket), and "MLflow alone" is a
second MLflow started with the same command on loopback TCP, behind nginx too; each MLflow gets
its own fixtures. Each figure is measured `--repeats` times, the setups taking turns, and
reported as the median with the spread; `--mlflow-workers 1,2` repeats the API, UI and artifact
workloads with each worker count (MLflow and the front then compete for the cores). Results go
to bench/results/<date>-<time>.json; `python -m bench.report FILE` renders them as the tables of
docs/benchmarks.md. Needs Debian's `wrk`, `nginx` and `curl`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench import workloads
from bench.machine import load_average, machine
from bench.servers import Front, MlflowAlone, Nginx, PeakMemory, nginx_installed, rss_mib, stop_group, tree_of, wait_for
from bench.wrk import Call, run_wrk
from launcher.settings import installed_mlflow_ui_dir

RESULTS = Path(__file__).with_name("results")
SETUPS = ("mlflow", "nginx", "front")
ALL_WORKLOADS = ("api", "ui", "artifact", "start", "tree")
PER_WORKERS = ("api", "ui", "artifact")  # measured once per --mlflow-workers value; start and tree once
FRONT_CHILD = ("tcp", "unix")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def spread(values: list[float]) -> dict:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def rotate(setups: tuple[str, ...], turn: int) -> tuple[str, ...]:
    """The setups in a different order each repeat, so no one always runs first (or hot)."""
    turn %= len(setups)
    return setups[turn:] + setups[:turn]


def settle(pid: int, seconds: float = 1.0, timeout: float = 30.0) -> None:
    """Wait until the process tree is idle (below 5% of a core over `seconds`): after start-up work."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = tree_of(pid)
        before = cpu_seconds(procs)
        time.sleep(seconds)
        if cpu_seconds(procs) - before < 0.05 * seconds:
            return


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def memory_snapshot(front: Front) -> dict:
    tree = tree_of(front.process.pid)
    return {"front_mib": round(rss_mib(tree[:1]), 1), "tree_mib": round(rss_mib(tree), 1), "processes": len(tree)}


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.results: dict = {"workloads": {}, "by_workers": {}}
        self.current: dict = {}  # the results of the worker count being measured
        self.workers = 1
        self.front: Front | None = None
        self.alone: MlflowAlone | None = None  # --front-child unix: "MLflow alone" is its own process
        self.nginx: Nginx | None = None
        self.urls: dict[str, str] = {}
        self.mlflow_of: dict[str, str] = {}  # per setup: a URL of the MLflow behind it, for fixtures and draining

    # --- the three setups ---------------------------------------------------------------------

    def start_setups(self, workers: int) -> None:
        self.workers = workers
        self.current = self.results["by_workers"].setdefault(str(workers), {"workloads": {}})
        workdir = self.workdir / f"workers-{workers}"
        unix = self.args.front_child == "unix"
        log(f"starting mlflow-app (front + MLflow child, {workers} worker(s), child on {'its default' if unix else 'loopback TCP'})")
        # tcp: --mlflow-port keeps the child on loopback TCP, where "MLflow alone" and nginx reach it.
        self.front = Front(workdir / "front", extra_args=("--workers", str(workers)), **({"mlflow_port": None} if unix else {}))
        self.front.launch()
        if unix and {"mlflow", "nginx"} & set(self.args.setups):
            self.alone = MlflowAlone(workdir / "mlflow", workers=workers)
            wait_for(self.alone.url + "/health", 600, self.alone.launch())
        wait_for(f"{self.front.url}/health", 600, self.front.process)
        mlflow_url = self.alone.url if self.alone else self.front.mlflow_url
        self.urls = {"mlflow": mlflow_url, "front": self.front.url}
        self.mlflow_of = {"mlflow": mlflow_url, "nginx": mlflow_url, "front": self.front.url if unix else mlflow_url}
        if "nginx" in self.args.setups:
            self.nginx = Nginx(workdir / "nginx", self.alone.port if self.alone else self.front.mlflow_port).start()
            self.urls["nginx"] = self.nginx.url
        self.urls = {name: self.urls[name] for name in SETUPS if name in self.args.setups}
        settle(self.front.process.pid)
        if self.alone:
            settle(self.alone.process.pid)
        self.current["memory_idle"] = memory_snapshot(self.front)
        log(f"idle: {self.current['memory_idle']}")

    def stop_setups(self) -> None:
        for server in (self.nginx, self.front, self.alone):
            if server:
                server.stop()
        self.nginx = self.front = self.alone = None

    def drain_all(self, fixtures: dict[str, workloads.Fixtures]) -> None:
        """Every MLflow finishes what a previous run left queued: a backlog in one would take the cores from the other."""
        for url, fixture in fixtures.items():
            workloads.drain(url, fixture)

    # --- workloads ----------------------------------------------------------------------------

    def api(self) -> None:
        fixtures = {url: workloads.create_fixtures(url) for url in dict.fromkeys(self.mlflow_of[s] for s in self.urls)}
        calls = {setup: workloads.api_calls(fixtures[self.mlflow_of[setup]]) for setup in self.urls}  # same calls, each MLflow's ids
        for setup, url in self.urls.items():
            workloads.check_calls(url, calls[setup])
        log("api: warm-up")
        for setup, url in self.urls.items():
            for call in calls[setup]:
                run_wrk(url, call, 1, 1, step_base=self._step_base())
        out: dict = {}
        proxies = {"mlflow": [], "nginx": tree_of(self.nginx.process.pid) if self.nginx else [], "front": tree_of(self.front.process.pid)[:1]}
        with PeakMemory(self.front.process.pid) as peak:
            for turn in range(self.args.repeats):
                for index in range(len(next(iter(calls.values())))):
                    for connections in self.args.concurrency:
                        for setup in rotate(tuple(self.urls), turn):
                            call = calls[setup][index]
                            # MLflow finishes what a previous run left queued before the next is timed.
                            self.drain_all(fixtures)
                            cpu_before = cpu_seconds(proxies[setup])
                            result = run_wrk(self.urls[setup], call, connections, self.args.seconds, step_base=self._step_base())
                            row = result.as_dict()
                            if proxies[setup] and result.requests:  # the proxy's own CPU per request: steadier than req/s on a busy machine
                                row["proxy_cpu_ms"] = round(1000 * (cpu_seconds(proxies[setup]) - cpu_before) / max(result.requests, 1), 3)
                            out.setdefault(call.name, {}).setdefault(str(connections), {}).setdefault(setup, []).append(row)
                            log(
                                f"api w={self.workers} {turn + 1}/{self.args.repeats} {call.name} c={connections} {setup}: "
                                f"{result.rps:.0f}/s p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms errors {result.errors} "
                                f"proxy CPU {row.get('proxy_cpu_ms', 0):.2f} ms/request"
                            )
        self.current["workloads"]["api"] = out
        self.current["memory_api_load"] = {"front_peak_mib": round(peak.front_peak_mib, 1), "tree_peak_mib": round(peak.tree_peak_mib, 1)}

    def _step_base(self) -> int:
        self._steps = getattr(self, "_steps", 0) + 1
        return self._steps * 10_000_000

    def ui(self) -> None:
        ui_dir = installed_mlflow_ui_dir()
        index_html = (ui_dir / "index.html").read_text()
        out: dict = {
            "raw_bytes": workloads.raw_bytes_of(ui_dir, index_html),
            "references": len(workloads.index_references(index_html)),
            "cold": {},
            "cold_identity": {},
            "warm": {},
            "largest_js": {},
        }
        for turn in range(self.args.repeats):
            for setup in rotate(tuple(self.urls), turn):
                url = self.urls[setup]
                cold = workloads.page_load(url)
                warm = workloads.page_load(url, cache=cold.cache)
                plain = workloads.page_load(url, encoding="identity")
                for key, load in (("cold", cold), ("warm", warm), ("cold_identity", plain)):
                    out[key].setdefault(setup, []).append({"ms": round(load.seconds * 1000, 1), "requests": load.requests, "wire_bytes": load.wire_bytes, "not_modified": load.not_modified})
                log(
                    f"ui {turn + 1}/{self.args.repeats} {setup}: cold {cold.seconds * 1000:.0f} ms {cold.wire_bytes} B, "
                    f"warm {warm.seconds * 1000:.0f} ms {warm.requests} requests, identity {plain.wire_bytes} B"
                )
        asset = workloads.largest_js(ui_dir)
        out["largest_js_path"] = asset
        out["largest_js_bytes"] = (ui_dir / asset.removeprefix("/static-files/")).stat().st_size
        call = Call("largest-js", "GET", asset, headers=(("Accept-Encoding", workloads.BROWSER_ENCODING),))
        with PeakMemory(self.front.process.pid) as peak:
            for turn in range(self.args.repeats):
                for setup in rotate(tuple(self.urls), turn):
                    settle(self.front.process.pid, seconds=0.5, timeout=60)
                    result = run_wrk(self.urls[setup], call, 16, self.args.seconds)
                    out["largest_js"].setdefault(setup, []).append(result.as_dict())
                    log(f"ui {turn + 1}/{self.args.repeats} largest js {setup}: {result.rps:.1f}/s {result.mb_per_s:.0f} MB/s errors {result.errors}")
        self.current["workloads"]["ui"] = out
        self.current["memory_ui_load"] = {"front_peak_mib": round(peak.front_peak_mib, 1), "tree_peak_mib": round(peak.tree_peak_mib, 1)}

    def artifact(self) -> None:
        mib = self.args.artifact_mib
        blob = workloads.make_blob(self.workdir / f"blob-{mib}.bin", mib)
        out: dict = {"mib": mib, "upload": {}, "download": {}, "front_growth_mib": []}
        for turn in range(self.args.repeats):
            for setup in rotate(tuple(self.urls), turn):
                url, path = self.urls[setup], f"bench/{setup}-{turn}.bin"
                with PeakMemory(self.front.process.pid) as peak:
                    up = workloads.upload(url, path, blob)
                    down = workloads.download(url, path, blob.stat().st_size)
                workloads.delete_artifact(self.mlflow_of[setup], path)
                out["upload"].setdefault(setup, []).append(round(up.mb_per_s, 1))
                out["download"].setdefault(setup, []).append(round(down.mb_per_s, 1))
                if setup == "front":
                    out["front_growth_mib"].append(round(peak.front_peak_mib - peak.front_start_mib, 1))
                log(
                    f"artifact {turn + 1}/{self.args.repeats} {setup}: up {up.mb_per_s:.0f} MB/s, down {down.mb_per_s:.0f} MB/s, "
                    f"front {peak.front_start_mib:.0f} -> peak {peak.front_peak_mib:.0f} MiB"
                )
        blob.unlink()
        self.current["workloads"]["artifact"] = out

    def start(self) -> None:
        """Cold start: launch to the front's index and /health, and MLflow alone's /health.

        The front is started with --mlflow-port (its child on loopback TCP), whatever --front-child
        says: its child's own /health is polled there."""
        out: dict = {"front_index_s": [], "front_health_s": [], "child_health_s": [], "mlflow_alone_health_s": []}
        for turn in range(self.args.repeats):
            front = Front(self.workdir / f"start-front-{turn}")
            launched = time.monotonic()
            front.launch()
            times: dict[str, float] = {}

            def poll(name: str, url: str) -> None:
                wait_for(url, 300, front.process, interval=0.01)
                times[name] = time.monotonic() - launched

            pollers = [
                threading.Thread(target=poll, args=(name, url)) for name, url in (("index", front.url + "/"), ("health", front.url + "/health"), ("child", front.mlflow_url + "/health"))
            ]
            for poller in pollers:
                poller.start()
            for poller in pollers:
                poller.join()
            front.stop()
            out["front_index_s"].append(round(times["index"], 3))
            out["front_health_s"].append(round(times["health"], 3))
            out["child_health_s"].append(round(times["child"], 3))
            alone = MlflowAlone(self.workdir / f"start-mlflow-{turn}")
            launched = time.monotonic()
            alone_seconds = wait_for(alone.url + "/health", 300, alone.launch(), interval=0.01)
            alone.stop()
            out["mlflow_alone_health_s"].append(round(alone_seconds, 3))
            log(
                f"start {turn + 1}/{self.args.repeats}: front index {times['index']:.2f} s, front /health {times['health']:.2f} s "
                f"(its MLflow {times['child']:.2f} s); MLflow alone /health {alone_seconds:.2f} s"
            )
        self.results["workloads"]["start"] = out

    def tree(self) -> None:
        """MLflow's own process tree: our defaults, two workers, and `mlflow server`'s defaults."""
        out: dict = {}
        variants = {
            "workers=1, jobs off (ours)": {"workers": 1},
            "workers=2, jobs off": {"workers": 2},
            "mlflow server defaults (4 workers, job runner)": {"defaults": True},
        }
        for name, variant in variants.items():
            alone = MlflowAlone(self.workdir / f"tree-{len(out)}", workers=variant.get("workers", 1))
            seconds = wait_for(alone.url + "/health", 600, alone.launch(variant.get("defaults", False)), interval=0.05)
            settle(alone.process.pid, seconds=2.0, timeout=60)
            procs = tree_of(alone.process.pid)
            rss = rss_mib(procs)  # before the stop: a stopped process has no memory to read
            stopping = time.monotonic()
            stop_group(alone.process)
            out[name] = {
                "processes": len(procs),
                "rss_mib": round(rss, 1),
                "start_s": round(seconds, 1),
                "stop_s": round(time.monotonic() - stopping, 1),
            }
            log(f"tree {name}: {out[name]}")
        self.results["workloads"]["tree"] = out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(ALL_WORKLOADS), help=f"comma-separated, of {', '.join(ALL_WORKLOADS)}")
    parser.add_argument("--repeats", type=int, default=3, help="times each figure is measured (median and spread reported)")
    parser.add_argument("--seconds", type=float, default=5, help="duration of each wrk run")
    parser.add_argument("--concurrency", default="1,16,64", help="connections for the API calls")
    parser.add_argument("--artifact-mib", type=int, default=1024, help="size of the artifact uploaded and downloaded")
    parser.add_argument(
        "--mlflow-workers", default="1",
        help="MLflow's workers (--workers of mlflow-app serve), comma-separated: 1,2 measures the api, ui and artifact "
        "workloads once with each, reported as separate tables; 1 is our default",
    )  # fmt: skip
    parser.add_argument(
        "--front-child", choices=FRONT_CHILD, default="tcp",
        help="where the front's MLflow child listens. tcp (default): --mlflow-port, and that same child is \"MLflow alone\" "
        "and nginx's upstream. unix: the launcher's default (a Unix socket); \"MLflow alone\" (and nginx's upstream) is a "
        "second MLflow with the same command on loopback TCP",
    )  # fmt: skip
    parser.add_argument("--setups", default=",".join(SETUPS), help="which of mlflow, nginx, front to measure")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/<date>-<time>.json)")
    parser.add_argument("--note", default="", help="free text kept with the results (e.g. other load on the machine)")
    args = parser.parse_args()
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    try:
        args.mlflow_workers = [int(w) for w in args.mlflow_workers.split(",") if w]
    except ValueError:
        parser.error(f"--mlflow-workers: {args.mlflow_workers!r} is not a comma-separated list of numbers, such as 1,2")
    if not args.mlflow_workers or min(args.mlflow_workers) < 1:
        parser.error("--mlflow-workers: each worker count must be 1 or more")
    if args.seconds != int(args.seconds) or args.seconds < 1:
        parser.error(f"--seconds: wrk runs for whole seconds only, not {args.seconds:g}")
    args.setups = tuple(s for s in SETUPS if s in args.setups.split(","))
    for tool in ("wrk", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install -y wrk nginx curl")
    if "nginx" in args.setups and not nginx_installed():
        raise SystemExit("nginx not found: apt-get install -y nginx (or --setups mlflow,front)")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    started = datetime.datetime.now()
    out = args.out or RESULTS / f"{started:%Y-%m-%d-%H%M}.json"
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        bench.results["meta"] = {
            "date": started.isoformat(timespec="seconds"),
            "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
            "machine": machine(),
            "load_before": load_average(),
            "repeats": args.repeats, "seconds": args.seconds, "note": args.note, "mlflow_workers": args.mlflow_workers,
            "front_child": args.front_child,
        }  # fmt: skip
        for workers in args.mlflow_workers if set(PER_WORKERS) & set(args.workloads) else ():
            try:
                bench.start_setups(workers)
                for name in PER_WORKERS:
                    if name in args.workloads:
                        getattr(bench, name)()
                bench.current["memory_after"] = memory_snapshot(bench.front)
            finally:
                bench.stop_setups()
        for name in ("start", "tree"):
            if name in args.workloads:
                getattr(bench, name)()
        bench.results["meta"]["load_after"] = load_average()
        bench.results["meta"]["minutes"] = round((datetime.datetime.now() - started).total_seconds() / 60, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench.results, indent=1) + "\n")
    log(f"results in {out}")
    from bench.report import render

    print(render(bench.results))


if __name__ == "__main__":
    main()
