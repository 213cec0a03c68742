"""Flickr8k benchmark: two teachers and the AMMKD student trained on train, measured on dev.

    uv run --frozen --no-sync python benchmarks/flickr8k.py --budget 1.0

Teachers: the pretrained all-MiniLM-L6-v2 text tower (frozen; its projection trains) with two
image towers trained from scratch on Flickr8k train: open_clip's ModifiedResNet and timm's
ConvNeXt-atto. Students: MobileNetV3-Large distilled with AMMKD (adaptive weights over the two
teachers' KL), and the same student trained on the captions alone (no distillation). Every
model is scored with image->text and text->image Recall@1/5/10 on the 1,000 dev images, all 5
captions per image (chance R@1 = 0.1%).

`--budget` scales every stage's epochs (1.0 = the committed plan). Each stage resumes from its
checkpoint and a finished stage is skipped, so an interrupted run continues where it stopped.
Results go to `benchmarks/results/flickr8k.json` and `.md` (pass `--results` to write elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from bench_util import relative

from ammkd.common.files import atomic_write, atomic_write_json
from ammkd.distill.curves import plot_learning_curve
from ammkd.distill.data import load_split
from ammkd.distill.evaluate import evaluate_student, evaluate_teacher
from ammkd.distill.teacher_training import TeacherConfig, train_teacher
from ammkd.distill.teachers import load_teacher
from ammkd.distill.train import STUDENT_META, DistillConfig, distill

ROOT = Path(__file__).resolve().parents[1]
TEXT_TOWER = "hf:all-MiniLM-L6-v2"
TEACHERS = {  # name -> (image tower preset, epochs at budget 1.0)
    "teacher_rn": ("ammkd-small-rn", 15),
    "teacher_convnext": ("ammkd-small-convnext", 15),
}
STUDENT = "ammkd-mnv3-large"
STUDENT_SIZE = 96
STUDENT_EPOCHS = 15
STUDENTS = {"student_ammkd": "adaptive", "student_no_kd": "none"}


def _epochs(base: float, budget: float) -> float:
    return round(max(0.05, base * budget), 3)


def _train_teachers(data: str, runs: Path, budget: float) -> dict[str, Path]:
    dirs = {}
    for name, (tower, epochs) in TEACHERS.items():
        out = runs / name
        if not (out / "teacher.json").is_file():
            cfg = TeacherConfig(
                model=f"{tower}+{TEXT_TOWER}",
                data=data,
                epochs=_epochs(epochs, budget),
                batch_size=128,
                lr=1e-3,
                weight_decay=0.1,
                aug_scale=[0.6, 1.0],
                eval_every=94,  # about every 2 epochs
                checkpoint_every=50,
            )
            train_teacher(cfg, out, resume=True)
        dirs[name] = out
    return dirs


def _train_students(data: str, runs: Path, budget: float, teachers: list[Path]) -> dict[str, Path]:
    dirs = {}
    for name, weighting in STUDENTS.items():
        out = runs / name
        if not (out / STUDENT_META).is_file():
            cfg = DistillConfig(
                teachers=[str(t) for t in teachers],
                data=data,
                student=STUDENT,
                image_size=STUDENT_SIZE,
                weighting=weighting,
                epochs=_epochs(STUDENT_EPOCHS, budget),
                batch_size=128,
                lr=2e-3,
                aug_scale=[0.6, 1.0],
                checkpoint_every=50,
            )
            distill(cfg, out, resume=True)
        dirs[name] = out
    return dirs


def _markdown(results: dict) -> str:
    keys = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mean_recall"]
    lines = [
        "# Flickr8k dev retrieval (1,000 images, 5,000 captions)",
        "",
        f"Budget {results['budget']} (epochs: teachers {results['epochs']['teachers']}, "
        f"students {results['epochs']['students']}); trained on Flickr8k train (6,000 images) on "
        f"{results['machine']['cpus']} CPU cores ({results['train_minutes']} min of training). Chance R@1: "
        "0.1% in both directions.",
        "",
        f"Teachers: text tower `{results['text_tower']}` (pretrained, frozen; projection trained) with "
        + " and ".join(f"`{t}` ({n})" for n, t in results["teachers"].items())
        + f" image towers trained from scratch. Student: `{results['student']}`, from scratch; "
        "`student_ammkd` distils both teachers with adaptive weights, `student_no_kd` learns from "
        "the captions alone (same class vectors, same budget).",
        "",
        "| model | " + " | ".join(keys) + " | train s |",
        "|---|" + "---:|" * (len(keys) + 1),
    ]
    for name, row in results["models"].items():
        m = row["metrics"]
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.1f}" for k in keys) + f" | {row['train_seconds']} |")
    lines += [
        "",
        "The image towers start from random weights (no pretrained image weights are reachable offline) "
        "and train on 2 CPU cores, so absolute recall is low; the learning curves "
        "(`flickr8k_*_curve.png`) show the teachers still improving at the end: a larger `--budget` "
        "raises every row. `train s` is wall time on a shared machine.",
        "",
        "Command:",
        "",
        f"    {results['command']}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "flickr8k"), help="Flickr8k folder")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-flickr8k", help="run folders (resumable)")
    ap.add_argument("--budget", type=float, default=1.0, help="scale on every stage's epochs (1.0: the plan)")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="where JSON + MD go")
    args = ap.parse_args(argv)
    t0 = time.time()
    runs = args.runs / f"budget-{args.budget:g}"
    train, dev = f"flickr8k:{args.data}:train", f"flickr8k:{args.data}:dev"
    teachers = _train_teachers(train, runs, args.budget)
    students = _train_students(train, runs, args.budget, list(teachers.values()))
    dev_data = load_split(dev, "dev")
    models = {}
    for name, folder in {**teachers, **students}.items():
        is_teacher = name in teachers
        metrics = (
            evaluate_teacher(load_teacher(str(folder)), dev_data) if is_teacher else evaluate_student(folder, dev_data)
        )
        meta = json.loads((folder / ("teacher.json" if is_teacher else STUDENT_META)).read_text())
        models[name] = {"metrics": metrics, "train_seconds": meta.get("train_seconds"), "folder": relative(folder)}
        print(name, metrics, flush=True)
    results = {
        "benchmark": "flickr8k-dev-retrieval",
        "budget": args.budget,
        "epochs": {"teachers": _epochs(15, args.budget), "students": _epochs(STUDENT_EPOCHS, args.budget)},
        "text_tower": TEXT_TOWER,
        "teachers": {n: t[0] for n, t in TEACHERS.items()},
        "student": f"{STUDENT} at {STUDENT_SIZE}px",
        "models": models,
        "train_minutes": round(sum(m["train_seconds"] or 0 for m in models.values()) / 60, 1),
        "wall_minutes_this_invocation": round((time.time() - t0) / 60, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "command": "uv run --frozen --no-sync python benchmarks/flickr8k.py " + " ".join(argv or sys.argv[1:]),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    for name, row in models.items():  # the learning curves, small PNGs, beside the table
        log = ROOT / row["folder"] / "metrics.jsonl"
        plot_learning_curve(log, args.results / f"flickr8k_{name}_curve.png", f"{name} on Flickr8k train")
    atomic_write_json(args.results / "flickr8k.json", results)
    atomic_write(args.results / "flickr8k.md", lambda tmp: tmp.write_text(_markdown(results)))
    return results


if __name__ == "__main__":
    main()
