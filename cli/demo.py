"""`ammkd demo`: the whole pipeline on the embedded synthetic data, ending in a summary table.

Stages talk through folders under the run folder: teachers/<name>, students/<weighting>,
bundle/. Every stage is the same library call the CLI and the tests make.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ammkd.common.errors import ConfigError
from ammkd.common.files import atomic_write_json

# Presets are data: the sizes that keep each preset inside its time budget on 2 CPU cores.
PRESETS = {
    "smoke": {
        "data": "synthetic:600",
        "teacher_epochs": {"vit": 6, "rn": 6},
        "teacher_batch": 64,
        "teacher_lr": 5e-4,  # small data: higher rates collapse the tiny CLIPs to chance
        # students/<name>: DistillConfig fields; the first is exported
        "students": {"adaptive": {"student": "ammkd-mnv3-small-050", "epochs": 6, "batch_size": 64}},
    },
    "default": {
        "data": "synthetic:16000",
        "teacher_epochs": {"vit": 6, "rn": 3},
        "teacher_batch": 128,
        "teacher_lr": 1e-3,
        # the best recipe of benchmarks/results/demo_student_recipes.md: on this data the RN teacher
        # alone (with the feature term) beats adaptive weighting, which keeps >= 0.4 on the weaker ViT
        "students": {
            "rn-feature": {
                "student": "ammkd-mnv3-large",
                "weighting": "single",
                "single_teacher": 1,  # teachers in TEACHERS order: vit, rn
                "feature_weight": 1.0,
                "epochs": 16,
                "batch_size": 128,
            },
        },
    },
}
TEACHERS = {"vit": "ammkd-tiny-vit", "rn": "ammkd-tiny-rn"}


def _onnx_latency(module, size: int, path: Path) -> float:
    """Median ms per image at batch 1, one thread, ONNX Runtime on this CPU."""
    from ammkd.export.onnx_export import export_onnx
    from ammkd.mobile_runtime.backends import OnnxImageEncoder
    from ammkd.mobile_runtime.latency import measure_latency

    export_onnx(module, size, path)
    enc = OnnxImageEncoder(path, threads=1)
    return measure_latency(enc.embed, np.random.rand(1, 3, size, size).astype(np.float32))["median_ms"]


DEMO_MARKER = "demo.json"  # written first: the folder belongs to a demo run of this preset


def default_demo_folder(preset: str) -> Path:
    """One folder per preset, so that one preset's run never meets another's outputs."""
    return Path("runs/demo") if preset == "default" else Path(f"runs/demo-{preset}")


def claim_demo_folder(out: Path, preset: str, log=print) -> None:
    """Before any work: `out` must be new, empty, or an earlier run of the same preset (replaced,
    with a notice); anything else is refused (ConfigError), so no training is thrown away."""
    marker = out / DEMO_MARKER
    if marker.is_file():
        try:
            earlier = json.loads(marker.read_text(encoding="utf-8")).get("preset")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            earlier = None
        if earlier != preset:
            raise ConfigError(f"{out}: holds a demo run of preset {earlier!r}; pass another --out for {preset!r}")
        log(f"replacing the earlier {preset!r} demo run in {out}")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not a demo run folder; pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"preset": preset})


def run_demo(preset: str, out: str | Path | None = None, log=print) -> dict:
    """Train two teachers, distil the preset's students, export the first, search with it. Returns
    the summary. `out` (default: `default_demo_folder(preset)`) is claimed first (claim_demo_folder)."""
    from ammkd.distill.evaluate import evaluate
    from ammkd.distill.teacher_training import TeacherConfig, train_teacher
    from ammkd.distill.teachers import TeacherImageEncoder, load_teacher
    from ammkd.distill.train import DistillConfig, distill, load_student
    from ammkd.export.bundle import ExportConfig, export_bundle
    from ammkd.mobile_runtime.retriever import Retriever

    if preset not in PRESETS:
        raise ConfigError(f"unknown demo preset {preset!r}; use one of {list(PRESETS)}")
    p = PRESETS[preset]
    out = Path(out) if out is not None else default_demo_folder(preset)
    claim_demo_folder(out, preset, log)
    t_start = time.time()
    rows: dict[str, dict] = {}
    teacher_dirs = []
    for short, name in TEACHERS.items():
        tdir = out / "teachers" / short
        train_teacher(
            TeacherConfig(
                model=name,
                data=p["data"],
                epochs=p["teacher_epochs"][short],
                batch_size=p["teacher_batch"],
                lr=p["teacher_lr"],
            ),
            tdir,
            overwrite=True,  # the demo's own folder: a second `make demo` starts over
        )
        teacher = load_teacher(str(tdir))
        rows[f"teacher {name}"] = {
            **evaluate(str(tdir), p["data"]),
            "params_M": round(sum(q.numel() for q in teacher.model.visual.parameters()) / 1e6, 3),
            "onnx_ms": _onnx_latency(
                TeacherImageEncoder(teacher), teacher.spec.size, out / "latency" / f"{short}.onnx"
            ),
        }
        teacher_dirs.append(str(tdir))
    for name, options in p["students"].items():
        sdir = out / "students" / name
        distill(DistillConfig(teachers=teacher_dirs, data=p["data"], **options), sdir, overwrite=True)
        student, _ = load_student(sdir)
        rows[f"student {name}"] = {
            **evaluate(str(sdir), p["data"]),
            "params_M": round(sum(q.numel() for q in student.parameters()) / 1e6, 3),
            "onnx_ms": _onnx_latency(student, student.arch.image_size, out / "latency" / f"student-{name}.onnx"),
        }
    exported = next(iter(p["students"]))
    bundle = export_bundle(out / "students" / exported, out / "bundle", ExportConfig(overwrite=True))
    rows[f"bundle ({exported}, onnx)"] = evaluate(str(bundle), p["data"])
    retriever = Retriever.open(bundle)
    golden = retriever.bundle.manifest["golden"][0]
    example = retriever.top_texts(retriever.bundle.path(golden["image"]), k=3)
    summary = {
        "preset": preset,
        "data": p["data"],
        "rows": rows,
        "bundle": str(bundle),
        "bundle_MB": round(sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 1e6, 3),
        "parity": retriever.bundle.manifest["targets"][0]["parity"],
        "example": {"image": golden["image"]["path"], "top3": [[h.text, round(h.score, 4)] for h in example]},
        "seconds": round(time.time() - t_start, 1),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def print_summary(s: dict, console: Console) -> None:
    keys = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mean_recall"]
    table = Table(title=f"ammkd demo ({s['preset']}, {s['data']} val split, recall in %)")
    for col in ["model", "params M", "i2t@1", "i2t@5", "i2t@10", "t2i@1", "t2i@5", "t2i@10", "mean", "ONNX ms"]:
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    for name, m in s["rows"].items():
        table.add_row(
            name,
            f"{m['params_M']:.2f}" if "params_M" in m else "",
            *[f"{m[k]:.1f}" for k in keys],
            f"{m['onnx_ms']:.2f}" if "onnx_ms" in m else "",
        )
    console.print(table)
    p = s["parity"]
    console.print(
        f"bundle: [bold]{s['bundle']}[/bold] ({s['bundle_MB']:.2f} MB); ONNX vs PyTorch cosine min "
        f"{p['cosine_min']:.6f}, top-1 agreement {p['top1_agreement']:.3f}"
    )
    console.print(f"search {s['example']['image']}: " + "; ".join(f"{t} ({sc:.3f})" for t, sc in s["example"]["top3"]))
    console.print(f"finished in {s['seconds']:.0f} s")
