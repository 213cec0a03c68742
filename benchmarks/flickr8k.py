"""Flickr8k benchmark with pretrained starts: two CLIP teachers, AMMKD students, export, speed.

    uv run --frozen --no-sync python benchmarks/flickr8k.py [--seeds 0,1] [--export]

Teachers: ImageNet EfficientNet-Lite2 and -Lite1 image towers (offline wheels) with the pretrained
all-MiniLM-L6-v2 text tower, fine-tuned contrastively on Flickr8k train above a frozen, cached
prefix (stem + first 5 stages; the rest of the image tower, its projection and the text projection
train). Students: ImageNet EfficientNet-Lite0 at 160 px (stem + first 3 stages frozen and cached),
distilled with AMMKD (adaptive min-norm weights over both teachers' KL on the class vectors), and
the same student trained on the captions alone (no distillation), each for every seed. Every
model is scored with image->text and text->image Recall@1/5/10 on the 1,000 dev images, all 5
captions per image (chance R@1 = 0.1%).

With `--export`, the first seed's AMMKD student is exported (every target and quantization,
benchmarks/export.py) and timed beside the teachers and open_clip ViT-B-32 at 224 px in the same
rounds (benchmarks/compare.py). Each stage resumes from its checkpoint and a finished stage is
skipped, so an interrupted run continues where it stopped; `stage_seconds` says where the time goes.
Results: `benchmarks/results/flickr8k.{json,md}` (+ export_flickr8k, compare_flickr8k).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_util import cpu_model, relative, write_results

from ammkd.common.files import atomic_write_json
from ammkd.distill.curves import plot_learning_curve
from ammkd.distill.data import load_split
from ammkd.distill.evaluate import evaluate_student, evaluate_teacher
from ammkd.distill.student_folder import STUDENT_META
from ammkd.distill.teacher_training import TeacherConfig, train_teacher
from ammkd.distill.teachers import load_teacher
from ammkd.distill.train import DistillConfig, distill

ROOT = Path(__file__).resolve().parents[1]
TEXT_TOWER = "hf:all-MiniLM-L6-v2"
TEACHER_FROZEN_STAGES = 5
TEACHER_EPOCHS = 4
TEACHERS = {  # name -> pretrained image tower
    "teacher_lite2": "tf_efficientnet_lite2:imagenet",
    "teacher_lite1": "tf_efficientnet_lite1:imagenet",
}
STUDENT = "ammkd-lite0"  # ImageNet EfficientNet-Lite0 (presets/students/ammkd-lite0.json)
STUDENT_SIZE = 160
STUDENT_FROZEN_STAGES = 3
STUDENT_EPOCHS = 6
STUDENT_FUSION = "concat"  # the headline as measured; the ablation supports the fusion network (the default now)
STUDENTS = {"student_ammkd": "adaptive", "student_no_kd": "none"}
STAGE_LOG: Path | None = None  # runs/.../stage_seconds.json, set by main
KEYS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mean_recall"]


def _epochs(base: float, budget: float) -> float:
    return round(max(0.05, base * budget), 3)


def teacher_config(tower: str, data: str, budget: float) -> TeacherConfig:
    return TeacherConfig(
        model=f"{tower}+{TEXT_TOWER}",
        data=data,
        epochs=_epochs(TEACHER_EPOCHS, budget),
        batch_size=128,
        lr=1e-3,
        weight_decay=0.1,
        image_frozen_stages=TEACHER_FROZEN_STAGES,
        image_lr_scale=0.1,
        eval_every=47,  # about every epoch
        checkpoint_every=50,
    )


def student_config(teachers: list[Path], data: str, weighting: str, seed: int, budget: float) -> DistillConfig:
    return DistillConfig(
        teachers=[str(t) for t in teachers],
        data=data,
        student=STUDENT,
        image_size=STUDENT_SIZE,
        frozen_stages=STUDENT_FROZEN_STAGES,
        fusion=STUDENT_FUSION,
        weighting=weighting,
        epochs=_epochs(STUDENT_EPOCHS, budget),
        batch_size=128,
        lr=1e-3,
        seed=seed,
        checkpoint_every=50,
    )


def _timed(stages: dict, name: str, fn) -> None:
    """Run one stage and record its wall seconds, also in the run folder's `stage_seconds.json`
    (so a later invocation that skips the finished stage still reports what it cost)."""
    t0 = time.time()
    fn()
    stages[name] = round(time.time() - t0, 1)
    if STAGE_LOG is not None:
        done = json.loads(STAGE_LOG.read_text()) if STAGE_LOG.is_file() else {}
        atomic_write_json(STAGE_LOG, {**done, name: stages[name]})


def _recorded(stages: dict, name: str) -> None:
    """A stage finished by an earlier invocation: its seconds from `stage_seconds.json`, if any."""
    done = json.loads(STAGE_LOG.read_text()) if STAGE_LOG is not None and STAGE_LOG.is_file() else {}
    if name in done:
        stages[name] = done[name]


def _models(args, runs: Path, train: str, stages: dict) -> dict[str, dict]:
    """Train (or find) every model; {name: {"folder", "kind", "recipe", "seed"}}."""
    models = {}
    for name, tower in TEACHERS.items():
        out = runs / name
        if not (out / "teacher.json").is_file():
            cfg = teacher_config(tower, train, args.budget)
            _timed(stages, name, lambda cfg=cfg, out=out: train_teacher(cfg, out, resume=True))
        else:
            _recorded(stages, name)
        models[name] = {"folder": out, "kind": "teacher", "recipe": tower}
    teachers = [models[n]["folder"] for n in TEACHERS]
    for seed in args.seeds:
        for name, weighting in STUDENTS.items():
            out = runs / f"{name}_seed{seed}"
            if not (out / STUDENT_META).is_file():
                cfg = student_config(teachers, train, weighting, seed, args.budget)
                _timed(stages, out.name, lambda cfg=cfg, out=out: distill(cfg, out, resume=True))
            else:
                _recorded(stages, out.name)
            models[out.name] = {"folder": out, "kind": "student", "recipe": name, "seed": seed}
    return models


def _summary(models: dict, seeds: list[int]) -> dict:
    """Per student recipe: mean ± std over seeds, its share of the best teacher, and the paired
    difference of AMMKD minus no distillation (same seed) with its standard error."""
    best_teacher = max(
        (m for m in models.values() if m["kind"] == "teacher"), key=lambda m: m["metrics"]["mean_recall"]
    )
    best = best_teacher["metrics"]["mean_recall"]
    out = {"best_teacher": best_teacher["recipe"], "best_teacher_mean_recall": best, "recipes": {}}
    per = {}
    for recipe in STUDENTS:
        vals = [models[f"{recipe}_seed{s}"]["metrics"]["mean_recall"] for s in seeds]
        per[recipe] = np.array(vals)
        out["recipes"][recipe] = {
            "mean_recall_per_seed": vals,
            "mean": round(float(np.mean(vals)), 2),
            "std": round(float(np.std(vals, ddof=1)), 2) if len(vals) > 1 else None,
            "share_of_best_teacher": round(float(np.mean(vals)) / best, 3),
        }
    diff = per["student_ammkd"] - per["student_no_kd"]
    out["ammkd_minus_no_kd"] = {
        "per_seed": [round(float(d), 2) for d in diff],
        "mean": round(float(diff.mean()), 2),
        "stderr": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 2) if len(diff) > 1 else None,
    }
    return out


def _markdown(results: dict) -> str:
    s = results["summary"]
    lines = [
        "# Flickr8k dev retrieval with pretrained starts (1,000 images, 5,000 captions)",
        "",
        f"Trained on Flickr8k train (6,000 images, 30,000 captions) on {results['machine']['cpus']} CPU cores; "
        f"every stage together took **{results['total_minutes']} min** (where it goes: `stage_seconds` in the JSON; "
        "a stage finished by an earlier invocation reports the seconds recorded then, in the run folder's "
        "`stage_seconds.json`). "
        "Chance R@1: 0.1% in both directions.",
        "",
        f"Teachers: ImageNet {' and '.join(f'`{t}`' for t in results['teachers'].values())} image towers with the "
        f"pretrained `{results['text_tower']}` text tower, fine-tuned {results['epochs']['teachers']} epochs above a "
        f"frozen prefix (stem + {TEACHER_FROZEN_STAGES} stages). Students: `{results['student']}`, "
        f"{results['epochs']['students']} epochs, seeds {results['seeds']}: `student_ammkd` distils both teachers "
        "(adaptive min-norm weights, KL over the class vectors + caption cross-entropy), `student_no_kd` learns "
        "from the captions alone (same class vectors, same budget).",
        "",
        "| model | " + " | ".join(KEYS) + " | train s |",
        "|---|" + "---:|" * (len(KEYS) + 1),
    ]
    for name, row in results["models"].items():
        m = row["metrics"]
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.1f}" for k in KEYS) + f" | {row['train_seconds']} |")
    lines += [
        "",
        "| student recipe | mean recall (mean ± std over seeds) | per seed | share of the best teacher |",
        "|---|---:|---|---:|",
    ]
    for recipe, r in s["recipes"].items():
        std = f" ± {r['std']:.2f}" if r["std"] is not None else ""
        lines.append(
            f"| {recipe} | {r['mean']:.2f}{std} | {r['mean_recall_per_seed']} | {r['share_of_best_teacher']:.1%} |"
        )
    d = s["ammkd_minus_no_kd"]
    se = f" ± {d['stderr']:.2f} (standard error)" if d["stderr"] is not None else ""
    lines += [
        "",
        f"Best teacher: `{s['best_teacher']}` ({s['best_teacher_mean_recall']:.1f}). AMMKD minus no distillation, "
        f"paired by seed: {d['mean']:+.2f}{se}, per seed {d['per_seed']}.",
        "",
        "Command:",
        "",
        f"    {results['command']}",
        "",
    ]
    return "\n".join(lines)


def _export_and_compare(args, models: dict, stages: dict) -> None:
    """Export the first seed's AMMKD student (all targets, all quantizations) and time it beside the
    teachers and ViT-B-32 at 224 px (benchmarks/export.py, then benchmarks/compare.py, each in a
    process of its own: ExecuTorch's thread pool is process-wide). A finished export is kept."""
    student = models[f"student_ammkd_seed{args.seeds[0]}"]["folder"]
    runs = args.runs / "export"
    bundle = runs / "flickr8k" / "quantized"
    export = ["export.py", "--model", str(student), "--name", "flickr8k", "--runs", str(runs)]
    if (bundle / "manifest.json").is_file() and (args.results / "export_flickr8k.json").is_file():
        _recorded(stages, "export")
    else:
        _timed(stages, "export", lambda: _script(export + ["--results", str(args.results)]))
    teachers = ",".join(str(models[n]["folder"]) for n in TEACHERS)
    compare = ["compare.py", "--bundle", str(bundle), "--teachers", teachers, "--data", f"flickr8k:{args.data}"]
    compare += ["--name", "flickr8k", "--results", str(args.results), "--work", str(args.runs / "compare-onnx")]
    _timed(stages, "compare", lambda: _script(compare))


def _script(argv: list[str]) -> None:
    """Run a benchmark script of this folder in a fresh process; fail loudly if it fails."""
    subprocess.run([sys.executable, *argv], cwd=Path(__file__).parent, check=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "flickr8k"), help="Flickr8k folder")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-flickr8k", help="run folders (resumable)")
    ap.add_argument("--budget", type=float, default=1.0, help="scale on every stage's epochs (1.0: the plan)")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    ap.add_argument("--export", action="store_true", help="also export the AMMKD student and time it (compare)")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="where JSON + MD go")
    args = ap.parse_args(argv)
    t0 = time.time()
    runs = args.runs / f"budget-{args.budget:g}"
    train, dev = f"flickr8k:{args.data}:train", f"flickr8k:{args.data}:dev"
    stages: dict[str, float] = {}
    global STAGE_LOG
    STAGE_LOG = runs / "stage_seconds.json"
    models = _models(args, runs, train, stages)
    dev_data = load_split(dev, "dev")
    t_eval = time.time()
    for name, row in models.items():
        folder = row["folder"]
        teacher = row["kind"] == "teacher"
        row["metrics"] = (
            evaluate_teacher(load_teacher(str(folder)), dev_data) if teacher else evaluate_student(folder, dev_data)
        )
        meta = json.loads((folder / ("teacher.json" if teacher else STUDENT_META)).read_text())
        row["train_seconds"] = meta.get("train_seconds")
        print(name, row["metrics"], flush=True)
    stages["evaluation"] = round(time.time() - t_eval, 1)
    if args.export:
        _export_and_compare(args, models, stages)
    results = {
        "benchmark": "flickr8k-dev-retrieval-pretrained",
        "budget": args.budget,
        "seeds": args.seeds,
        "epochs": {"teachers": _epochs(TEACHER_EPOCHS, args.budget), "students": _epochs(STUDENT_EPOCHS, args.budget)},
        "text_tower": TEXT_TOWER,
        "teachers": dict(TEACHERS),
        "student": f"{STUDENT} (EfficientNet-Lite0, ImageNet) at {STUDENT_SIZE} px",
        "models": {
            n: {**{k: v for k, v in m.items() if k != "folder"}, "folder": relative(m["folder"])}
            for n, m in models.items()
        },
        "summary": _summary(models, args.seeds),
        "stage_seconds": stages,
        "total_minutes": round(sum(stages.values()) / 60, 1),
        "wall_minutes_this_invocation": round((time.time() - t0) / 60, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "command": "uv run --frozen --no-sync python benchmarks/flickr8k.py " + " ".join(argv or sys.argv[1:]),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    for name in (
        "teacher_lite2",
        "teacher_lite1",
        f"student_ammkd_seed{args.seeds[0]}",
        f"student_no_kd_seed{args.seeds[0]}",
    ):
        log = models[name]["folder"] / "metrics.jsonl"
        plot_learning_curve(log, args.results / f"flickr8k_{name}_curve.png", f"{name} on Flickr8k train")
    write_results(args.results, "flickr8k", results, _markdown(results))
    return results


if __name__ == "__main__":
    main()
