"""Latency of an encoder on this machine: warm-up, then timed single runs."""

from __future__ import annotations

import time

import numpy as np


def measure_latency(run, x: np.ndarray, warmup: int = 5, runs: int = 30) -> dict[str, float]:
    """Call `run(x)` warmup + runs times; milliseconds: median, p90, min, max over the timed runs."""
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return summarize_ms(times)


def summarize_ms(times_ms) -> dict[str, float]:
    """Timings in ms -> median, p90, min, max (rounded to µs) and the number of runs."""
    t = np.asarray(times_ms, dtype=np.float64)
    return {
        "median_ms": round(float(np.median(t)), 3),
        "p90_ms": round(float(np.percentile(t, 90)), 3),
        "min_ms": round(float(t.min()), 3),
        "max_ms": round(float(t.max()), 3),
        "runs": len(t),
    }
