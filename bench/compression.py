"""Compressed API answers: bytes saved and CPU spent per codec, on answers real MLflow produced.

    uv run python -m bench.compression                      # 5-8 minutes on a busy 2-core machine
    uv run python -m bench.compression --rounds 3 --note "..."

Fills a temporary SQLite store through MlflowClient (1,000 runs with 20 params, 20 metrics and 5
tags each; 300 experiments; 5 runs with 10,000 points of one metric; 100 logged models), asks
MLflow's own Flask app (its real handlers) for the answers the UI and clients fetch, and
compresses each body with the encoders of `proxy.forwarding.compression`, fed 64 KiB chunks as the forwarder
passes them on. For each large answer and codec: bytes out, CPU per answer (time.process_time
over repeats, median of rounds), MB/s, the client's CPU to decompress, memory per response being
compressed, how much input goes in before the first output, and the time saved delivering it
over 10 and 100 Mbit/s links and loopback. For small answers (the threshold): the front's CPU
per answer through the module as the forwarder uses it, and the cost of `encoder_for` saying no.
Results go to bench/results/compression-<date>-<time>.json with the machine, versions and load
average.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import random
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import brotli

from bench.machine import load_average, machine
from proxy.forwarding.compression import BROTLI, GZIP, ResponseCompression, StreamEncoder, compressed_headers

RESULTS = Path(__file__).with_name("results")
API = "/api/2.0/mlflow"
AJAX = "/ajax-api/2.0/mlflow"
LINKS_MBIT = (10, 100)

RUNS = 1000
PARAMS = 20
METRICS = 20
EXPERIMENTS = 300
HISTORY_POINTS = 10_000
HISTORY_RUNS = 5
LOGGED_MODELS = 100
SMALL_SEARCHES = (1, 2, 4, 8, 16, 32)  # experiments/search answers of ~0.8 to ~18 KB
SMALL_ANSWER_BYTES = 64 * 1024  # below this, only the codecs the module ships are measured


@dataclass(frozen=True)
class Answer:
    """One MLflow answer as the front would receive it."""

    name: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    mlflow_ms: float  # wall time of MLflow's handler for it (Flask test client, SQLite), for scale


@dataclass(frozen=True)
class Codec:
    label: str
    encoding: bytes | None  # None: zstandard's zstd, only when that package is installed
    level: int
    window_bits: int | None = None  # brotli only; None: the module's


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# --- the answers -------------------------------------------------------------------------------

PARAM_NAMES = [
    "learning_rate", "batch_size", "optimizer", "n_estimators", "max_depth", "dropout", "weight_decay",
    "epochs", "seed", "model_name", "warmup_steps", "scheduler", "num_layers", "hidden_size",
    "activation", "loss_function", "data_path", "augmentation", "momentum", "early_stopping_patience",
]  # fmt: skip
METRIC_NAMES = [
    "train_loss", "val_loss", "train_accuracy", "val_accuracy", "precision", "recall", "f1", "roc_auc",
    "pr_auc", "log_loss", "mae", "rmse", "r2", "epoch_time_s", "learning_rate_current", "grad_norm",
    "throughput_samples_s", "gpu_memory_gb", "val_precision_macro", "val_recall_macro",
]  # fmt: skip


def param_value(rng: random.Random, name: str) -> str:
    choices = {
        "optimizer": ["adam", "adamw", "sgd", "rmsprop"],
        "model_name": ["resnet50", "bert-base-uncased", "xgboost", "lightgbm", "distilbert-base"],
        "scheduler": ["cosine", "linear", "step", "none"],
        "activation": ["relu", "gelu", "tanh", "silu"],
        "loss_function": ["cross_entropy", "focal", "mse", "huber"],
        "augmentation": ["none", "flip", "flip+crop", "randaugment"],
        "data_path": [f"s3://ml-data/datasets/churn/v{v}/train.parquet" for v in range(1, 9)],
    }
    if name in choices:
        return rng.choice(choices[name])
    if name in ("learning_rate", "weight_decay", "dropout", "momentum"):
        return repr(round(rng.uniform(1e-5, 0.5), rng.randint(2, 6)))
    return str(rng.choice([8, 16, 32, 64, 100, 128, 200, 256, 500, 512, 1000, 1024, 42, 7, 3]))


def fill_store(tracking_uri: str, artifact_root: str) -> dict:
    """The data the answers are made of; returns the ids the requests name."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    rng = random.Random(20261128)
    client = MlflowClient(tracking_uri=tracking_uri)
    now_ms = 1_764_300_000_000
    experiment_id = client.create_experiment("churn-model-sweep", artifact_location=f"{artifact_root}/sweep")
    for i in range(EXPERIMENTS - 1):
        client.create_experiment(
            f"/Users/user{i % 37}@example.com/project-{i}",
            artifact_location=f"{artifact_root}/e{i}",
            tags={"team": rng.choice(["ranking", "fraud", "search", "forecasting"]), "mlflow.note.content": f"Sweep {i} of the quarterly model refresh."},
        )
    run_ids = []
    for i in range(RUNS):
        run = client.create_run(
            experiment_id,
            start_time=now_ms + i * 60_000,
            tags={
                "mlflow.user": f"user{i % 7}@example.com",
                "mlflow.source.name": "/Workspace/Users/someone@example.com/train.py",
                "mlflow.source.type": "NOTEBOOK",
                "mlflow.source.git.commit": "%040x" % rng.getrandbits(160),
                "team": "ranking",
            },
        )
        step = rng.randint(10, 500)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(key, rng.uniform(0, 1) * (10 ** rng.randint(-3, 3)), now_ms + i * 60_000 + 5_000, step) for key in METRIC_NAMES[:METRICS]],
            params=[Param(key, param_value(rng, key)) for key in PARAM_NAMES[:PARAMS]],
            synchronous=True,
        )
        client.set_terminated(run.info.run_id, end_time=now_ms + i * 60_000 + 50_000)
        run_ids.append(run.info.run_id)
    history_experiment = client.create_experiment("long-training", artifact_location=f"{artifact_root}/long")
    history_runs = []
    for r in range(HISTORY_RUNS):
        run_id = client.create_run(history_experiment, start_time=now_ms).info.run_id
        loss = 2.5
        for start in range(0, HISTORY_POINTS, 1000):
            points = []
            for step in range(start, start + 1000):
                loss = max(0.01, loss * (1 - rng.uniform(0, 0.001)) + rng.gauss(0, 0.002))
                points.append(Metric("train_loss", loss, now_ms + step * 1_500 + rng.randint(0, 999), step))
            client.log_batch(run_id, metrics=points, synchronous=True)
        history_runs.append(run_id)
    model_experiment = client.create_experiment("models", artifact_location=f"{artifact_root}/models")
    for m in range(LOGGED_MODELS):
        model = client.create_logged_model(
            model_experiment,
            name=f"model-{m}",
            params={key: param_value(rng, key) for key in PARAM_NAMES[:10]},
            tags={"mlflow.user": f"user{m % 7}@example.com", "stage": rng.choice(["candidate", "baseline"])},
        )
        client.log_batch(
            run_ids[m],
            metrics=[Metric(key, rng.uniform(0, 1), now_ms, 0, model_id=model.model_id) for key in METRIC_NAMES[:5]],
            synchronous=True,
        )
    return {
        "experiment_id": experiment_id,
        "run_id": run_ids[0],
        "history_run_id": history_runs[0],
        "history_run_ids": history_runs,
        "model_experiment_id": model_experiment,
    }


