"""`ammkd export`: a trained student folder -> a verified bundle folder (DESIGN.md, "The bundle").

The bundle is built in a temporary folder beside `out` and renamed into place only after the
parity gate passes, so a failed export never leaves a half-written bundle behind.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from ammkd.common.config import save_config
from ammkd.common.errors import ConfigError, ExportError
from ammkd.distill.data import load_split
from ammkd.distill.train import INDEX_TEXTS, INDEX_VECTORS, load_student
from ammkd.export.bundle_format import MANIFEST, InputSpec, file_entry, write_array, write_manifest
from ammkd.export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from ammkd.mobile_runtime.backends import OnnxImageEncoder
from ammkd.mobile_runtime.preprocess import to_uint8_chw, uint8_to_input
from ammkd.mobile_runtime.search import topk

TARGETS = ("onnx",)
QUANTIZATIONS = ("none",)


@dataclass
class ExportConfig:
    target: str = "onnx"
    quantize: str = "none"
    opset: int = 18
    data: str | None = None  # held-out images for parity; default: the student's data, val split
    parity_images: int = 64
    min_cosine: float = 0.999
    min_top1_agreement: float = 0.95
    golden: int = 2
    topk: int = 5
    allow_degraded: bool = False

    def validate(self) -> None:
        if self.target not in TARGETS + ("all",):
            raise ConfigError(f"export: unknown target {self.target!r}; use one of {list(TARGETS) + ['all']}")
        if self.quantize not in QUANTIZATIONS:
            raise ConfigError(
                f"export: quantization {self.quantize!r} not supported yet; use one of {list(QUANTIZATIONS)}"
            )
        if self.parity_images < 1 or self.golden < 1 or self.topk < 1:
            raise ConfigError("export: parity_images, golden and topk must be >= 1")


def _heldout(spec: InputSpec, data_spec: str, n: int):
    data = load_split(data_spec, "val")
    if len(data) == 0:
        raise ExportError(f"{data_spec}: the val split is empty; parity needs held-out images (set ExportConfig.data)")
    n = min(n, len(data))
    images = [data.image(i) for i in range(n)]
    u8 = np.stack([to_uint8_chw(im, spec) for im in images])
    return images, u8


def _parity(torch_emb: np.ndarray, ort_emb: np.ndarray, index: np.ndarray, index16: np.ndarray, k: int) -> dict:
    """The exported model vs PyTorch on the same inputs, both searched in the shipped fp16 index;
    plus what storing the index in fp16 alone changes (PyTorch, fp32 vs fp16 index)."""
    cos = (torch_emb * ort_emb).sum(1) / (np.linalg.norm(torch_emb, axis=1) * np.linalg.norm(ort_emb, axis=1))
    ref = [topk(e, index16, k)[0] for e in torch_emb]
    got = [topk(e, index16, k)[0] for e in ort_emb]
    ref32 = [topk(e, index, 1)[0] for e in torch_emb]
    return {
        "images": len(cos),
        "cosine_min": round(float(cos.min()), 6),
        "cosine_mean": round(float(cos.mean()), 6),
        "top1_agreement": round(float(np.mean([r[0] == g[0] for r, g in zip(ref, got)])), 4),
        f"top{k}_overlap": round(float(np.mean([len(set(r) & set(g)) / k for r, g in zip(ref, got)])), 4),
        "index_fp16_top1_agreement": round(float(np.mean([a[0] == b[0] for a, b in zip(ref32, ref)])), 4),
    }


def _tools() -> dict:
    names = ["torch", "onnx", "onnxruntime", "onnxscript", "timm", "open_clip_torch", "faiss-cpu", "ammkd"]
    tools = {}
    for n in names:
        try:
            tools[n] = version(n)
        except PackageNotFoundError:  # an optional tool that is not installed: nothing to record
            pass
    tools["python"] = platform.python_version()
    return tools


def export_bundle(model_dir: str | Path, out: str | Path, cfg: ExportConfig | None = None) -> Path:
    """Export the student in `model_dir` to a bundle folder `out` (replaced if it exists)."""
    cfg = cfg or ExportConfig()
    model_dir, out = Path(model_dir), Path(out)
    _check_destination(model_dir, out)
    student, meta = load_student(model_dir)
    spec = student.arch.input_spec
    try:
        texts = json.loads((model_dir / INDEX_TEXTS).read_text(encoding="utf-8"))
        index = np.load(model_dir / INDEX_VECTORS, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as e:  # missing, truncated or not JSON / npy
        raise ExportError(f"{model_dir}: unreadable index ({INDEX_TEXTS}, {INDEX_VECTORS}): {e}") from None
    if index.shape != (len(texts), student.arch.embed_dim):
        raise ExportError(
            f"{model_dir}: index {index.shape} does not match {len(texts)} texts x dim {student.arch.embed_dim}"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        export_onnx(student, spec.size, tmp / "image_encoder.onnx", cfg.opset)
        vectors = write_array(tmp, "index/class_vectors.f16.bin", index, "float16")
        index16 = np.frombuffer((tmp / vectors.path).read_bytes(), "<f2").reshape(index.shape).astype(np.float32)
        (tmp / "index" / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        faiss_entry = _write_faiss(tmp, index16)

        images, u8 = _heldout(spec, cfg.data or meta["data"], max(cfg.parity_images, cfg.golden))
        x = uint8_to_input(u8, spec)
        with torch.no_grad():
            torch_emb = student(torch.from_numpy(x)).numpy()
        ort_emb = OnnxImageEncoder(tmp / "image_encoder.onnx").embed(x)
        parity = _parity(torch_emb, ort_emb, index, index16, cfg.topk)
        _gate(parity, cfg)

        golden = []
        (tmp / "golden").mkdir()
        for g in range(min(cfg.golden, len(images))):
            images[g].save(tmp / f"golden/image_{g}.png")
            ids, scores = topk(ort_emb[g], index16, cfg.topk)
            golden.append(
                {
                    "image": file_entry(tmp, f"golden/image_{g}.png").to_dict(),
                    "input": write_array(tmp, f"golden/input_{g}.f32.bin", x[g : g + 1], "float32").to_dict(),
                    "embedding": write_array(tmp, f"golden/embedding_{g}.f32.bin", ort_emb[g], "float32").to_dict(),
                    "topk_ids": ids.tolist(),
                    "topk_scores": [round(float(s), 6) for s in scores],
                }
            )
        manifest = {
            "model": {
                "id": f"ammkd-{student.arch.backbone}-{student.arch.embed_dim}",
                "teachers": meta["teacher_ids"],
                "fusion": meta["fusion"],
                "weighting": meta["weighting"],
                "params": sum(p.numel() for p in student.parameters()),
            },
            "input": spec.to_dict(),
            "output": {"name": OUTPUT_NAME, "dim": student.arch.embed_dim, "normalized": True, "dtype": "float32"},
            "targets": [
                {
                    "role": "image_encoder",
                    "format": "onnx",
                    "file": file_entry(tmp, "image_encoder.onnx").to_dict(),
                    "dtype": "float32",
                    "quantization": cfg.quantize,
                    "batch": 1,
                    "opset": cfg.opset,
                    "input_name": INPUT_NAME,
                    "output_name": OUTPUT_NAME,
                    "parity": parity,
                }
            ],
            "index": {
                "count": len(texts),
                "dim": int(index.shape[1]),
                "normalized": True,
                "metric": "inner_product",
                "vectors": vectors.to_dict(),
                "texts": file_entry(tmp, "index/texts.json").to_dict(),
                **({"faiss": faiss_entry} if faiss_entry else {}),
            },
            "golden": golden,
            "tools": _tools(),
        }
        save_config(cfg, tmp / "export_config.json")
        write_manifest(tmp, manifest)
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        _swap_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _check_destination(model_dir: Path, out: Path) -> None:
    """Refuse an `out` whose replacement would destroy something that is not a bundle."""
    src, dst = model_dir.resolve(), out.resolve()
    if dst == src or dst in src.parents:
        raise ExportError(f"{out}: the bundle folder may not be the student folder or contain it")
    if dst.exists() and not dst.is_dir():
        raise ExportError(f"{out}: exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not (dst / MANIFEST).is_file():
        raise ExportError(f"{out}: exists, is not empty and is not a bundle; choose another --out")


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


def _gate(parity: dict, cfg: ExportConfig) -> None:
    """Fail the export when the exported model misses its parity bounds (unless allowed)."""
    missed = []
    if parity["cosine_min"] < cfg.min_cosine:
        missed.append(f"cosine_min {parity['cosine_min']:.6f} < {cfg.min_cosine}")
    if parity["top1_agreement"] < cfg.min_top1_agreement:
        missed.append(f"top1_agreement {parity['top1_agreement']:.3f} < {cfg.min_top1_agreement}")
    if missed and not cfg.allow_degraded:
        raise ExportError("parity gate failed for onnx/fp32: " + "; ".join(missed) + " (--allow-degraded to keep it)")
