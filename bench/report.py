"""Render a results file of bench/run.py (or bench/front_only.py) as the Markdown tables of docs/benchmarks.md.

uv run python -m bench.report bench/results/2026-11-23-1930.json
uv run python -m bench.report bench/results/front-only-2026-11-28-103139.json
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

# The targets of the issue, in one place.
SMALL_CALLS = ("experiments/get", "runs/get", "runs/log-metric")  # "a small proxied call"
FRONT_CPU_MS = 0.25  # front CPU per small proxied call at most...
FRONT_CPU_VS_NGINX = 3.0  # ...and at most this many times nginx's
RPS_VS_MLFLOW = 0.95  # one MLflow worker: front req/s at least this share of MLflow alone's, every call and c
RPS_VS_NGINX_SLACK = 0.03  # two or more workers: front/MLflow at least nginx/MLflow minus this
ADDED_P50_SLACK_MS = 0.3  # c=1: p50 added by the front at most nginx's plus this
ARTIFACT_VS_MLFLOW = 0.95  # MB/s both ways
GROWTH_MIB = 50  # front memory growth during an artifact transfer
IDLE_MIB = 60  # front resident memory, idle

FRONT_CHILD = {
    "tcp": "on loopback TCP (--mlflow-port), the same process as MLflow alone",
    "unix": "on the launcher's default (a Unix socket); MLflow alone a second process with the same command, on TCP",
}


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(values: list[float], digits: int = 0) -> str:
    """Median with the spread of the repeats: `1234 (1200–1250)`."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{med(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "–"


def mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _nan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _slash(values: list[float], spec: str, suffix: str = "") -> str:
    return " / ".join("–" if _nan(v) else format(v, spec) for v in values) + suffix


