"""Side by side: teacher image encoders vs the student's exported variants, speed and accuracy in one table.

    uv run --frozen --no-sync python benchmarks/compare.py --bundle runs/bench-compare/bundle \
        --teachers runs/demo/teachers/vit,runs/demo/teachers/rn --data synthetic:16000 --name demo

Every model runs in this one process on the same input, batch 1, one thread: the teachers' image
towers and open_clip's ViT-B-32 (random weights: its speed does not depend on them) exported to
ONNX fp32 the way the student is, and every ONNX / ORT / ExecuTorch target of the bundle. Timing is
interleaved: `--rounds` rounds, each timing every model once (warm-up, then `--runs` runs); a
model's figure is the median of its round medians, and each is reported as a ratio to the named
baseline timed in the same rounds, so the ratios survive a noisy machine. Beside the speed:
parameters, MACs per image, file bytes, and mean recall (image<->text R@1/5/10) on `--data`'s val
split (the teachers through PyTorch, every bundle target through its own runtime). Writes
`results/compare_<name>.{json,md}` and a Pareto plot `results/compare_<name>_pareto.png`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_util import write_results

from ammkd.bundle.backends import open_image_encoder, why_not_runnable_here
from ammkd.bundle.format import BundleReader
from ammkd.common.files import atomic_write
from ammkd.distill.teachers import TeacherImageEncoder, load_teacher
from ammkd.export.exporter import macs_per_image
from ammkd.export.onnx_export import export_onnx
from ammkd.tools.evaluate import evaluate, evaluate_bundle
from ammkd.tools.latency import measure_latency

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "open_clip ViT-B-32 (onnx fp32)"


def _teacher_models(teachers: list[str], size: int, work: Path) -> list[dict]:
    """Teacher image towers (and ViT-B-32 at the student's size and at 224) as ONNX encoders."""
    import open_clip

    rows = []
    vit = load_teacher("ViT-B-32")
    specs = [(f"teacher {Path(t).name}", load_teacher(t)) for t in teachers]
    for s in sorted({size, 224}):
        model = open_clip.create_model("ViT-B-32", force_image_size=s).eval()
        name = BASELINE if s == size else f"open_clip ViT-B-32 at {s} px (onnx fp32)"
        specs.append((name, replace(vit, model=model, spec=vit.spec.with_size(s))))
    for name, teacher in specs:
        module = TeacherImageEncoder(teacher).eval()
        s = teacher.spec.size
        path = export_onnx(module, s, work / (name.split(" (")[0].replace(" ", "_") + ".onnx"))
        rows.append(
            {
                "model": name,
                "kind": "teacher",
                "image_size": s,
                "params": sum(p.numel() for p in teacher.model.visual.parameters()),
                "macs_per_image": macs_per_image(module, s),
                "bytes": path.stat().st_size,
                "path": path,
                "teacher": teacher,
            }
        )
    return rows


def _student_models(bundle: BundleReader) -> list[dict]:
    m = bundle.manifest
    return [
        {
            "model": f"student {t['format']}/{t['quantization']}",
            "kind": "student",
            "image_size": m["input"]["size"],
            "params": m["model"]["params"],
            "macs_per_image": m["model"]["macs_per_image"],
            "bytes": t["bytes"],
            "target": t,
        }
        for t in m["targets"]
        if why_not_runnable_here(t) is None
    ]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--teachers", required=True, help="comma-separated teacher folders")
    ap.add_argument("--data", required=True, help="DATA spec; its val split gives the recall")
    ap.add_argument("--name", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-compare" / "onnx")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = BundleReader.open(args.bundle)
    size = bundle.manifest["input"]["size"]
    rows = _teacher_models(args.teachers.split(","), size, args.work) + _student_models(bundle)

    from ammkd.bundle.backends import OnnxImageEncoder

    for r in rows:  # encoders, one thread each
        if r["kind"] == "teacher":
            r["encoder"] = OnnxImageEncoder(r["path"], threads=1)
        else:
            t = r["target"]
            r["encoder"] = open_image_encoder(bundle, t["format"], t["quantization"], threads=1)[0]
    rng = np.random.default_rng(0)
    inputs = {s: rng.random((1, 3, s, s), dtype=np.float32) for s in {r["image_size"] for r in rows}}
    medians: dict[str, list[float]] = {r["model"]: [] for r in rows}
    for _ in range(args.rounds):
        for r in rows:
            x = inputs[r["image_size"]]
            medians[r["model"]].append(measure_latency(r["encoder"].embed, x, 5, args.runs)["median_ms"])
    base = float(np.median(medians[BASELINE]))
    for r in rows:
        r["latency_ms"] = round(float(np.median(medians[r["model"]])), 4)
        r["round_medians_ms"] = medians[r["model"]]
        r["speedup_vs_baseline"] = round(base / r["latency_ms"], 2)
        if r["kind"] == "student":
            t = r["target"]
            rec = evaluate_bundle(args.bundle, _val(args.data), backend=t["format"], quantization=t["quantization"])
        elif "ViT-B-32" in r["model"]:
            rec = None  # random weights: speed only
        else:
            rec = evaluate(str(r["teacher"].name), args.data)
        r["mean_recall"] = None if rec is None else round(rec["mean_recall"], 2)
        for k in ("encoder", "path", "teacher", "target"):
            r.pop(k, None)
    return _write(args, rows, argv)


def _val(data: str):
    from ammkd.distill.data import load_split

    return load_split(data, "val")


def _write(args, rows: list[dict], argv) -> dict:
    best_teacher = max((r for r in rows if r["kind"] == "teacher" and r["mean_recall"]), key=lambda r: r["mean_recall"])
    int8 = next((r for r in rows if r["model"] == "student onnx/int8"), None)
    results = {
        "benchmark": "compare",
        "baseline": BASELINE,
        "threads": 1,
        "rounds": args.rounds,
        "runs_per_round": args.runs,
        "rows": rows,
        "best_teacher": best_teacher["model"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "command": "uv run --frozen --no-sync python benchmarks/compare.py " + " ".join(argv or sys.argv[1:]),
    }
    if int8:
        results["student_int8_speedup_vs_vit_b_32"] = int8["speedup_vs_baseline"]
        results["student_int8_recall_vs_best_teacher"] = round(int8["mean_recall"] / best_teacher["mean_recall"], 3)
    md = [
        f"# Teachers vs student, side by side ({args.name})",
        "",
        f"Batch 1, one thread, ONNX Runtime / ExecuTorch on this CPU; latency is the median of {args.rounds} "
        f"interleaved rounds of {args.runs} runs. Speed-up is relative to **{BASELINE}** at the same input size, "
        "timed in the same rounds. Mean recall: image<->text R@1/5/10 on the val split, each model through its "
        "own runtime (ViT-B-32 has random weights here: speed only).",
        "",
        "| model | input px | params (M) | MACs (M) | MB | latency ms | speed-up | mean recall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['model']} | {r['image_size']} | {r['params'] / 1e6:.2f} | {r['macs_per_image'] / 1e6:.1f} | "
            f"{r['bytes'] / 1e6:.2f} | {r['latency_ms']:.3f} | {r['speedup_vs_baseline']:.1f}x | "
            f"{'' if r['mean_recall'] is None else r['mean_recall']} |"
            for r in rows
        ],
        "",
    ]
    if int8:
        md.append(
            f"Student int8 ONNX: **{int8['speedup_vs_baseline']:.1f}x** faster than ViT-B-32 at "
            f"{int8['image_size']} px; "
            f"mean recall **{results['student_int8_recall_vs_best_teacher']:.0%}** of the best trained teacher "
            f"({best_teacher['model']}, {best_teacher['mean_recall']})."
        )
        md.append("")
    md += [f"Machine: {results['machine']}", "", f"Command: `{results['command']}`", ""]
    write_results(args.results, f"compare_{args.name}", results, md)
    _pareto(rows, args.results / f"compare_{args.name}_pareto.png")
    return results


def _pareto(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r["mean_recall"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for r in pts:
        colour = "tab:blue" if r["kind"] == "student" else "tab:orange"
        ax.scatter(r["latency_ms"], r["mean_recall"], c=colour, s=30)
        ax.annotate(
            r["model"].replace("student ", ""),
            (r["latency_ms"], r["mean_recall"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    front, best = [], -1.0
    for r in sorted(pts, key=lambda r: r["latency_ms"]):
        if r["mean_recall"] > best:
            front.append(r)
            best = r["mean_recall"]
    ax.plot([r["latency_ms"] for r in front], [r["mean_recall"] for r in front], "k--", lw=0.8, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("latency per image, ms (batch 1, one thread, log)")
    ax.set_ylabel("mean recall (%)")
    ax.set_title("speed vs accuracy: teachers (orange), student targets (blue)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()

    def save(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    atomic_write(path, save)
    plt.close(fig)


if __name__ == "__main__":
    main()
