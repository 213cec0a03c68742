"""The student folder: what `ammkd distill` writes and what evaluation and export read.

    student.safetensors   the student's weights
    fusion.safetensors    the fusion network (network fusion only)
    student.json          arch, teachers, fusion, weighting and its options, training facts
    index_texts.json      the deployable text set (every split's captions + class prompts)
    index_vectors.npy     (N, D_f) float32 fused class vectors of those texts
    config.json, metrics.jsonl, learning_curve.png

The training loop is train.py; this module only names, writes the index of, and loads a folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ammkd.common.errors import ConfigError, DataError
from ammkd.common.files import atomic_save_npy, atomic_write_json
from ammkd.distill.class_vectors import class_vectors
from ammkd.distill.data import load_split, without_split
from ammkd.distill.fusion import FusionNetwork, fuse_class_vectors, uses_network
from ammkd.distill.student import Student, StudentArch
from ammkd.distill.teachers import Teacher

STUDENT_WEIGHTS = "student.safetensors"
FUSION_WEIGHTS = "fusion.safetensors"
STUDENT_META = "student.json"
INDEX_TEXTS = "index_texts.json"
INDEX_VECTORS = "index_vectors.npy"


def fused_text_vectors(
    teachers: list[Teacher], texts: list[str], fusion: str = "concat", net: FusionNetwork | None = None
) -> np.ndarray:
    """(N, D_f) fused class vectors of `texts`: what the student's embeddings are matched against."""
    vecs = [class_vectors(t, texts) for t in teachers]
    if net is None:
        return fuse_class_vectors(vecs, fusion)
    with torch.no_grad():
        return net.texts([torch.from_numpy(v) for v in vecs]).numpy()


def load_fusion(model_dir: str | Path, meta: dict) -> FusionNetwork | None:
    """The trained fusion network of a student folder (None for the parameter-free concat)."""
    if not uses_network(meta.get("fusion", "concat")):
        return None
    path = Path(model_dir) / FUSION_WEIGHTS
    if not path.is_file():
        raise ConfigError(f"{path}: missing; the student folder is incomplete (re-run ammkd distill)")
    net = FusionNetwork(meta["fusion_dims"], meta["arch"]["embed_dim"])
    try:
        net.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError) as e:
        raise ConfigError(f"{path}: does not load into the fusion network in {STUDENT_META} ({e})") from None
    return net.eval().requires_grad_(False)


def load_student(model_dir: str | Path) -> tuple[Student, dict]:
    """Rebuild a trained student from its folder: (model in eval mode, student.json metadata)."""
    model_dir = Path(model_dir)
    meta_path = model_dir / STUDENT_META
    if not meta_path.is_file():
        raise ConfigError(f"{model_dir}: not a student folder (no {STUDENT_META})")
    weights = model_dir / STUDENT_WEIGHTS
    if not weights.is_file():
        raise ConfigError(f"{weights}: missing; the student folder is incomplete (re-run ammkd distill)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        student = Student(StudentArch(**meta["arch"]))
        student.load_state_dict(load_file(str(weights)))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{meta_path}: unreadable student metadata ({type(e).__name__}: {e})") from None
    except (RuntimeError, OSError) as e:  # safetensors header errors, shape mismatches
        raise ConfigError(f"{weights}: does not load into the architecture in {STUDENT_META} ({e})") from None
    return student.eval(), meta


def write_index(out: Path, teachers: list[Teacher], data: str, fusion: str, net: FusionNetwork | None) -> None:
    """The deployable text set: every caption of every split of the dataset (also when cfg.data
    names the train split), plus the class prompts, fused as the student was trained (`fusion`, `net`)."""
    texts: dict[str, None] = {}
    for split in ("train", "val", "test"):
        try:
            d = load_split(without_split(data), split)
        except DataError:  # a dataset without this split: nothing to add
            continue
        texts.update(dict.fromkeys(d.texts()[0]))
        texts.update(dict.fromkeys(d.class_prompts))
    texts_list = list(texts)
    atomic_write_json(out / INDEX_TEXTS, texts_list)
    atomic_save_npy(out / INDEX_VECTORS, fused_text_vectors(teachers, texts_list, fusion, net))


def teacher_id(t: Teacher) -> str:
    """A host-independent name for a teacher: its folder name and weights hash, or its spec."""
    if t.fingerprint.endswith(":random-init") or not Path(t.name).is_dir():
        return t.fingerprint
    return f"{Path(t.name).name}@sha256:{t.fingerprint[:16]}"
