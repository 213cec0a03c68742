"""Distillation step time with cached teacher outputs vs teachers run online every step.

    uv run --frozen --no-sync python benchmarks/teacher_cache.py --steps 60

Same teachers, student, data, batch and augmentation; only `teacher_outputs` differs. `cached`
reads each teacher's fp16 embeddings of the train images from a memory-mapped file (built once:
its one-off cost is reported as `cache_build_s`); `online` runs every teacher's image tower on
each step's crops. Defaults: the two Flickr8k teachers of `benchmarks/flickr8k.py` (run it
first) and its student, MobileNetV3-Large at 96 px, batch 128, on Flickr8k train.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_util import write_results

from ammkd.distill.data import load_split
from ammkd.distill.image_tensors import image_tensor
from ammkd.distill.schedule import read_log
from ammkd.distill.teachers import load_teacher
from ammkd.distill.train import DistillConfig, distill

ROOT = Path(__file__).resolve().parents[1]
FLICKR_RUNS = ROOT / "runs" / "bench-flickr8k" / "budget-1"


def _step_seconds(log: Path, skip: int) -> list[float]:
    """Seconds per step between consecutive logged records (every 5 steps), after `skip` steps."""
    recs = [r for r in read_log(log) if r["step"] >= skip]
    return [(b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) for a, b in zip(recs, recs[1:])]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teachers", default=f"{FLICKR_RUNS / 'teacher_rn'},{FLICKR_RUNS / 'teacher_convnext'}")
    ap.add_argument("--data", default=f"flickr8k:{ROOT.parent / 'shared' / 'data' / 'flickr8k'}:train")
    ap.add_argument("--student", default="ammkd-mnv3-large")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per mode (the first 5 are warm-up)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-teacher-cache")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="", help="suffix of the result files: teacher_cache_<name>.{json,md}")
    args = ap.parse_args(argv)
    teachers = [t for t in args.teachers.split(",") if t]
    data = load_split(args.data, "train")
    epochs = (args.steps + 0.5) / max(1, len(data) // args.batch_size)

    cache_build_s = 0.0  # the one-off cost of the cache: every teacher over every train image
    for spec in teachers:
        teacher = load_teacher(spec)
        images, _, _ = image_tensor(data, teacher.spec)
        t0 = time.time()
        teacher.encode_images(images)
        cache_build_s += time.time() - t0
    cache_build_s = round(cache_build_s, 1)

    modes = {}
    for mode in ("cached", "online"):
        out = args.runs / (args.name or "default") / mode
        shutil.rmtree(out, ignore_errors=True)
        cfg = DistillConfig(
            teachers=teachers,
            data=args.data,
            student=args.student,
            image_size=args.image_size,
            epochs=epochs,
            batch_size=args.batch_size,
            aug_scale=[0.6, 1.0],
            teacher_outputs=mode,
            checkpoint_every=0,
        )
        distill(cfg, out, overwrite=True)
        per_step = _step_seconds(out / "metrics.jsonl", skip=5)
        modes[mode] = {"median_s_per_step": round(statistics.median(per_step), 4), "samples": len(per_step)}
        print(mode, modes[mode], flush=True)
    results = {
        "benchmark": "distillation-step-time-teacher-cache",
        "teachers": [
            str(Path(t).resolve().relative_to(ROOT)) if Path(t).resolve().is_relative_to(ROOT) else t for t in teachers
        ],
        "data": args.data,
        "student": f"{args.student} at {args.image_size}px",
        "batch_size": args.batch_size,
        "cache_build_s": cache_build_s,
        "modes": modes,
        "speedup_cached_vs_online": round(
            modes["online"]["median_s_per_step"] / modes["cached"]["median_s_per_step"], 2
        ),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "threads": torch.get_num_threads()},
        "command": "uv run --frozen --no-sync python benchmarks/teacher_cache.py " + " ".join(argv or sys.argv[1:]),
    }
    md = "\n".join(
        [
            "# Distillation step time: cached vs online teacher outputs",
            "",
            f"Student {results['student']}, batch {args.batch_size}, {len(teachers)} teachers, on {args.data}; "
            f"{results['machine']['cpus']} CPU cores. Median seconds per optimizer step after 5 warm-up steps.",
            "",
            "| teacher outputs | s / step |",
            "|---|---:|",
            *[f"| {m} | {v['median_s_per_step']:.3f} |" for m, v in modes.items()],
            "",
            f"Cached is {results['speedup_cached_vs_online']}x faster per step; building the cache "
            f"(every teacher over every train image, once) took {cache_build_s} s.",
            "",
            f"Command: `{results['command']}`",
            "",
        ]
    )
    stem = "teacher_cache" + (f"_{args.name}" if args.name else "")
    write_results(args.results, stem, results, md, echo=False)
    return results


if __name__ == "__main__":
    main()