def api_table(api: dict, workers: int) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The API table, the proxies' CPU per request first, and the checks of the API targets."""
    lines = [
        "| call | c | proxy CPU ms/request front / nginx | front ÷ nginx CPU | MLflow req/s | nginx req/s | front req/s | front/MLflow | nginx/MLflow "
        "| p50 ms MLflow / nginx / front | added p50 ms nginx / front | p99 ms MLflow / nginx / front | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_call: dict[str, dict[str, list[float]]] = {}
    for call, by_c in api.items():
        for c, by_setup in by_c.items():
            rps = {s: [r["rps"] for r in runs] for s, runs in by_setup.items()}
            p50 = {s: med([r["p50_ms"] for r in runs]) for s, runs in by_setup.items()}
            p99 = {s: med([r["p99_ms"] for r in runs]) for s, runs in by_setup.items()}
            errors = {s: sum(r["errors"] for r in runs) for s, runs in by_setup.items()}
            cpu = {s: med([r["proxy_cpu_ms"] for r in runs if "proxy_cpu_ms" in r]) for s, runs in by_setup.items()}
            m, n, f = (med(rps.get(s, [])) for s in ("mlflow", "nginx", "front"))
            cpu_f, cpu_n = cpu.get("front", float("nan")), cpu.get("nginx", float("nan"))
            nan = float("nan")
            added_n = p50.get("nginx", nan) - p50.get("mlflow", nan)
            added_f = p50.get("front", nan) - p50.get("mlflow", nan)
            lines.append(
                f"| {call} | {c} | {_slash([cpu_f, cpu_n], '.2f')} | {ratio(cpu_f, cpu_n)} "
                f"| {fmt(rps.get('mlflow', []))} | {fmt(rps.get('nginx', []))} | {fmt(rps.get('front', []))} "
                f"| {ratio(f, m)} | {ratio(n, m)} "
                f"| {_slash([p50.get(s, nan) for s in ('mlflow', 'nginx', 'front')], '.2f')} "
                f"| {added_n:+.2f} / {added_f:+.2f} "
                f"| {_slash([p99.get(s, nan) for s in ('mlflow', 'nginx', 'front')], '.1f')} "
                f"| {errors.get('mlflow', 0)} / {errors.get('nginx', 0)} / {errors.get('front', 0)} |"
            )
            row = per_call.setdefault(call, {"c": [], "cpu_f": [], "cpu_n": [], "f_m": [], "n_m": [], "added_f": [], "added_n": []})
            row["c"].append(c)
            row["cpu_f"].append(cpu_f)
            row["cpu_n"].append(cpu_n)
            row["f_m"].append(f / m if m else nan)
            row["n_m"].append(n / m if m else nan)
            row["added_f"].append(added_f)
            row["added_n"].append(added_n)
    return lines, api_checks(per_call, workers)


def api_checks(per_call: dict[str, dict[str, list]], workers: int) -> list[tuple[str, str, str]]:
    """One row per target and call, the figures at each concurrency side by side; met only if met at every one."""
    checks = []
    for call, row in per_call.items():
        cs = "/".join(row["c"])
        if call in SMALL_CALLS:
            checks.append((
                f"Front CPU per request ≤ {FRONT_CPU_MS} ms: {call}, c={cs}", _slash(row["cpu_f"], ".2f", " ms"),
                mark(all(v <= FRONT_CPU_MS for v in row["cpu_f"])),
            ))  # fmt: skip
            times = [f / n if n else float("nan") for f, n in zip(row["cpu_f"], row["cpu_n"])]
            checks.append((
                f"Front CPU per request ≤ {FRONT_CPU_VS_NGINX:g} × nginx's: {call}, c={cs}", _slash(times, ".1f", " ×"),
                mark(all(v <= FRONT_CPU_VS_NGINX for v in times)),
            ))  # fmt: skip
        if workers == 1:
            checks.append((
                f"req/s ≥ {RPS_VS_MLFLOW} × MLflow alone: {call}, c={cs}", _slash(row["f_m"], ".2f"),
                mark(all(v >= RPS_VS_MLFLOW for v in row["f_m"])),
            ))  # fmt: skip
        else:
            pairs = " / ".join(f"{f:.2f} vs {n:.2f}" for f, n in zip(row["f_m"], row["n_m"]))
            checks.append((
                f"front/MLflow req/s within {RPS_VS_NGINX_SLACK} of nginx/MLflow: {call}, c={cs}", pairs,
                mark(all(f >= n - RPS_VS_NGINX_SLACK for f, n in zip(row["f_m"], row["n_m"]))),
            ))  # fmt: skip
        if "1" in row["c"]:
            i = row["c"].index("1")
            added_f, added_n = row["added_f"][i], row["added_n"][i]
            checks.append((
                f"added p50 at c=1 ≤ nginx's + {ADDED_P50_SLACK_MS} ms: {call}", f"{added_f:+.2f} vs {added_n:+.2f} ms",
                mark(added_f <= added_n + ADDED_P50_SLACK_MS),
            ))  # fmt: skip
    return checks


def render_workers(results: dict, workers: int, titled: bool) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The API, UI, artifact and memory tables of one MLflow worker count, and their checks."""
    work = results.get("workloads", {})
    suffix = f", MLflow with {workers} worker{'s' if workers != 1 else ''}" if titled else ""
    out: list[str] = []
    checks: list[tuple[str, str, str]] = []
    if "api" in work:
        lines, api_checks = api_table(work["api"], workers)
        out += [f"### API calls{suffix} (wrk, 1 thread)", "", *lines, ""]
        checks += api_checks
    if "ui" in work:
        ui = work["ui"]
        raw = ui["raw_bytes"]
        out += [
            f"### The UI's first load{suffix}",
            "",
            f"The index and the {ui.get('references', '?')} files it references, {raw:,} bytes uncompressed; a browser-like client with 6 connections.",
            "",
            "| setup | cold ms | cold bytes on the wire | share of raw | warm ms | warm requests (304s) | identity bytes | largest JS req/s | largest JS MB/s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        js = {s: [r["rps"] for r in runs] for s, runs in ui["largest_js"].items()}
        for setup in ui["cold"]:
            cold, warm, plain = ui["cold"][setup], ui["warm"][setup], ui["cold_identity"][setup]
            wire = med([r["wire_bytes"] for r in cold])
            out.append(
                f"| {setup} | {fmt([r['ms'] for r in cold])} | {wire:,.0f} | {wire / raw:.0%} | {fmt([r['ms'] for r in warm], 1)} "
                f"| {med([r['requests'] for r in warm]):.0f} ({med([r['not_modified'] for r in warm]):.0f}) "
                f"| {med([r['wire_bytes'] for r in plain]):,.0f} | {fmt(js.get(setup, []), 1)} "
                f"| {fmt([r['mb_per_s'] for r in ui['largest_js'].get(setup, [])])} |"
            )
        out += ["", f"Largest JS: `{ui['largest_js_path']}` ({ui['largest_js_bytes']:,} bytes), 16 connections, `Accept-Encoding: gzip, deflate, br`.", ""]
        front_js, mlflow_js = med(js.get("front", [])), med(js.get("mlflow", []))
        checks.append(("Largest UI asset ≥ 5 × MLflow's req/s", f"{ratio(front_js, mlflow_js)} ×", mark(mlflow_js > 0 and front_js / mlflow_js >= 5)))
        front_wire = med([r["wire_bytes"] for r in ui["cold"].get("front", [])])
        checks.append(("First UI load ≤ 30% of raw bytes", f"{front_wire / raw:.0%}", mark(front_wire / raw <= 0.30)))
    if "artifact" in work:
        art = work["artifact"]
        out += [
            f"### Artifact of {art['mib']} MiB{suffix} (curl, PUT then GET through the mlflow-artifacts API)",
            "",
            "| setup | upload MB/s | download MB/s | vs MLflow (up / down) |",
            "|---|---|---|---|",
        ]
        up_m, down_m = med(art["upload"].get("mlflow", [])), med(art["download"].get("mlflow", []))
        for setup in art["upload"]:
            up, down = art["upload"][setup], art["download"][setup]
            out.append(f"| {setup} | {fmt(up)} | {fmt(down)} | {ratio(med(up), up_m)} / {ratio(med(down), down_m)} |")
        growth = art.get("front_growth_mib", [])
        out += ["", f"The front's resident memory grew by {fmt(growth, 1)} MiB at its peak during a transfer.", ""]
        up_f, down_f = med(art["upload"].get("front", [])), med(art["download"].get("front", []))
        checks.append((f"Artifact upload ≥ {ARTIFACT_VS_MLFLOW} × MLflow's MB/s", ratio(up_f, up_m), mark(up_m > 0 and up_f / up_m >= ARTIFACT_VS_MLFLOW)))
        checks.append((f"Artifact download ≥ {ARTIFACT_VS_MLFLOW} × MLflow's MB/s", ratio(down_f, down_m), mark(down_m > 0 and down_f / down_m >= ARTIFACT_VS_MLFLOW)))
        checks.append((f"Front memory growth < {GROWTH_MIB} MiB for {art['mib']} MiB", f"{max(growth, default=0):.1f} MiB (max)", mark(max(growth, default=0) < GROWTH_MIB)))
    if "memory_idle" in results:
        idle = results["memory_idle"]
        api_load = results.get("memory_api_load", {})
        ui_load = results.get("memory_ui_load", {})
        out += [
            f"### Memory{suffix} (resident, MiB)",
            "",
            "| | front | whole tree (front + MLflow) | processes |",
            "|---|---|---|---|",
            f"| idle, after start | {idle['front_mib']:.0f} | {idle['tree_mib']:.0f} | {idle['processes']} |",
        ]
        if api_load:
            out.append(f"| peak under the API load | {api_load['front_peak_mib']:.0f} | {api_load['tree_peak_mib']:.0f} | |")
        if ui_load:
            out.append(f"| peak under the UI asset load | {ui_load['front_peak_mib']:.0f} | {ui_load['tree_peak_mib']:.0f} | |")
        if "memory_after" in results:
            after = results["memory_after"]
            out.append(f"| after all workloads | {after['front_mib']:.0f} | {after['tree_mib']:.0f} | {after['processes']} |")
        out.append("")
        checks.append((f"Front idle < {IDLE_MIB} MiB", f"{idle['front_mib']:.0f} MiB", mark(idle["front_mib"] < IDLE_MIB)))
    return out, checks


def render(results: dict) -> str:
    """All the tables of a results file: per MLflow worker count, then start-up, the tree and the targets."""
    meta = results.get("meta", {})
    if meta.get("kind") == "front-only":
        from bench.front_only import render_front_only

        return render_front_only(results)
    machine = meta.get("machine", {})
    dirty = machine.get("uncommitted_front_files")
    out = [
        f"Run of {meta.get('date', '?')}: `{meta.get('command', '?')}`, {meta.get('repeats')} repeats of {meta.get('seconds')} s "
        f"per wrk figure, {meta.get('minutes', '?')} min. Machine: {machine.get('cpu')}, {machine.get('cores')} cores, "
        f"{machine.get('memory_gib')} GiB, Linux {machine.get('kernel')}. Load average before/after: "
        f"{meta.get('load_before')} / {meta.get('load_after')}. Versions: Python {machine.get('python')}, MLflow "
        f"{machine.get('mlflow')}, uvicorn {machine.get('uvicorn')}, Starlette {machine.get('starlette')}, httpx "
        f"{machine.get('httpx')}, nginx {machine.get('nginx')}, wrk {machine.get('wrk')}, mlflow-app at {machine.get('git')}"
        + (f" with uncommitted changes to {', '.join(dirty)}" if dirty else "")
        + f". The front's MLflow child: {FRONT_CHILD[meta.get('front_child', 'tcp')]}."
        + (f" Note: {meta['note']}" if meta.get("note") else ""),
        "",
        "Figures are medians of the repeats, with (min–max) where repeated.",
        "",
    ]
    # Files written before --mlflow-workers took a list keep one worker count's results at the top.
    by_workers = results.get("by_workers") or {str(meta.get("mlflow_workers", 1)): results}
    checks: list[tuple[str, str, str]] = []
    for workers, run in by_workers.items():
        lines, run_checks = render_workers(run, int(workers), titled=len(by_workers) > 1 or "by_workers" in results)
        out += lines
        prefix = f"[{workers} MLflow worker{'s' if workers != '1' else ''}] " if len(by_workers) > 1 else ""
        checks += [(prefix + a, b, c) for a, b, c in run_checks]
    work = results.get("workloads", {})
    if "start" in work:
        st = work["start"]
        out += [
            "### Cold start (fresh data directory each time)",
            "",
            "| from launch to | seconds |",
            "|---|---|",
            f"| front: UI index 200 | {fmt(st['front_index_s'], 2)} |",
            f"| front: its MLflow child's own /health 200 | {fmt(st['child_health_s'], 2)} |",
            f"| front: /health 200 | {fmt(st['front_health_s'], 2)} |",
            f"| MLflow alone (same command): /health 200 | {fmt(st['mlflow_alone_health_s'], 2)} |",
            "",
        ]
        lag_child = [h - c for h, c in zip(st["front_health_s"], st["child_health_s"])]
        lag_alone = med(st["front_health_s"]) - med(st["mlflow_alone_health_s"])
        checks.append(("UI index within 1 s of launch", f"{med(st['front_index_s']):.2f} s", mark(med(st["front_index_s"]) <= 1.0)))
        checks.append(
            ("/health 200 within 1 s of MLflow's own", f"{med(lag_child):+.2f} s after its child, {lag_alone:+.2f} s vs MLflow alone", mark(med(lag_child) <= 1.0 and lag_alone <= 1.0))
        )
    if "tree" in work:
        out += ["### MLflow's own process tree", "", "| `mlflow server` | processes | RSS MiB | start s | stop s |", "|---|---|---|---|---|"]
        for name, row in work["tree"].items():
            out.append(f"| {name} | {row['processes']} | {row['rss_mib']:.0f} | {row['start_s']} | {row['stop_s']} |")
        out.append("")
    out += ["### Targets", "", "| target | measured | |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in checks), ""]
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(render(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
