"""`ammkd export`: a trained student folder -> a verified bundle folder (docs/design.md §5-6).

The bundle is built in a temporary folder beside `out` and renamed into place only after the
parity gate passes, so a failed export never leaves a half-written bundle behind.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from ammkd.bundle.backends import OnnxImageEncoder, why_not_runnable_here
from ammkd.bundle.format import MANIFEST, InputSpec, file_entry, write_array, write_manifest
from ammkd.bundle.gallery_format import GALLERY_DIR, GALLERY_MANIFEST, encoder_id
from ammkd.bundle.parity import gate_failure, gate_misses, parity
from ammkd.bundle.preprocess import preprocess, resize_plan, to_rgb, to_uint8_chw, uint8_to_input
from ammkd.bundle.search import topk
from ammkd.common.config import save_config
from ammkd.common.errors import AmmkdError, ConfigError, ExportError
from ammkd.common.files import remove_stale_temps, sha256_file, temp_prefix
from ammkd.distill.data import load_split, without_split
from ammkd.distill.student_folder import INDEX_TEXTS, INDEX_VECTORS, STUDENT_WEIGHTS, load_student
from ammkd.export.float_prefix import choose_float_convs
from ammkd.export.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    SESSION_CONFIG,
    convert_to_ort,
    export_onnx,
    mobile_usability,
    quantize_onnx,
)
from ammkd.export.text_encoder import TEXT_QUANTIZATIONS, write_text_side

TARGETS = ("onnx", "executorch", "coreml")
QUANTIZATIONS = ("none", "fp16", "int8", "int8-dynamic", "int8-weights", "palettize4", "palettize8")
SUPPORTED = {  # target -> the quantizations it offers
    "onnx": ("none", "fp16", "int8", "int8-dynamic", "int8-weights"),
    "executorch": ("none", "int8"),
    "coreml": ("none", "fp16", "int8", "palettize4", "palettize8"),
}
SUFFIX = {"onnx": ".onnx", "executorch": ".pte", "coreml": ".mlpackage"}


@dataclass
class ExportConfig:
    target: str = "onnx"  # onnx | executorch | coreml | all, or a comma-separated list
    quantize: str = "none"  # one of QUANTIZATIONS, or a comma-separated list
    opset: int = 18
    dynamic_batch: bool = False  # ONNX: symbolic batch dimension instead of batch 1
    ort_format: bool = True  # ONNX: also the .ort file of ONNX Runtime Mobile
    quantize_all_ops: bool = False  # ONNX int8: also LayerNorm, Softmax, Add... (may hurt ViTs)
    calibration_images: int = 64  # real training images for static int8 calibration
    # static int8 (ONNX, ExecuTorch): leading convolutions kept float; None: the fewest that pass
    # the top-1 gate on `probe_images` held-out images after the parity ones (float_prefix.py)
    int8_float_convs: int | None = None
    probe_images: int = 256
    coreml_precision: str = "fp16"
    coreml_min_target: str = "iOS16"
    executorch_delegate: str = "xnnpack"  # xnnpack (Android and iOS CPUs) or coreml (iOS/macOS only)
    data: str | None = None  # held-out images for parity; default: the student's data, val split
    parity_images: int = 64
    min_cosine: float | None = None  # None: the per-dtype bound of parity.MIN_COSINE
    min_top1_agreement: float = 0.95
    golden: int = 2
    topk: int = 5
    # the parity gate's policy: an artifact that misses a bound is left out of the bundle (listed
    # in the manifest's `left_out` with its figures); `allow_degraded` keeps it, `strict` fails
    allow_degraded: bool = False
    strict: bool = False
    overwrite: bool = False  # replace a bundle of another model at the destination
    # the text side (text_encoder.py): auto ships it when the teachers' text towers can ship
    # (Hugging Face WordPiece), on fails when they cannot, off leaves it out
    text_encoder: str = "auto"
    text_quantize: str = "none,int8-dynamic"  # of TEXT_QUANTIZATIONS
    text_parity_texts: int = 2000  # index texts the text gate encodes, a seeded sample (0: all)

    def targets(self) -> list[str]:
        names = [t.strip() for t in self.target.split(",") if t.strip()]
        return list(TARGETS) if names == ["all"] else names

    def quantizations(self) -> list[str]:
        return [q.strip() for q in self.quantize.split(",") if q.strip()]

    def text_quantizations(self) -> list[str]:
        return [q.strip() for q in self.text_quantize.split(",") if q.strip()]

    def plan(self) -> list[tuple[str, str]]:
        """The (target, quantization) pairs to export, fp32 first. A quantization that one asked
        target lacks is skipped for it, but each must be offered by at least one of them."""
        self.validate()
        quants = sorted(self.quantizations(), key=lambda q: q != "none")  # readers take the first as reference
        pairs = [(t, q) for q in quants for t in self.targets() if q in self.supported(t)]
        for q in self.quantizations():
            if not any(p[1] == q for p in pairs):
                offer = [t for t in TARGETS if q in self.supported(t)]
                raise ConfigError(f"export: {q!r} is not offered by {self.target}; targets with it: {offer}")
        return pairs

    def supported(self, target: str) -> tuple[str, ...]:
        """The quantizations `target` offers (ExecuTorch's Core ML delegate: none, it computes in fp16)."""
        return ("none",) if target == "executorch" and self.executorch_delegate == "coreml" else SUPPORTED[target]

    def validate(self) -> None:
        from ammkd.export.executorch_export import DELEGATES

        if self.executorch_delegate not in DELEGATES:
            raise ConfigError(
                f"export: unknown ExecuTorch delegate {self.executorch_delegate!r}; use one of {DELEGATES}"
            )
        for t in self.targets() or [""]:
            if t not in TARGETS:
                raise ConfigError(f"export: unknown target {t!r}; use one of {list(TARGETS) + ['all']}")
        for q in self.quantizations() or [""]:
            if q not in QUANTIZATIONS:
                raise ConfigError(f"export: unknown quantization {q!r}; use one of {list(QUANTIZATIONS)}")
        if min(self.parity_images, self.golden, self.topk, self.calibration_images, self.probe_images) < 1:
            raise ConfigError("export: parity_images, golden, topk, calibration_images and probe_images must be >= 1")
        if self.allow_degraded and self.strict:
            raise ConfigError("export: allow_degraded keeps what misses the parity gate, strict fails on it: pick one")
        if self.text_encoder not in ("auto", "on", "off"):
            raise ConfigError(f"export: text_encoder must be auto, on or off; got {self.text_encoder!r}")
        for q in self.text_quantizations() or [""]:
            if q not in TEXT_QUANTIZATIONS:
                raise ConfigError(
                    f"export: unknown text encoder quantization {q!r}; use one of {list(TEXT_QUANTIZATIONS)}"
                )
        if self.text_parity_texts < 0:
            raise ConfigError("export: text_parity_texts must be >= 0 (0: every index text)")
        if self.int8_float_convs is not None and self.int8_float_convs < 0:
            raise ConfigError(
                f"export: int8_float_convs must be >= 0 (or unset: searched); got {self.int8_float_convs}"
            )


def _images(data_spec: str, split: str, n: int, spec: InputSpec, index_texts: list[str] | None = None):
    """The first `n` images of a split as PIL images and uint8 (n, 3, S, S), plus each image's
    caption ids in the index (when `index_texts` is given)."""
    data = load_split(data_spec, split)
    if len(data) == 0:
        raise ExportError(f"{data_spec}: the {split} split is empty; export needs its images (set --data)")
    n = min(n, len(data))
    images = [data.image(i) for i in range(n)]
    u8 = np.stack([to_uint8_chw(im, spec) for im in images])
    captions = None
    if index_texts is not None:
        ids = {t: i for i, t in reversed(list(enumerate(index_texts)))}
        texts, per_image = data.texts()
        captions = [[ids[texts[j]] for j in per_image[i] if texts[j] in ids] for i in range(n)]
    return images, u8, captions


GOLDEN_MAX_SIDE = 320  # px: a golden PNG's longer side at most (larger photos are downscaled)


def golden_size(width: int, height: int, g: int, size: int, cap: int = GOLDEN_MAX_SIDE) -> tuple[int, int]:
    """The size of golden image `g` made from a width x height photo, for input side `size`:
    odd sides, landscape for even g and portrait for odd g (a near-square photo, or one of the
    other orientation, is stretched 1.37 x 0.91 first), the longer side at most `cap`; among the
    odd sizes nearest that, the first for which the manifest's geometry is what decides the
    pixels: truncating the resized long side (torchvision) gives another size than rounding it,
    and the crop margin is 3 mod 4, so round((NW - S) / 2) (torchvision) gives another offset
    than floor((NW - S) / 2)."""
    landscape = g % 2 == 0
    long, short = float(max(width, height)), float(min(width, height))
    if (width > height) != landscape or long < 1.2 * short:
        long, short = long * 1.37, short * 0.91
    f = min(1.0, cap / long)
    long0, short0 = max(3, round(long * f)) | 1, max(1, round(short * f)) | 1  # odd, nearest above
    long0 = min(long0, cap if cap % 2 else cap - 1)

    spec = InputSpec(size=size)

    def decides(n_long: int, n_short: int) -> bool:
        nl = resize_plan(n_long, n_short, spec)[0]  # the manifest's rule
        return nl != max(size, int(size * n_long / n_short)) and (nl - size) % 4 == 3

    steps = sorted(
        ((dl, ds) for dl in range(-20, 21, 2) for ds in range(-20, 21, 2)), key=lambda d: (abs(d[0]) + abs(d[1]), d)
    )
    for dl, ds in steps:
        n_long, n_short = long0 + dl, short0 + ds
        if 1 <= n_short < n_long <= cap and decides(n_long, n_short):
            break
    else:  # no such size near (a tiny input side): the nearest odd one
        n_long, n_short = long0, min(short0, long0 - 2)
    return (n_long, n_short) if landscape else (n_short, n_long)


def golden_picks(images: list, n: int) -> list[int]:
    """Which images become the n golden ones: golden g takes the first image not yet taken that
    is clearly landscape (even g) or portrait (odd g), else the first not yet taken."""
    free = list(range(len(images)))
    picks = []
    for g in range(min(n, len(images))):
        fits = [
            i
            for i in free
            if (images[i].width > 1.2 * images[i].height, images[i].height > 1.2 * images[i].width)[g % 2]
        ]
        picks.append((fits or free)[0])
        free.remove(picks[-1])
    return picks


def golden_photo(img, g: int, size: int):
    """Golden image g's PNG content: the photo in RGB at golden_size (resized with Pillow's
    bicubic when that is not its size). Its preprocessing is the golden input."""
    from PIL import Image

    img = to_rgb(img)
    w, h = golden_size(img.width, img.height, g, size)
    return img if img.size == (w, h) else img.resize((w, h), Image.Resampling.BICUBIC)


def _tools() -> dict:
    names = ["torch", "onnx", "onnxruntime", "onnxscript", "executorch", "coremltools", "timm"]
    names += ["open_clip_torch", "faiss-cpu", "ammkd"]
    tools = {}
    for n in names:
        try:
            tools[n] = version(n)
        except PackageNotFoundError:  # an optional tool that is not installed: nothing to record
            pass
    tools["python"] = platform.python_version()
    return tools


def macs_per_image(model: torch.nn.Module, size: int) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (FLOPs of matmuls/convs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops() // 2)


def _weight_dtype(target: str, quant: str, cfg: ExportConfig) -> str:
    if quant.startswith("int8"):
        return "int8"
    if quant.startswith("palettize"):
        return "palettized" + quant.removeprefix("palettize")
    if quant == "fp16" or (target == "coreml" and cfg.coreml_precision == "fp16"):
        return "float16"
    if target == "executorch" and cfg.executorch_delegate == "coreml":
        return "float16"
    return "float32"


class _Int8Inputs:
    """What static int8 needs, loaded or searched once and only if a quantizer asks: calibration
    images (the first `calibration_images` training images), probe images and the float prefix
    (float_prefix.py).

    Probes are held-out images after the parity gate's (`held_out` split, from `skip` on), so the
    search sees what the gate will see without seeing the gate's own images: on training images
    the student is more confident and int8 agrees more often (Flickr8k Lite0: 96% on train
    probes, 91% on dev). A held-out split with fewer than half `probe_images` left over falls
    back to the training images after the calibration ones."""

    def __init__(self, student, spec: InputSpec, data: tuple[str, str, int], cfg: ExportConfig, tmp: Path, index16):
        self.student, self.spec, self.cfg = student, spec, cfg
        self.train_spec, self.held_out, self.skip = data
        self.tmp, self.index16 = tmp, index16
        self._train: np.ndarray | None = None
        self._probe: tuple[np.ndarray, str] | None = None
        self._prefix: dict | None = None

    def calibration(self) -> np.ndarray:
        return self._training_images()[: self.cfg.calibration_images]

    def probe(self) -> tuple[np.ndarray, str]:
        """(probe inputs, where they come from)."""
        if self._probe is None:
            n = self.skip + self.cfg.probe_images
            held = _images(self.held_out, "val", n, self.spec)[1][self.skip :]
            if len(held) >= self.cfg.probe_images // 2:
                self._probe = uint8_to_input(held, self.spec), f"held-out images {self.skip}..{self.skip + len(held)}"
            else:
                rest = self._training_images()[self.cfg.calibration_images :]
                self._probe = (rest, "training images") if len(rest) else (self.calibration(), "calibration images")
        return self._probe

    def _training_images(self) -> np.ndarray:
        if self._train is None:
            n = self.cfg.calibration_images + self.cfg.probe_images
            self._train = uint8_to_input(_images(self.train_spec, "train", n, self.spec)[1], self.spec)
        return self._train

    def float_prefix(self) -> dict:
        """{"float_convs": k, ...}: the configured count, or the search's result and its trials."""
        if self._prefix is None:
            if self.cfg.int8_float_convs is not None:
                self._prefix = {"float_convs": self.cfg.int8_float_convs, "chosen_by": "config"}
            else:
                fp32 = _fp32_onnx(self.student, self.spec, self.tmp, self.cfg)
                probe, source = self.probe()
                self._prefix = choose_float_convs(
                    fp32,
                    self.calibration(),
                    probe,
                    self.index16,
                    self.cfg.min_top1_agreement,
                    self.cfg.quantize_all_ops,
                ) | {"chosen_by": f"search on {source}"}
        return self._prefix


def _fp32_onnx(student, spec: InputSpec, tmp: Path, cfg: ExportConfig) -> Path:
    """The float ONNX encoder that quantizers start from (exported once per bundle, not shipped)."""
    fp32 = tmp / ".fp32-for-quantization.onnx"
    if not fp32.is_file():
        export_onnx(student, spec.size, fp32, cfg.opset, cfg.dynamic_batch)
    return fp32


def _export_onnx(student, spec: InputSpec, quant: str, path: Path, cfg: ExportConfig, int8: _Int8Inputs) -> dict:
    prefix = int8.float_prefix() if quant == "int8" else {}
    if quant == "none":
        export_onnx(student, spec.size, path, cfg.opset, cfg.dynamic_batch)
    else:
        calibration = int8.calibration() if quant == "int8" else None
        fp32 = _fp32_onnx(student, spec, path.parent, cfg)
        quantize_onnx(fp32, path, quant, calibration, cfg.quantize_all_ops, prefix.get("float_convs", 0))
    info = {"opset": cfg.opset, "mobile_usability": mobile_usability(path)}
    return info | ({"float_prefix": prefix} if prefix else {})


def _export_executorch(student, spec: InputSpec, quant: str, path: Path, cfg: ExportConfig, int8: _Int8Inputs) -> dict:
    from ammkd.export.executorch_export import export_executorch

    prefix = int8.float_prefix() if quant == "int8" else {}
    calibration = int8.calibration() if quant == "int8" else None
    info = export_executorch(
        student,
        spec.size,
        path,
        quant,
        calibration,
        cfg.executorch_delegate,
        cfg.coreml_min_target,
        prefix.get("float_convs", 0),
    )
    return info | ({"float_prefix": prefix} if prefix else {})


def _export_coreml(student, spec: InputSpec, quant: str, path: Path, cfg: ExportConfig, int8: _Int8Inputs) -> dict:
    from ammkd.export.coreml_export import export_coreml

    return export_coreml(student, spec, path, quant, cfg.coreml_precision, cfg.coreml_min_target)


# target -> its writer: (student, input spec, quantization, path, config, int8 inputs) -> format details
EXPORTERS: dict[str, Callable[..., dict]] = {
    "onnx": _export_onnx,
    "executorch": _export_executorch,
    "coreml": _export_coreml,
}


def _embed(fmt: str, path: Path, x: np.ndarray, u8: np.ndarray, quant: str) -> tuple[np.ndarray, str]:
    """Embeddings of an artifact on this host (float32 input x, or uint8 pixels u8 for Core ML's
    image input) and the name of what computed them."""
    if fmt in ("onnx", "ort"):
        return OnnxImageEncoder(path, session_config=SESSION_CONFIG.get(quant)).embed(x), "onnxruntime"
    if fmt == "executorch":
        from ammkd.bundle.backends import ExecuTorchImageEncoder

        return ExecuTorchImageEncoder(path).embed(x), "executorch.runtime"
    from ammkd.bundle.coreml_package import predict_coreml
    from ammkd.export.mil_reference import mil_reference_predict

    if sys.platform == "darwin":
        return predict_coreml(path, u8), "coremltools.predict"
    # Off macOS there is no Core ML runtime: evaluate the saved MIL program's ops in PyTorch
    # (stored weights, fp16 rounding of fp16 ops), on the same images as every other target.
    return mil_reference_predict(path, u8), "mil-reference (the saved MIL program evaluated in PyTorch)"


def _apply_gate(tmp: Path, targets: list[dict], results: dict, cfg: ExportConfig) -> tuple[list[dict], list, list]:
    """The parity gate's policy (ExportConfig). Returns the targets the bundle keeps, the
    manifest's `parity_misses` (lines; kept artifacts that miss, with allow_degraded) and its
    `left_out` (artifacts that missed, removed from `tmp`, with their figures)."""
    missed = gate_misses(results, cfg.min_top1_agreement, cfg.min_cosine)
    if not missed:
        return targets, [], []
    if cfg.strict:
        raise gate_failure(missed, "--strict fails on any miss (without it, misses are left out of the bundle)")
    if cfg.allow_degraded:
        return targets, [f"  {line}" for lines in missed.values() for line in lines], []
    kept, left_out = [], []
    for t in targets:
        name = f"{t['format']}/{t['quantization']}"
        if name not in missed:
            kept.append(t)
            continue
        rel = (t.get("file") or t["package"])["path"]
        shutil.rmtree(tmp / rel) if (tmp / rel).is_dir() else (tmp / rel).unlink()
        left_out.append(
            {"target": name, "path": rel, "dtype": t["dtype"], "misses": missed[name], "parity": t["parity"]}
        )
    if not kept:
        raise gate_failure(missed, "every artifact missed, nothing to ship (--allow-degraded keeps them anyway)")
    return kept, [], left_out


def _entries(tmp: Path, rel: str) -> dict:
    """A target's files: {"file": entry} for a file, {"package": {...}} for a folder (.mlpackage)."""
    p = tmp / rel
    if p.is_file():
        return {"file": file_entry(tmp, rel).to_dict()}
    files = [file_entry(tmp, f.relative_to(tmp).as_posix()).to_dict() for f in sorted(p.rglob("*")) if f.is_file()]
    return {"package": {"path": rel, "files": files}}


def _source(model_dir: Path) -> dict:
    """What a bundle was made from: the student's weights and index, by hash."""
    return {name: sha256_file(model_dir / name) for name in (STUDENT_WEIGHTS, INDEX_VECTORS, INDEX_TEXTS)}


def export_bundle(
    model_dir: str | Path, out: str | Path, cfg: ExportConfig | None = None, notify: Callable[[str], None] = print
) -> Path:
    """Export the student in `model_dir` to a bundle folder `out`: every asked (target,
    quantization) artifact, each through the parity gate, plus the index and golden pairs. A
    gallery in the bundle being replaced is kept or moved aside (`_carry_gallery`; `notify` says which)."""
    cfg = cfg or ExportConfig()
    plan = cfg.plan()
    model_dir, out = Path(model_dir), Path(out)
    student, meta = load_student(model_dir)
    source = _source(model_dir)
    _check_destination(model_dir, out, source, cfg.overwrite)
    texts, index = _read_index(model_dir, student.arch.embed_dim)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out.parent, out.name)  # what killed exports to `out` left behind
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), dir=out.parent))
    try:
        index_entry, index16 = _write_index(tmp, texts, index)
        targets, misses, left_out, images = _export_targets(student, meta, plan, texts, index16, tmp, cfg)
        golden = _write_golden(student, images, index16, tmp, cfg)
        text_side, no_text = _text_side(model_dir, meta, texts, index, index16, tmp, cfg)
        manifest = {
            "model": _model_record(student, meta, source),
            "input": student.arch.input_spec.to_dict(),
            "output": {"name": OUTPUT_NAME, "dim": student.arch.embed_dim, "normalized": True, "dtype": "float32"},
            "targets": targets,
            "parity_misses": misses,
            "left_out": left_out,
            "index": index_entry,
            "golden": golden,
            **({"text_encoder": text_side} if text_side else {"text_encoder_absent": no_text}),
            "tools": _tools(),
        }
        save_config(cfg, tmp / "export_config.json")
        write_manifest(tmp, manifest)
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        notice = _carry_gallery(out, tmp, targets)
        _swap_into_place(tmp, out)
        if notice:
            notify(notice)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _text_side(model_dir: Path, meta: dict, texts, index, index16, tmp: Path, cfg: ExportConfig):
    """(the manifest's `text_encoder`, None), or (None, why the bundle has none)."""
    if cfg.text_encoder == "off":
        return None, "export left it out (text_encoder off)"
    try:
        side, why = write_text_side(model_dir, meta, texts, index, index16, tmp, cfg)
    except AmmkdError as e:  # e.g. the teachers are not on this machine
        side, why = None, str(e)
    if side is None and cfg.text_encoder == "on":
        raise ExportError(f"export: no text encoder can ship: {why}")
    return side, why


