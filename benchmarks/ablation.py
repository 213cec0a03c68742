"""Ablation of the AMMKD method: which part pays for itself.

    uv run --frozen --no-sync python benchmarks/ablation.py --preset synthetic --seeds 0 1 2

Same two frozen teachers, same student, same budget; only the distillation recipe changes:
single teacher A, single teacher B, equal weights, fixed weights (0.7/0.3), adaptive (min-norm
with tolerance), adaptive with the fusion network (fused index + fused teacher), and no
distillation (captions only). Teacher outputs are cached, so each run trains the student
alone. Every run resumes or is skipped when done. Writes `results/ablation_<preset>.{json,md}`
(mean ± std of mean recall over seeds) and `results/ablation_<preset>_alpha.png` (α over
training for the adaptive runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

from bench_util import write_results

from ammkd.common.files import atomic_write
from ammkd.distill.data import load_split, without_split
from ammkd.distill.evaluate import evaluate_student, evaluate_teacher
from ammkd.distill.schedule import read_log
from ammkd.distill.teacher_training import TeacherConfig, train_teacher
from ammkd.distill.teachers import load_teacher
from ammkd.distill.train import STUDENT_META, DistillConfig, distill

ROOT = Path(__file__).resolve().parents[1]
FLICKR = ROOT.parent / "shared" / "data" / "flickr8k"
RECIPES = {
    "single_A": {"weighting": "single", "single_teacher": 0},
    "single_B": {"weighting": "single", "single_teacher": 1},
    "equal": {"weighting": "equal"},
    "fixed_0.7_0.3": {"weighting": "fixed", "fixed_weights": [0.7, 0.3]},
    "adaptive": {"weighting": "adaptive"},
    "adaptive_fusion": {"weighting": "adaptive", "fusion": "network+teacher"},
    "no_kd": {"weighting": "none"},
}
PRESETS = {  # data, eval split, student options, teacher (spec, epochs, lr) pairs
    "synthetic": {
        "data": "synthetic:4000",
        "eval": "val",
        "student": {"student": "ammkd-mnv3-small-050", "epochs": 8, "batch_size": 64, "lr": 2e-3},
        "teachers": [("ammkd-tiny-vit", 10, 5e-4), ("ammkd-tiny-rn", 10, 5e-4)],
    },
    "flickr8k": {  # reuses the teachers of benchmarks/flickr8k.py at budget 1; a smaller student budget
        "data": f"flickr8k:{FLICKR}:train",
        "eval": "dev",
        "student": {"student": "ammkd-mnv3-small", "image_size": 96, "epochs": 6, "batch_size": 128},
        "teacher_dirs": [
            ROOT / "runs" / "bench-flickr8k" / "budget-1" / "teacher_rn",
            ROOT / "runs" / "bench-flickr8k" / "budget-1" / "teacher_convnext",
        ],
    },
}


def _teachers(preset: dict, runs: Path) -> list[Path]:
    if "teacher_dirs" in preset:
        return preset["teacher_dirs"]
    dirs = []
    for spec, epochs, lr in preset["teachers"]:
        out = runs / "teachers" / spec
        if not (out / "teacher.json").is_file():
            train_teacher(TeacherConfig(model=spec, data=preset["data"], epochs=epochs, lr=lr), out, resume=True)
        dirs.append(out)
    return dirs


def _alpha_plot(runs: dict[str, Path], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, folder in runs.items():
        recs = [r for r in read_log(folder / "metrics.jsonl") if r.get("alpha")]
        ax.plot([r["step"] for r in recs], [r["alpha"][0] for r in recs], label=f"{name}: α teacher A")
    ax.set_xlabel("step")
    ax.set_ylabel("weight of teacher A")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=list(PRESETS), default="synthetic")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablation")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    runs = args.runs / args.preset
    teachers = _teachers(preset, runs)
    eval_data = load_split(without_split(preset["data"]), preset["eval"])
    teacher_scores = {
        f"teacher_{'AB'[i]}": round(evaluate_teacher(load_teacher(str(t)), eval_data)["mean_recall"], 2)
        for i, t in enumerate(teachers)
    }
    print("teachers", teacher_scores, flush=True)
    table, alpha_runs = {}, {}
    for name in args.recipes:
        scores, alphas = [], []
        for seed in args.seeds:
            out = runs / name / f"seed{seed}"
            if not (out / STUDENT_META).is_file():
                cfg = DistillConfig(
                    teachers=[str(t) for t in teachers],
                    data=preset["data"],
                    seed=seed,
                    checkpoint_every=50,
                    **preset["student"],
                    **RECIPES[name],
                )
                distill(cfg, out, resume=True)
            scores.append(evaluate_student(out, eval_data)["mean_recall"])
            alphas.append(json.loads((out / STUDENT_META).read_text())["mean_alpha"])
            if seed == args.seeds[0] and RECIPES[name].get("weighting") == "adaptive":
                alpha_runs[name] = out
        table[name] = {
            "mean_recall": round(statistics.mean(scores), 2),
            "std": round(statistics.stdev(scores), 2) if len(scores) > 1 else 0.0,
            "per_seed": scores,
            "mean_alpha": [round(statistics.mean(a), 3) for a in zip(*alphas)],
        }
        print(name, table[name], flush=True)
    results = {
        "benchmark": f"ablation-{args.preset}",
        "data": preset["data"],
        "eval_split": preset["eval"],
        "student": preset["student"],
        "teachers": [str(Path(t).resolve().relative_to(ROOT)) for t in teachers],
        "teacher_mean_recall": teacher_scores,
        "seeds": args.seeds,
        "recipes": {n: RECIPES[n] for n in args.recipes},
        "table": table,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "uv run --frozen --no-sync python benchmarks/ablation.py " + " ".join(argv or sys.argv[1:]),
    }
    md = [
        f"# Ablation on {args.preset} ({preset['eval']} split), {len(args.seeds)} seeds",
        "",
        f"Student `{preset['student']['student']}`, {preset['student']['epochs']} epochs; mean recall "
        "(% , mean of I→T and T→I R@1/5/10) as mean ± std over seeds.",
        "",
        "| recipe | mean recall | per seed | mean α over training |",
        "|---|---:|---|---|",
        *[
            f"| {n} | {r['mean_recall']:.2f} ± {r['std']:.2f} | {r['per_seed']} | {r['mean_alpha']} |"
            for n, r in table.items()
        ],
        "",
        "Teachers alone (mean recall, same split): "
        + ", ".join(f"{n} ({Path(t).name}) {teacher_scores[n]:.2f}" for n, t in zip(teacher_scores, teachers)),
        "",
        f"Command: `{results['command']}`",
        "",
    ]
    write_results(args.results, f"ablation_{args.preset}", results, md, echo=False)
    if alpha_runs:
        _alpha_plot(alpha_runs, args.results / f"ablation_{args.preset}_alpha.png")
    return results


if __name__ == "__main__":
    main()
