"""`ammkd bench` of one bundle, written as committed results (JSON + Markdown).

    uv run --frozen --no-sync python benchmarks/bench.py --bundle runs/bench-export/demo/quantized --name demo

Each target of the bundle in a fresh worker process (`tools.bench.bench_bundle`): load
time, batch-1 latency (warm-up, then `--runs` timed runs), throughput, peak resident memory;
and the exact index search the apps run. Writes `results/bench_<name>.{json,md}`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench_util import cpu_model, relative, write_results

from ammkd.tools.bench import bench_bundle

ROOT = Path(__file__).resolve().parents[1]


def _markdown(r: dict, name: str, warmup: int, runs: int) -> str:
    statics = {t.get("throughput_batch") for t in r["targets"] if t["status"] == "ok"}
    batch = (
        "batch 1 repeated (these targets have a static batch of 1)"
        if statics == {1}
        else "a larger batch where the model allows it"
    )
    lines = [
        f"# `ammkd bench` of the {name} bundle ({r['model']}, {r['image_size']} px)",
        "",
        f"Each target in a fresh process, {r['targets'][0]['threads']} thread(s), batch 1 on the golden input: "
        f"{warmup} warm-up runs then {runs} timed runs. Load = session/program creation plus the first run "
        f"(the runtime's Python import excluded). Throughput: {batch}. Peak RSS: the worker process "
        "(Python + runtime + model; the ExecuTorch Python runtime imports torch, hence its size).",
        "",
        "| target | load ms | median ms | p90 ms | min ms | max ms | images/s | RSS before load MB | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in r["targets"]:
        if t["status"] != "ok":
            lines.append(f"| {t['target']} | {t['status']}: {t['reason']} ||||||||")
            continue
        lat = t["latency"]
        lines.append(
            f"| {t['target']} | {t['load_ms']:.1f} | {lat['median_ms']:.3f} | {lat['p90_ms']:.3f} | "
            f"{lat['min_ms']:.3f} | {lat['max_ms']:.3f} | {t['throughput_ips']:.0f} | "
            f"{t['rss_before_load_mb']:.0f} | {t['peak_rss_mb']:.0f} |"
        )
    s = r["index_search"]
    lat = s["exact_numpy"]
    lines += [
        "",
        f"Index search (exact NumPy, the apps' algorithm, {s['threads']} thread(s)): top-{s['k']} of "
        f"{s['count']:,} x {s['dim']} fp16 class vectors in {lat['median_ms']:.2f} ms median "
        f"(p90 {lat['p90_ms']:.2f}).",
        "",
        f"Machine: {r['machine']}",
        "",
        f"Command: `{r['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--name", required=True, help="results/bench_<name>.{json,md}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    r = bench_bundle(args.bundle, threads=args.threads, warmup=args.warmup, runs=args.runs)
    r["bundle"] = relative(r["bundle"])
    r["machine"]["cpu_model"] = cpu_model()
    r["command"] = "uv run --frozen --no-sync python benchmarks/bench.py " + " ".join(argv or sys.argv[1:])
    write_results(args.results, f"bench_{args.name}", r, _markdown(r, args.name, args.warmup, args.runs))
    return r


if __name__ == "__main__":
    main()
