"""`ammkd demo`: the whole pipeline on the embedded synthetic data, ending in a summary (the CLI prints it).

Stages talk through folders under the run folder: teachers/<name>, students/<weighting>,
bundle/. Every stage is the same library call the CLI and the tests make.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ammkd.common.errors import ConfigError
from ammkd.common.files import atomic_write_json

PRESET_DIR = Path(__file__).with_name("presets")  # presets/demo-<name>.json: the sizes that keep each
# preset inside its time budget on 2 CPU cores


def demo_presets() -> list[str]:
    """The names of the demo presets (presets/demo-*.json)."""
    return sorted(f.stem.removeprefix("demo-") for f in PRESET_DIR.glob("demo-*.json"))


def load_demo_preset(name: str) -> dict:
    """A demo preset: {"data", "teacher_epochs" {vit, rn}, "teacher_batch", "teacher_lr", "students"
    {name: DistillConfig fields; the first is exported}}."""
    path = PRESET_DIR / f"demo-{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown demo preset {name!r}; use one of {demo_presets()}")
    preset = json.loads(path.read_text(encoding="utf-8"))
    preset.pop("about", None)
    return preset


TEACHERS = {"vit": "ammkd-tiny-vit", "rn": "ammkd-tiny-rn"}


def _onnx_latency(module, size: int, path: Path) -> float:
    """Median ms per image at batch 1, one thread, ONNX Runtime on this CPU."""
    from ammkd.bundle.backends import OnnxImageEncoder
    from ammkd.export.onnx_export import export_onnx
    from ammkd.tools.latency import measure_latency

    export_onnx(module, size, path)
    enc = OnnxImageEncoder(path, threads=1)
    return measure_latency(enc.embed, np.random.rand(1, 3, size, size).astype(np.float32))["median_ms"]


@contextmanager
def _timed(stage_seconds: dict[str, float], stage: str):
    """Adds the wall seconds of the block to stage_seconds[stage]."""
    t0 = time.time()
    try:
        yield
    finally:
        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + time.time() - t0


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
    from ammkd.distill.student_folder import load_student
    from ammkd.distill.teacher_training import TeacherConfig, train_teacher
    from ammkd.distill.teachers import TeacherImageEncoder, load_teacher
    from ammkd.distill.train import DistillConfig, distill
    from ammkd.export.exporter import ExportConfig, export_bundle
    from ammkd.mobile_runtime.retriever import Retriever
    from ammkd.tools.evaluate import evaluate

    p = load_demo_preset(preset)
    out = Path(out) if out is not None else default_demo_folder(preset)
    claim_demo_folder(out, preset, log)
    t_start = time.time()
    stage_seconds: dict[str, float] = {}  # where the time goes: training, evaluation, export
    rows: dict[str, dict] = {}
    teacher_dirs = []
    for short, name in TEACHERS.items():
        tdir = out / "teachers" / short
        with _timed(stage_seconds, f"teacher {short}"):  # the first one also renders the data
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
        with _timed(stage_seconds, "evaluation"):
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
        with _timed(stage_seconds, f"student {name}"):
            distill(DistillConfig(teachers=teacher_dirs, data=p["data"], **options), sdir, overwrite=True)
        with _timed(stage_seconds, "evaluation"):
            student, _ = load_student(sdir)
            rows[f"student {name}"] = {
                **evaluate(str(sdir), p["data"]),
                "params_M": round(sum(q.numel() for q in student.parameters()) / 1e6, 3),
                "onnx_ms": _onnx_latency(student, student.arch.image_size, out / "latency" / f"student-{name}.onnx"),
            }
    exported = next(iter(p["students"]))
    with _timed(stage_seconds, "export"):
        bundle = export_bundle(out / "students" / exported, out / "bundle", ExportConfig(overwrite=True))
    with _timed(stage_seconds, "evaluation"):
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
        "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