def _read_index(model_dir: Path, dim: int) -> tuple[list[str], np.ndarray]:
    """The student folder's index: (N texts, (N, dim) float32 class vectors)."""
    try:
        texts = json.loads((model_dir / INDEX_TEXTS).read_text(encoding="utf-8"))
        index = np.load(model_dir / INDEX_VECTORS, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as e:  # missing, truncated or not JSON / npy
        raise ExportError(f"{model_dir}: unreadable index ({INDEX_TEXTS}, {INDEX_VECTORS}): {e}") from None
    if index.shape != (len(texts), dim):
        raise ExportError(f"{model_dir}: index {index.shape} does not match {len(texts)} texts x dim {dim}")
    return texts, index


def _write_index(tmp: Path, texts: list[str], index: np.ndarray) -> tuple[dict, np.ndarray]:
    """Write the bundle's index (fp16 vectors, texts, a faiss copy); returns (the manifest's
    `index`, the vectors as stored, (N, D) float32), which every parity check searches."""
    vectors = write_array(tmp, "index/class_vectors.f16.bin", index, "float16")
    index16 = np.frombuffer((tmp / vectors.path).read_bytes(), "<f2").reshape(index.shape).astype(np.float32)
    (tmp / "index" / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    faiss_entry = _write_faiss(tmp, index16)
    entry = {
        "count": len(texts),
        "dim": int(index.shape[1]),
        "normalized": True,
        "metric": "inner_product",
        "vectors": vectors.to_dict(),
        "texts": file_entry(tmp, "index/texts.json").to_dict(),
        **({"faiss": faiss_entry} if faiss_entry else {}),
    }
    return entry, index16


def _export_targets(student, meta: dict, plan, texts: list[str], index16: np.ndarray, tmp: Path, cfg: ExportConfig):
    """Write every planned artifact into `tmp`, measure each against PyTorch on held-out images
    and apply the parity gate. Returns (the manifest's targets, parity_misses, left_out, and the
    held-out images, which the golden pairs are picked from)."""
    spec = student.arch.input_spec
    # held-out images for parity and golden pairs: --data as given, else the val split of the
    # student's dataset even when its spec names :train; calibration from that dataset's train split
    held_out = cfg.data or without_split(meta["data"])
    train_spec = without_split(cfg.data or meta["data"])
    parity_n = max(cfg.parity_images, cfg.golden)
    int8 = _Int8Inputs(student, spec, (train_spec, held_out, parity_n), cfg, tmp, index16)
    images, u8, captions = _images(held_out, "val", parity_n, spec, texts)
    x = uint8_to_input(u8, spec)
    with torch.no_grad():
        torch_emb = student(torch.from_numpy(x)).numpy()

    targets, results = [], {}
    for target, quant in plan:
        t0 = time.time()
        rel = "image_encoder" + ("" if quant == "none" else f".{quant}") + SUFFIX[target]
        info = EXPORTERS[target](student, spec, quant, tmp / rel, cfg, int8)
        artifacts = [(target, rel)]
        if target == "onnx" and cfg.ort_format:
            ort_file = convert_to_ort(tmp / rel, tmp / rel.replace(".onnx", ".ort"), basic=quant == "fp16")
            artifacts.append(("ort", ort_file.name))
        dtype = _weight_dtype(target, quant, cfg)
        for fmt, path in artifacts:
            skip = why_not_runnable_here({"format": fmt, "details": info}) if fmt == "executorch" else None
            if skip:  # nothing on this host runs it (Core ML off macOS has its reference evaluator)
                par = {"skipped": skip}
            else:
                emb, evaluator = _embed(fmt, tmp / path, x, u8, quant)
                n = len(emb)
                par = parity(torch_emb[:n], emb, index16, cfg.topk, captions[:n]) | {"evaluator": evaluator}
            results[f"{fmt}/{quant}"] = (dtype, par)
            entry = {"role": "image_encoder", "format": fmt, **_entries(tmp, path), "dtype": dtype}
            entry |= {"quantization": quant, "batch": "dynamic" if cfg.dynamic_batch and fmt != "coreml" else 1}
            entry |= {"input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "parity": par, "details": info}
            if fmt in ("onnx", "ort") and quant in SESSION_CONFIG:
                entry["session_config"] = SESSION_CONFIG[quant]
            files = entry["package"]["files"] if "package" in entry else [entry["file"]]
            entry["bytes"] = sum(f["bytes"] for f in files)
            entry["export_seconds"] = round(time.time() - t0, 1)
            targets.append(entry)
    for stray in tmp.glob(".fp32-for-quantization.onnx"):
        stray.unlink()
    return (*_apply_gate(tmp, targets, results, cfg), images)


def _write_golden(student, images: list, index16: np.ndarray, tmp: Path, cfg: ExportConfig) -> list[dict]:
    """Golden pairs, the manifest's `golden`: each PNG is a photo of odd, non-square size
    (golden_photo), so that every reader's preprocessing of it goes through the resize and the
    crop; its input tensor is the Python preprocessing of the PNG as written, its embedding
    PyTorch's of that tensor, with its top-k over the index."""
    spec = student.arch.input_spec
    golden = []
    (tmp / "golden").mkdir()
    for g, i in enumerate(golden_picks(images, cfg.golden)):
        png = tmp / f"golden/image_{g}.png"
        golden_photo(images[i], g, spec.size).save(png)
        gx = preprocess(png, spec)
        with torch.no_grad():
            g_emb = student(torch.from_numpy(gx)).numpy()[0]
        ids, scores = topk(g_emb, index16, cfg.topk)
        golden.append(
            {
                "image": file_entry(tmp, f"golden/image_{g}.png").to_dict(),
                "input": write_array(tmp, f"golden/input_{g}.f32.bin", gx, "float32").to_dict(),
                "embedding": write_array(tmp, f"golden/embedding_{g}.f32.bin", g_emb, "float32").to_dict(),
                "topk_ids": ids.tolist(),
                "topk_scores": [round(float(s), 6) for s in scores],
            }
        )
    return golden


def _model_record(student, meta: dict, source: dict) -> dict:
    """The manifest's `model`: what the student is, how it was trained and from what."""
    return {
        "id": f"ammkd-{student.arch.backbone}-{student.arch.embed_dim}",
        "teachers": meta["teacher_ids"],
        "fusion": meta["fusion"],
        "weighting": meta["weighting"],
        **({"weighting_options": meta["weighting_options"]} if "weighting_options" in meta else {}),
        "params": sum(p.numel() for p in student.parameters()),
        "macs_per_image": macs_per_image(student, student.arch.image_size),
        "source": source,
    }


def _check_destination(model_dir: Path, out: Path, source: dict, overwrite: bool) -> None:
    """Refuse an `out` whose replacement would destroy something that is not a bundle, or a
    bundle of another model (unless `overwrite`)."""
    src, dst = model_dir.resolve(), out.resolve()
    if dst == src or dst in src.parents:
        raise ExportError(f"{out}: the bundle folder may not be the student folder or contain it")
    if dst.exists() and not dst.is_dir():
        raise ExportError(f"{out}: exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not (dst / MANIFEST).is_file():
        raise ExportError(f"{out}: exists, is not empty and is not a bundle; choose another --out")
    if (dst / MANIFEST).is_file() and not overwrite:
        try:
            old = json.loads((dst / MANIFEST).read_text(encoding="utf-8")).get("model", {}).get("source")
        except (OSError, ValueError, AttributeError):
            old = None
        if old != source:
            raise ExportError(
                f"{out}: already holds a bundle of another model; pass --overwrite to replace it "
                "or choose another --out"
            )


def _carry_gallery(out: Path, new: Path, targets: list[dict]) -> str | None:
    """A user's gallery (embeddings are work) in the bundle `out` that `new` replaces: copied into
    `new` when `new` still has the encoder it was embedded with (same files), else moved aside
    beside `out`, never deleted. Returns what was done, or None when there was no gallery."""
    old = out / GALLERY_DIR
    if not old.is_dir():
        return None
    try:
        encoder = json.loads((old / GALLERY_MANIFEST).read_text(encoding="utf-8")).get("encoder")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        encoder = None
    if encoder is not None and any(encoder_id(t) == encoder for t in targets):
        shutil.copytree(old, new / GALLERY_DIR)
        return f"{old}: kept (the new bundle has the encoder it was embedded with)"
    aside = out.with_name(f"{out.name}.gallery-{time.strftime('%Y%m%d-%H%M%S')}")
    old.rename(aside)
    return (
        f"{old}: moved aside to {aside} (the new bundle's encoders differ from the one that embedded it); "
        "rebuild it with `ammkd search --gallery`"
    )


def _swap_into_place(new: Path, out: Path) -> None:
    """Rename the finished bundle to `out`; an old bundle there is moved aside first and removed
    last, so at every moment `out` is either the old bundle or the new one."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_faiss(bundle: Path, index16: np.ndarray) -> dict | None:
    """A faiss IndexFlatIP for hosts (optional accelerator; the .f16.bin stays the source of truth)."""
    import faiss

    flat = faiss.IndexFlatIP(index16.shape[1])
    flat.add(np.ascontiguousarray(index16, dtype=np.float32))
    faiss.write_index(flat, str(bundle / "index/class_vectors.faiss"))
    return file_entry(bundle, "index/class_vectors.faiss").to_dict()