def fetch_answers(workdir: Path) -> list[Answer]:
    """Fill a fresh SQLite store and ask MLflow's Flask app (its real handlers) for each answer."""
    tracking_uri = f"sqlite:///{workdir}/mlflow.db"
    artifact_root = (workdir / "artifacts").as_uri()
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = tracking_uri  # read by mlflow.server.handlers
    os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = artifact_root
    started = time.monotonic()
    ids = fill_store(tracking_uri, artifact_root)
    log(f"store filled in {time.monotonic() - started:.0f} s")
    from mlflow.server import app  # the Flask app `mlflow server` mounts; imported late: ~6 CPU-s

    client = app.test_client()
    requests = [
        ("runs/search (1,000 runs)", "POST", f"{AJAX}/runs/search", {"experiment_ids": [ids["experiment_id"]], "max_results": RUNS}),
        ("runs/search (100 runs)", "POST", f"{AJAX}/runs/search", {"experiment_ids": [ids["experiment_id"]], "max_results": 100}),
        ("experiments/search (300)", "POST", f"{AJAX}/experiments/search", {"max_results": 1000}),
        ("metrics/get-history (10,000 points)", "GET", f"{API}/metrics/get-history?run_id={ids['history_run_id']}&metric_key=train_loss", None),
        (
            "get-history-bulk-interval (5 runs)",
            "GET",
            f"{AJAX}/metrics/get-history-bulk-interval?" + "&".join(f"run_ids={run_id}" for run_id in ids["history_run_ids"]) + "&metric_key=train_loss&max_results=320",
            None,
        ),
        ("logged-models/search (100)", "POST", f"{AJAX}/logged-models/search", {"experiment_ids": [ids["model_experiment_id"]], "max_results": 100}),
        ("runs/get (1 run)", "GET", f"{API}/runs/get?run_id={ids['run_id']}", None),
        ("experiments/get", "GET", f"{API}/experiments/get?experiment_id={ids['experiment_id']}", None),
    ]
    requests += [  # small answers of growing size, for the threshold
        (f"experiments/search ({n})", "POST", f"{AJAX}/experiments/search", {"max_results": n}) for n in SMALL_SEARCHES
    ]
    answers = []
    for name, method, url, payload in requests:
        started = time.perf_counter()
        response = client.open(url, method=method, json=payload)
        mlflow_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{name}: {response.status_code} {response.get_data()[:300]!r}")
        headers = [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in response.headers.items()]
        answers.append(Answer(name, url.split("?")[0], headers, response.get_data(), round(mlflow_ms, 1)))
    return answers


