"""Render a results file of bench/run.py as the Markdown tables of docs/benchmarks.md.

    uv run python -m bench.report bench/results/2026-11-23-1930.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


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


def api_table(api: dict) -> tuple[list[str], list[tuple[str, str, str]]]:
    lines = [
        "| call | c | MLflow req/s | nginx req/s | front req/s | front/MLflow | front/nginx | p50 ms MLflow / nginx / front | added p50 ms nginx / front | p99 ms MLflow / nginx / front | proxy CPU ms/request nginx / front | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    checks = []
    for call, by_c in api.items():
        for c, by_setup in by_c.items():
            rps = {s: [r["rps"] for r in runs] for s, runs in by_setup.items()}
            p50 = {s: med([r["p50_ms"] for r in runs]) for s, runs in by_setup.items()}
            p99 = {s: med([r["p99_ms"] for r in runs]) for s, runs in by_setup.items()}
            errors = {s: sum(r["errors"] for r in runs) for s, runs in by_setup.items()}
            cpu = {s: med([r["proxy_cpu_ms"] for r in runs if "proxy_cpu_ms" in r]) for s, runs in by_setup.items()}
            m, n, f = (med(rps.get(s, [])) for s in ("mlflow", "nginx", "front"))
            added_n = p50.get("nginx", float("nan")) - p50.get("mlflow", float("nan"))
            added_f = p50.get("front", float("nan")) - p50.get("mlflow", float("nan"))
            lines.append(
                f"| {call} | {c} | {fmt(rps.get('mlflow', []))} | {fmt(rps.get('nginx', []))} | {fmt(rps.get('front', []))} "
                f"| {ratio(f, m)} | {ratio(f, n)} "
                f"| {p50.get('mlflow', float('nan')):.2f} / {p50.get('nginx', float('nan')):.2f} / {p50.get('front', float('nan')):.2f} "
                f"| {added_n:+.2f} / {added_f:+.2f} "
                f"| {p99.get('mlflow', float('nan')):.1f} / {p99.get('nginx', float('nan')):.1f} / {p99.get('front', float('nan')):.1f} "
                f"| {cpu.get('nginx', float('nan')):.2f} / {cpu.get('front', float('nan')):.2f} "
                f"| {errors.get('mlflow', 0)} / {errors.get('nginx', 0)} / {errors.get('front', 0)} |"
            )
            checks.append((f"API {call} c={c}: req/s ≥ 0.95 × MLflow", ratio(f, m), mark(m > 0 and f / m >= 0.95)))
            checks.append((f"API {call} c={c}: added p50 ≤ nginx's + 0.3 ms", f"{added_f:+.2f} vs {added_n:+.2f} ms", mark(added_f <= added_n + 0.3)))
    return lines, checks


def render(results: dict) -> str:
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    work = results.get("workloads", {})
    out = [
        f"Run of {meta.get('date', '?')}: `{meta.get('command', '?')}`, {meta.get('repeats')} repeats of {meta.get('seconds')} s "
        f"per wrk figure, {meta.get('minutes', '?')} min. Machine: {machine.get('cpu')}, {machine.get('cores')} cores, "
        f"{machine.get('memory_gib')} GiB, Linux {machine.get('kernel')}. Load average before/after: "
        f"{meta.get('load_before')} / {meta.get('load_after')}. Versions: Python {machine.get('python')}, MLflow "
        f"{machine.get('mlflow')}, uvicorn {machine.get('uvicorn')}, Starlette {machine.get('starlette')}, httpx "
        f"{machine.get('httpx')}, nginx {machine.get('nginx')}, wrk {machine.get('wrk')}, mlflow-app at {machine.get('git')}."
        + (f" Note: {meta['note']}" if meta.get("note") else ""),
        "",
        "Figures are medians of the repeats, with (min–max) where repeated.",
        "",
    ]
    checks: list[tuple[str, str, str]] = []
    if "api" in work:
        lines, api_checks = api_table(work["api"])
        out += ["### API calls (wrk, 1 thread)", "", *lines, ""]
        checks += api_checks
    if "ui" in work:
        ui = work["ui"]
        raw = ui["raw_bytes"]
        out += [
            "### The UI's first load",
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
            f"### Artifact of {art['mib']} MiB (curl, PUT then GET through the mlflow-artifacts API)",
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
        checks.append(("Artifact upload ≥ 0.9 × MLflow's MB/s", ratio(up_f, up_m), mark(up_m > 0 and up_f / up_m >= 0.9)))
        checks.append(("Artifact download ≥ 0.9 × MLflow's MB/s", ratio(down_f, down_m), mark(down_m > 0 and down_f / down_m >= 0.9)))
        checks.append((f"Front memory growth < 50 MiB for {art['mib']} MiB", f"{max(growth, default=0):.1f} MiB (max)", mark(max(growth, default=0) < 50)))
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
    if "memory_idle" in results:
        idle = results["memory_idle"]
        api_load = results.get("memory_api_load", {})
        ui_load = results.get("memory_ui_load", {})
        out += [
            "### Memory (resident, MiB)",
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
        checks.append(("Front idle < 80 MiB", f"{idle['front_mib']:.0f} MiB", mark(idle["front_mib"] < 80)))
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
