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
    t = np.asarray(times)
    return {
        "median_ms": round(float(np.median(t)), 3),
        "p90_ms": round(float(np.percentile(t, 90)), 3),
        "min_ms": round(float(t.min()), 3),
        "max_ms": round(float(t.max()), 3),
        "runs": runs,
    }