# --- the measurements --------------------------------------------------------------------------


def encoder(codec: Codec):
    if codec.encoding is None:
        import zstandard

        return _ZstdEncoder(zstandard.ZstdCompressor(level=codec.level).compressobj())
    if codec.window_bits is not None:
        return _BrotliWindowEncoder(codec.level, codec.window_bits)
    return StreamEncoder(codec.encoding, codec.level)


class _ZstdEncoder:
    def __init__(self, compressobj) -> None:
        self._obj = compressobj

    def compress(self, chunk: bytes) -> bytes:
        return self._obj.compress(chunk)

    def finish(self, chunk: bytes = b"") -> bytes:
        return self._obj.compress(chunk) + self._obj.flush()


class _BrotliWindowEncoder:
    """Brotli with another window than the module's, to show why the module limits it."""

    def __init__(self, quality: int, window_bits: int) -> None:
        self._obj = brotli.Compressor(mode=brotli.MODE_TEXT, quality=quality, lgwin=window_bits)

    def compress(self, chunk: bytes) -> bytes:
        return self._obj.process(chunk)

    def finish(self, chunk: bytes = b"") -> bytes:
        return self._obj.process(chunk) + self._obj.finish()


def compress_streamed(codec: Codec, body: bytes, chunk_bytes: int) -> tuple[bytes, int | None]:
    """The whole compressed body, and how many input bytes went in before the first output."""
    enc = encoder(codec)
    parts = []
    first_output_after = None
    chunks = [body[i : i + chunk_bytes] for i in range(0, len(body), chunk_bytes)] or [b""]
    for i, chunk in enumerate(chunks[:-1]):
        out = enc.compress(chunk)
        if out and first_output_after is None:
            first_output_after = (i + 1) * chunk_bytes
        parts.append(out)
    parts.append(enc.finish(chunks[-1]))
    return b"".join(parts), first_output_after


def decompress(codec: Codec, data: bytes) -> bytes:
    if codec.encoding == GZIP:
        return zlib.decompress(data, 31)
    if codec.encoding == BROTLI:
        return brotli.decompress(data)
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def cpu_ms(work, repeats: int, rounds: int) -> float:
    """Median over `rounds` of the process CPU time per call of `work`, in ms."""
    per_call = []
    for _ in range(rounds):
        gc.disable()
        started = time.process_time()
        for _ in range(repeats):
            work()
        per_call.append((time.process_time() - started) / repeats * 1000)
        gc.enable()
    return statistics.median(per_call)


