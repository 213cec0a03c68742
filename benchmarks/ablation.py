"""Ablation of the AMMKD method: which part pays for itself.

    uv run --frozen --no-sync python benchmarks/ablation.py --preset synthetic --seeds 0 1 2
    uv run --frozen --no-sync python benchmarks/ablation.py --preset flickr8k --seeds 0 1 2 --epochs 3 \
        --recipes single_A single_B equal adaptive adaptive_gt adaptive_sample no_kd fixed_0.7_0.3 \
        adaptive_fusion equal_fusion adaptive_norm_fusion adaptive_fused_index no_kd_fused_index \
        adaptive_fusion_feature adaptive_fusion_relation

Same two frozen teachers, same student, same budget; only the distillation recipe changes:
single teacher A, single teacher B, equal weights, fixed weights (0.7/0.3), adaptive (min-norm
per batch with tolerance), its per-image variants (min-norm per image; per image over the
teachers within a margin of the best one's caption cross-entropy), and no distillation
(captions only), all over the concatenated index; then with the fusion network: adaptive,
equal and normalised-gradient min-norm weights over the two teachers and the fused teacher, the
fused index alone (adaptive, and captions only), and the optional terms (CLIP-KD feature,
relation) added to adaptive + fusion. Each run's dev score is kept beside it (eval_dev.json),
so re-rendering the table re-evaluates nothing. The flickr8k preset uses the pretrained teachers
and student of benchmarks/flickr8k.py (run that first, it trains the teachers). Teacher outputs
are cached, so each run trains the student alone; seeds go in the outer loop, so a stopped run
has whole seeds. Every run resumes or is skipped when done. Writes `results/ablation_<preset>.{json,md}`
(mean ± std of mean recall over seeds, the paired difference of every recipe against equal
weights and against the best single teacher with its standard error, seconds per step) and
`results/ablation_<preset>_alpha.png` (α over training for the adaptive runs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import flickr8k as f8k
import numpy as np
from bench_util import relative, write_results

from ammkd.common.files import atomic_write, atomic_write_json
from ammkd.distill.data import load_split, without_split
from ammkd.distill.evaluate import evaluate_student, evaluate_teacher
from ammkd.distill.schedule import read_log
from ammkd.distill.student_folder import STUDENT_META
from ammkd.distill.teacher_training import TeacherConfig, train_teacher
from ammkd.distill.teachers import load_teacher
from ammkd.distill.train import DistillConfig, distill

ROOT = Path(__file__).resolve().parents[1]
FLICKR = ROOT.parent / "shared" / "data" / "flickr8k"
RECIPES = {
    "single_A": {"weighting": "single", "single_teacher": 0},
    "single_B": {"weighting": "single", "single_teacher": 1},
    "equal": {"weighting": "equal"},
    "fixed_0.7_0.3": {"weighting": "fixed", "fixed_weights": [0.7, 0.3]},
    "adaptive": {"weighting": "adaptive"},
    "adaptive_sample": {"weighting": "adaptive-sample"},
    "adaptive_gt": {"weighting": "adaptive-gt", "gt_margin": 1.0},
    "adaptive_fusion": {"weighting": "adaptive", "fusion": "network+teacher"},
    "equal_fusion": {"weighting": "equal", "fusion": "network+teacher"},
    "adaptive_norm_fusion": {"weighting": "adaptive-norm", "fusion": "network+teacher"},
    "adaptive_fused_index": {"weighting": "adaptive", "fusion": "network"},
    "no_kd_fused_index": {"weighting": "none", "fusion": "network"},
    "adaptive_fusion_feature": {"weighting": "adaptive", "fusion": "network+teacher", "feature_weight": 1.0},
    "adaptive_fusion_relation": {"weighting": "adaptive", "fusion": "network+teacher", "relation_weight": 1.0},
    "adaptive_feature": {"weighting": "adaptive", "feature_weight": 1.0},
    "adaptive_relation": {"weighting": "adaptive", "relation_weight": 1.0},
    "no_kd": {"weighting": "none"},
}
DEFAULT_RECIPES = ["single_A", "single_B", "equal", "fixed_0.7_0.3", "adaptive", "adaptive_fusion", "no_kd"]
PRESETS = {  # data, eval split, student options, teacher (spec, epochs, lr) pairs
    "synthetic": {
        "data": "synthetic:4000",
        "eval": "val",
        "student": {"student": "ammkd-mnv3-small-050", "epochs": 8, "batch_size": 64, "lr": 2e-3, "fusion": "concat"},
        "teachers": [("ammkd-tiny-vit", 10, 5e-4), ("ammkd-tiny-rn", 10, 5e-4)],
    },
    "flickr8k": {  # the pretrained teachers and student of benchmarks/flickr8k.py at budget 1
        "data": f"flickr8k:{FLICKR}:train",
        "eval": "dev",
        "student": {
            "student": f8k.STUDENT,
            "image_size": f8k.STUDENT_SIZE,
            "frozen_stages": f8k.STUDENT_FROZEN_STAGES,
            "fusion": "concat",  # the recipes' baseline index; the *_fusion / *_fused_index recipes override it
            "epochs": f8k.STUDENT_EPOCHS,
            "batch_size": 128,
            "lr": 1e-3,
        },
        "teacher_dirs": [ROOT / "runs" / "bench-flickr8k" / "budget-1" / name for name in f8k.TEACHERS],
    },
}


def _teachers(preset: dict, runs: Path) -> list[Path]:
    if "teacher_dirs" in preset:
        missing = [t for t in preset["teacher_dirs"] if not (t / "teacher.json").is_file()]
        if missing:
            sys.exit(f"ablation: no trained teacher in {missing[0]}; run benchmarks/flickr8k.py first")
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
        ax.plot([r["step"] for r in recs], [r["alpha"][0] for r in recs], label=f"{name}: α teacher A", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("weight of teacher A")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _weighting_cost(recipes: list[str], k: int, batch: int, n_texts: int, repeats: int = 20) -> dict[str, float]:
    """Milliseconds one step's weighting solve takes (median of `repeats`) for each recipe's scheme,
    on random gradients of the real shapes: K teachers, a batch of B images, N class vectors."""
    import time

    import torch

    from ammkd.distill.weighting import WeightingInputs, WeightingOptions, teacher_weights

    out = {}
    for name in recipes:
        r = RECIPES[name]
        kr = k + (r.get("fusion") == "network+teacher")  # the fused teacher is one more
        g = torch.randn(kr, batch, n_texts) / n_texts
        ce = torch.rand(kr, batch) * 3  # caption cross-entropies, nats
        scheme = r.get("weighting", "equal")
        opts = WeightingOptions(fixed_weights=r.get("fixed_weights", [1.0] * kr), gt_margin=r.get("gt_margin", 1.0))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            flat = g.flatten(1).double()
            teacher_weights(scheme, WeightingInputs(flat @ flat.T, g, ce), opts)  # the Gram matrix counts
            times.append(1000 * (time.perf_counter() - t0))
        out[name] = round(statistics.median(times), 2)
    return out


def _cached_score(out: Path, split: str, eval_data) -> float:
    """Mean recall of the student in `out` on `split`, kept in out/eval_<split>.json next to the
    student.json it belongs to (its SHA-256), so re-rendering the table re-evaluates nothing."""
    path = out / f"eval_{split}.json"
    meta_sha = hashlib.sha256((out / STUDENT_META).read_bytes()).hexdigest()
    try:
        cached = json.loads(path.read_text())
        if cached["student_meta_sha256"] == meta_sha:
            return cached["mean_recall"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    score = evaluate_student(out, eval_data)["mean_recall"]
    atomic_write_json(path, {"student_meta_sha256": meta_sha, "mean_recall": score})
    return score


def _paired(scores: dict[str, dict[int, float]], seeds: list[int]) -> dict:
    """Per recipe, its per-seed difference against `equal`, against the best single-teacher
    recipe (the one with the higher mean) and against `equal_fusion` (equal weights with the
    fusion network: what a weighting must beat once the index is fused): mean and standard
    error (None for one seed)."""
    out: dict = {"against": {}}
    singles = [n for n in ("single_A", "single_B") if n in scores]
    refs = {"equal": "equal" if "equal" in scores else None}
    refs["equal_fusion"] = "equal_fusion" if "equal_fusion" in scores else None
    if singles:
        refs["best_single"] = max(singles, key=lambda n: statistics.mean(scores[n].values()))
        out["best_single_recipe"] = refs["best_single"]
    for name in scores:
        out["against"][name] = {}
        for label, ref in refs.items():
            if ref is None or ref == name:
                continue
            common = [s for s in seeds if s in scores[name] and s in scores[ref]]  # paired: the same seeds
            if not common:
                continue
            d = np.array([scores[name][s] - scores[ref][s] for s in common])
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
            out["against"][name][label] = {
                "mean": round(float(d.mean()), 2),
                "stderr": None if se is None else round(se, 2),
                "per_seed": [round(float(x), 2) for x in d],
                "seeds": common,
            }
    return out


def _pm(paired: dict, name: str, label: str) -> str:
    d = paired["against"].get(name, {}).get(label)
    if d is None:
        return "—"
    return f"{d['mean']:+.2f}" + (f" ± {d['stderr']:.2f}" if d["stderr"] is not None else "")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=list(PRESETS), default="synthetic")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=DEFAULT_RECIPES)
    ap.add_argument("--epochs", type=float, default=None, help="student epochs (default: the preset's)")
    ap.add_argument("--no-train", action="store_true", help="tabulate the finished runs only (a partial seed)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablation")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    student_opts = {**preset["student"], **({"epochs": args.epochs} if args.epochs else {})}
    runs = args.runs / args.preset / f"epochs-{student_opts['epochs']:g}"
    teachers = _teachers(preset, args.runs / args.preset)
    eval_data = load_split(without_split(preset["data"]), preset["eval"])
    teacher_scores = {
        f"teacher_{'AB'[i]}": round(evaluate_teacher(load_teacher(str(t)), eval_data)["mean_recall"], 2)
        for i, t in enumerate(teachers)
    }
    print("teachers", teacher_scores, flush=True)
    scores: dict[str, dict[int, float]] = {n: {} for n in args.recipes}
    alphas: dict[str, list] = {n: [] for n in args.recipes}
    step_seconds: dict[str, list] = {n: [] for n in args.recipes}
    alpha_runs = {}
    for seed in args.seeds:  # whole seeds first: a stopped ablation still pairs its recipes
        for name in args.recipes:
            out = runs / name / f"seed{seed}"
            if not (out / STUDENT_META).is_file():
                if args.no_train:
                    continue
                cfg = DistillConfig(
                    teachers=[str(t) for t in teachers],
                    data=preset["data"],
                    seed=seed,
                    checkpoint_every=50,
                    **{**student_opts, **RECIPES[name]},
                )
                distill(cfg, out, resume=True)
            scores[name][seed] = _cached_score(out, preset["eval"], eval_data)
            meta = json.loads((out / STUDENT_META).read_text())
            alphas[name].append(meta["mean_alpha"])
            step_seconds[name].append(meta["train_seconds"] / meta["steps"])
            if seed == args.seeds[0] and RECIPES[name].get("weighting", "").startswith("adaptive"):
                alpha_runs[name] = out
            print(name, seed, round(scores[name][seed], 2), flush=True)
    table = {
        name: {
            "mean_recall": round(statistics.mean(scores[name].values()), 2),
            "std": round(statistics.stdev(scores[name].values()), 2) if len(scores[name]) > 1 else 0.0,
            "per_seed": [round(scores[name][s], 2) for s in args.seeds if s in scores[name]],
            "seeds": [s for s in args.seeds if s in scores[name]],
            "mean_alpha": [round(statistics.mean(a), 3) for a in zip(*alphas[name])],
            "seconds_per_step": round(statistics.mean(step_seconds[name]), 3),
        }
        for name in args.recipes
        if scores[name]
    }
    paired = _paired({n: v for n, v in scores.items() if v}, args.seeds)
    n_texts = len(load_split(preset["data"], "train").texts()[0])
    cost = _weighting_cost(list(table), len(teachers), student_opts["batch_size"], n_texts)
    for name in table:
        table[name]["weighting_ms_per_step"] = cost[name]
    results = {
        "benchmark": f"ablation-{args.preset}",
        "data": preset["data"],
        "eval_split": preset["eval"],
        "student": student_opts,
        "teachers": [relative(t) for t in teachers],
        "teacher_mean_recall": teacher_scores,
        "seeds": args.seeds,
        "recipes": {n: RECIPES[n] for n in args.recipes},
        "table": table,
        "paired": paired,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "uv run --frozen --no-sync python benchmarks/ablation.py " + " ".join(argv or sys.argv[1:]),
    }
    md = [
        f"# Ablation on {args.preset} ({preset['eval']} split), seeds {args.seeds}",
        "",
        f"Student `{student_opts['student']}` at {student_opts.get('image_size') or 'its preset'} px, "
        f"{student_opts['epochs']:g} epochs; mean recall (%, mean of I→T and T→I R@1/5/10) as mean ± std over "
        "seeds; paired differences are per seed (same seed, same batches), mean ± standard error, over "
        "the seeds both recipes have (a row with fewer per-seed values has not run the later seeds yet); "
        "s/step is the training step's wall time on this machine (the weighting's own cost included; "
        "other work shared the 2 cores, so compare within a row's order of magnitude only); solve ms is the "
        "weighting alone (Gram matrix and solve, median of 20, random gradients of the real shapes: "
        "K teachers x batch x all training captions).",
        "",
        "| recipe | mean recall | per seed | − equal | − best single | − equal + fusion | mean α over training "
        "| s/step | solve ms |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|",
        *[
            f"| {n} | {r['mean_recall']:.2f} ± {r['std']:.2f} | {r['per_seed']} | {_pm(paired, n, 'equal')} | "
            f"{_pm(paired, n, 'best_single')} | {_pm(paired, n, 'equal_fusion')} | {r['mean_alpha']} | "
            f"{r['seconds_per_step']:.2f} | {r['weighting_ms_per_step']:.1f} |"
            for n, r in table.items()
        ],
        "",
        f"Best single teacher (by mean over seeds): {paired.get('best_single_recipe', '—')}.",
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
