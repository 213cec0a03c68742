"""`ammkd bench`: load time, latency, peak memory and throughput of every target a bundle holds.

Each target is measured in a fresh worker process (`python -m ammkd.tools.bench --worker`),
so its load time is a cold load, its peak resident memory is its own, and runtimes whose thread
pools are process-wide (ExecuTorch) get the thread count asked for. Latency is batch 1 on the
bundle's golden input: warm-up runs, then timed runs (median, p90, min, max in ms). Throughput is
images per second at `batch` for targets with a dynamic batch, else batch 1 repeated. Index
search is the exact top-k of the apps over the bundle's class vectors, in this process.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ammkd.bundle.backends import why_not_runnable_here
from ammkd.bundle.format import BundleReader
from ammkd.common.errors import BundleError, ConfigError
from ammkd.tools.latency import measure_latency

WORKER_TIMEOUT_S = 600


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def measure_target(bundle_dir: str, fmt: str, quantization: str, threads: int, warmup: int, runs: int, batch: int):
    """One target, in this process: {"load_ms", "latency" {...}, "throughput_ips", "peak_rss_mb", ...}."""
    from ammkd.bundle.backends import open_image_encoder

    bundle = BundleReader.open(bundle_dir)
    x = bundle.read_array(bundle.manifest["golden"][0]["input"]).astype(np.float32)
    _import_runtime(fmt)  # a one-off cost of this Python process, not of loading the model
    rss_before = _peak_rss_mb()
    t0 = time.perf_counter()
    encoder, target = open_image_encoder(bundle, fmt, quantization, threads)
    encoder.embed(x)  # the first run (graph preparation, allocations) counts as loading
    load_ms = (time.perf_counter() - t0) * 1e3
    latency = measure_latency(encoder.embed, x, warmup, runs)
    n = batch if encoder.batch is None else (encoder.batch or 1)
    xb = np.repeat(x, n, axis=0)
    encoder.embed(xb)
    reps = max(3, runs // max(n, 1))
    t0 = time.perf_counter()
    for _ in range(reps):
        encoder.embed(xb)
    ips = reps * n / (time.perf_counter() - t0)
    return {
        "load_ms": round(load_ms, 2),
        "latency": latency,
        "throughput_batch": n,
        "throughput_ips": round(ips, 1),
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_load_mb": rss_before,
        "bytes": target["bytes"],
    }


def _import_runtime(fmt: str) -> None:
    if fmt == "executorch":
        import executorch.extension.pybindings.portable_lib  # noqa: F401
        import executorch.runtime  # noqa: F401
    elif fmt in ("onnx", "ort"):
        import onnxruntime  # noqa: F401


def _run_worker(bundle_dir: Path, target: dict, threads: int, warmup: int, runs: int, batch: int) -> dict:
    cmd = [sys.executable, "-m", "ammkd.tools.bench", "--worker", str(bundle_dir), target["format"]]
    cmd += [target["quantization"], str(threads), str(warmup), str(runs), str(batch)]
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"no result within {WORKER_TIMEOUT_S} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "failed", "reason": tail}
    return {"status": "ok"} | json.loads(lines[-1])


def bench_bundle(
    bundle_dir: str | Path, threads: int = 1, warmup: int = 10, runs: int = 50, batch: int = 8, search_runs: int = 200
) -> dict:
    """Every image encoder target of the bundle, each in its own process, plus index search."""
    if threads < 1 or warmup < 0 or runs < 1 or batch < 1:
        raise ConfigError("bench: threads, runs and batch must be >= 1 and warmup >= 0")
    bundle = BundleReader.open(bundle_dir)
    rows = []
    for t in bundle.manifest["targets"]:
        row = {"target": f"{t['format']}/{t['quantization']}", "dtype": t["dtype"], "threads": threads}
        reason = why_not_runnable_here(t)
        if reason:
            rows.append(row | {"status": "skipped", "reason": reason})
            continue
        rows.append(row | _run_worker(bundle.root, t, threads, warmup, runs, batch))
    idx = bundle.manifest["index"]
    index = bundle.read_array(idx["vectors"]).astype(np.float32)
    query = bundle.read_array(bundle.manifest["golden"][0]["embedding"]).astype(np.float32).reshape(-1)
    from threadpoolctl import threadpool_limits

    from ammkd.bundle.search import topk

    with threadpool_limits(threads):  # the scan uses BLAS: pinned like the encoders
        search = measure_latency(lambda q: topk(q, index, 10), query, 10, search_runs)
    return {
        "bundle": str(bundle.root),
        "model": bundle.manifest["model"]["id"],
        "image_size": bundle.manifest["input"]["size"],
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "targets": rows,
        "index_search": {"count": idx["count"], "dim": idx["dim"], "k": 10, "threads": threads, "exact_numpy": search},
    }


def main(argv: list[str]) -> None:
    """Worker entry point: `--worker BUNDLE FORMAT QUANTIZATION THREADS WARMUP RUNS BATCH`, one JSON line out."""
    if len(argv) != 8 or argv[0] != "--worker":
        raise SystemExit("usage: python -m ammkd.tools.bench --worker BUNDLE FMT QUANT THREADS WARMUP RUNS BATCH")
    bundle, fmt, quant = argv[1:4]
    threads, warmup, runs, batch = (int(a) for a in argv[4:8])
    try:
        print(json.dumps(measure_target(bundle, fmt, quant, threads, warmup, runs, batch)))
    except (BundleError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main(sys.argv[1:])