def repeats_for(body: bytes, target_bytes: int) -> int:
    """Enough repeats that one round compresses about `target_bytes` (timer resolution on small bodies)."""
    return max(1, min(2000, target_bytes // max(1, len(body))))


def memory_per_stream_kib(codec: Codec, body: bytes, chunk_bytes: int, streams: int = 24) -> float:
    """RSS added by one response being compressed (half-way through), in a fresh subprocess."""
    code = (
        "import sys, psutil, bench.compression as b\n"
        f"codec = b.Codec({codec.label!r}, {codec.encoding!r}, {codec.level}, {codec.window_bits!r})\n"
        "body = sys.stdin.buffer.read()\n"
        "p = psutil.Process(); before = p.memory_info().rss; live = []\n"
        f"for _ in range({streams}):\n"
        "    e = b.encoder(codec)\n"
        f"    for i in range(0, len(body) // 2, {chunk_bytes}): e.compress(body[i:i + {chunk_bytes}])\n"
        "    live.append(e)\n"
        f"print((p.memory_info().rss - before) / {streams} / 1024)\n"
    )
    out = subprocess.run(["python", "-c", code], input=body, capture_output=True, check=True, cwd=Path(__file__).parent.parent)
    return round(float(out.stdout), 0)


def loopback_mb_per_s(size: int = 64 * 2**20) -> float:
    """Throughput of one TCP loopback connection here, sending `size` bytes in 64 KiB writes."""
    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    receiver, _ = server.accept()
    chunk = b"x" * 65536

    def drain() -> None:
        buffer = bytearray(1 << 20)
        received = 0
        while received < size:
            received += receiver.recv_into(buffer)

    thread = threading.Thread(target=drain)
    started = time.perf_counter()
    thread.start()
    for _ in range(size // len(chunk)):
        sender.sendall(chunk)
    thread.join()
    elapsed = time.perf_counter() - started
    for s in (sender, receiver, server):
        s.close()
    return size / elapsed / 1e6


def delivery_ms(raw: int, out: int, compress_ms: float, decompress_ms: float, link_mb_per_s: float) -> dict:
    """Time for the body to reach the client's application, uncompressed and compressed.

    Compression streams alongside the transfer, so the slower stage sets the pace:
    max(compress CPU, transfer of the compressed bytes), plus the client's decompression.
    """
    plain = raw / link_mb_per_s / 1e3
    compressed = max(compress_ms, out / link_mb_per_s / 1e3) + decompress_ms
    return {"plain_ms": round(plain, 2), "compressed_ms": round(compressed, 2), "saved_ms": round(plain - compressed, 2)}


def measure(answer: Answer, codec: Codec, chunk_bytes: int, rounds: int, target_bytes: int, loopback: float) -> dict:
    body = answer.body
    out, first_output_after = compress_streamed(codec, body, chunk_bytes)
    if decompress(codec, out) != body:
        raise AssertionError(f"{codec.label} round trip failed on {answer.name}")
    repeats = repeats_for(body, target_bytes)
    compress_ms = cpu_ms(lambda: compress_streamed(codec, body, chunk_bytes), repeats, rounds)
    decompress_ms = cpu_ms(lambda: decompress(codec, out), repeats, rounds)
    links = {f"{mbit}mbit": delivery_ms(len(body), len(out), compress_ms, decompress_ms, mbit / 8) for mbit in LINKS_MBIT}
    links["loopback"] = delivery_ms(len(body), len(out), compress_ms, decompress_ms, loopback)
    return {
        "answer": answer.name,
        "codec": codec.label,
        "bytes_in": len(body),
        "bytes_out": len(out),
        "ratio": round(len(out) / len(body), 4),
        "cpu_ms": round(compress_ms, 3),
        "mb_per_s": round(len(body) / compress_ms / 1e3, 1) if compress_ms else None,
        "decompress_cpu_ms": round(decompress_ms, 3),
        "first_output_after_bytes": first_output_after,
        "links": links,
    }


def whole_answer_us(answer: Answer, rounds: int) -> list[dict]:
    """Front CPU per answer through the module as the forwarder will use it, in microseconds:
    the decision, the encoder, the whole body in one `finish`, the new headers; and the cost of
    a "no" when the answer is below the default threshold."""
    rows = []
    n = max(200, 4_000_000 // max(1, len(answer.body)))
    for accept in (b"br", b"gzip"):
        policy = ResponseCompression(min_bytes=0)

        def compress_whole() -> bytes:
            encoder = policy.encoder_for("GET", answer.path, accept, 200, answer.headers)
            compressed_headers(answer.headers, encoder.content_encoding)
            return encoder.finish(answer.body)

        out = compress_whole()
        rows.append(
            {
                "answer": answer.name,
                "bytes_in": len(answer.body),
                "codec": f"{accept.decode()} (module default level)",
                "bytes_out": len(out),
                "yes_us": round(cpu_ms(compress_whole, n, rounds) * 1e3, 1),
            }
        )
    default = ResponseCompression()
    browser = b"gzip, deflate, br, zstd"
    if len(answer.body) < default.min_bytes:
        no_ns = cpu_ms(lambda: default.encoder_for("GET", answer.path, browser, 200, answer.headers), 200_000, rounds) * 1e6
        for row in rows:
            row["no_ns"] = round(no_ns)
    return rows


def codecs() -> list[Codec]:
    chosen = [
        Codec("gzip 1", GZIP, 1),
        Codec("gzip 6", GZIP, 6),
        Codec("br 1", BROTLI, 1),
        Codec("br 4", BROTLI, 4),
        Codec("br 5", BROTLI, 5),
        Codec("br 4, 4 MiB window", BROTLI, 4, 22),
    ]
    try:
        import zstandard  # noqa: F401  (not a dependency: measured only where installed)

        chosen += [Codec("zstd 1", None, 1), Codec("zstd 3", None, 3)]
    except ImportError:
        pass
    return chosen


def print_table(result: dict) -> None:
    print("\n| answer | raw bytes | codec | bytes out | ratio | CPU ms | MB/s | client ms | memory KiB | first out after | saved ms 10 Mbit/s | saved ms 100 Mbit/s | saved ms loopback |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        links = row["links"]
        first = row["first_output_after_bytes"]
        memory = row.get("memory_kib")
        print(
            f"| {row['answer']} | {row['bytes_in']:,} | {row['codec']} | {row['bytes_out']:,} | {row['ratio']:.3f} | "
            f"{row['cpu_ms']:.2f} | {row['mb_per_s'] or 0:.0f} | {row['decompress_cpu_ms']:.2f} | "
            f"{'–' if memory is None else f'{memory:,.0f}'} | {'end' if first is None else f'{first:,}'} | "
            f"{links['10mbit']['saved_ms']:+.1f} | {links['100mbit']['saved_ms']:+.1f} | {links['loopback']['saved_ms']:+.2f} |"
        )
    print("\n| small answer | raw bytes | coding | bytes out | front CPU µs to compress | encoder_for's no, ns |")
    print("|---|---|---|---|---|---|")
    for row in result["small_answers"]:
        no = row.get("no_ns")
        print(f"| {row['answer']} | {row['bytes_in']:,} | {row['codec']} | {row['bytes_out']:,} | {row['yes_us']:.1f} | {'–' if no is None else no} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure; the median is kept (5)")
    parser.add_argument("--target-mib", type=float, default=8, help="MiB compressed per round, at least one answer (8)")
    parser.add_argument("--chunk-kib", type=int, default=64, help="body chunk size fed to the encoder (64)")
    parser.add_argument("--note", default="", help="a free-text note stored with the results")
    args = parser.parse_args()

    load_before = load_average()
    started = datetime.datetime.now()
    with tempfile.TemporaryDirectory(prefix="bench-compression-") as tmp:
        answers = fetch_answers(Path(tmp))
    chunk_bytes = args.chunk_kib * 1024
    target_bytes = int(args.target_mib * 2**20)
    loopback = loopback_mb_per_s()
    log(f"loopback: {loopback:.0f} MB/s")
    rows = []
    large = [answer for answer in answers if len(answer.body) >= SMALL_ANSWER_BYTES]
    for answer in large:
        for codec in codecs():
            row = measure(answer, codec, chunk_bytes, args.rounds, target_bytes, loopback)
            if answer is large[0]:
                row["memory_kib"] = memory_per_stream_kib(codec, answer.body, chunk_bytes)
            rows.append(row)
            log(f"{answer.name:38} {codec.label:20} {row['bytes_in']:>9,} -> {row['bytes_out']:>9,} {row['cpu_ms']:8.2f} ms")
    small = sorted((a for a in answers if len(a.body) < SMALL_ANSWER_BYTES), key=lambda a: len(a.body))
    whole = [row for answer in small for row in whole_answer_us(answer, args.rounds)]
    result = {
        "started": started.isoformat(timespec="seconds"),
        "command": "python -m bench.compression " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v != ""),
        "note": args.note,
        "machine": {**machine(("mlflow", "brotli", "zstandard")), "zlib": zlib.ZLIB_RUNTIME_VERSION},
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "loopback_mb_per_s": round(loopback),
        "chunk_bytes": chunk_bytes,
        "answers": [{"name": a.name, "path": a.path, "bytes": len(a.body), "mlflow_ms": a.mlflow_ms, "headers": [[k.decode(), v.decode()] for k, v in a.headers]} for a in answers],
        "rows": rows,
        "small_answers": whole,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"compression-{started:%Y-%m-%d-%H%M}.json"
    out.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"\nload average before/after: {result['load_average_before']} / {result['load_average_after']}; written {out}")


if __name__ == "__main__":
    main()
