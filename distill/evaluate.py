"""Retrieval evaluation: image->text and text->image Recall@K with all captions of each image."""

from __future__ import annotations

import numpy as np
import torch

KS = (1, 5, 10)


def recall_at_k(
    image_emb: np.ndarray | torch.Tensor, text_emb: np.ndarray | torch.Tensor, text_owner: np.ndarray, ks=KS
) -> dict[str, float]:
    """Standard Flickr/COCO retrieval recall, in percent.

    image_emb (I, D) and text_emb (T, D) unit rows; text_owner (T,) the image of each text.
    i2t: an image scores a hit at K if any of its captions is among its top-K texts.
    t2i: a caption scores a hit at K if its image is among its top-K images.
    """
    img = torch.as_tensor(np.asarray(image_emb), dtype=torch.float32)
    txt = torch.as_tensor(np.asarray(text_emb), dtype=torch.float32)
    owner = torch.as_tensor(np.asarray(text_owner), dtype=torch.long)
    sim = img @ txt.T  # (I, T)
    kmax = max(ks)
    out: dict[str, float] = {}
    # i2t: the rank of an image's best-ranked own caption.
    order = sim.argsort(dim=1, descending=True)
    own = owner[order] == torch.arange(len(img))[:, None]
    first_hit = torch.where(own.any(dim=1), own.float().argmax(dim=1), len(txt))  # no caption: never a hit
    for k in ks:
        out[f"i2t_R@{k}"] = 100.0 * (first_hit < k).float().mean().item()
    top = sim.T.topk(min(kmax, len(img)), dim=1).indices  # (T, k)
    for k in ks:
        out[f"t2i_R@{k}"] = 100.0 * (top[:, :k] == owner[:, None]).any(dim=1).float().mean().item()
    out["mean_recall"] = float(np.mean([out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks]))
    return {k: round(v, 2) for k, v in out.items()}


def evaluate_teacher(teacher, data, images: np.ndarray | None = None, skip_bad: bool = False) -> dict[str, float]:
    """A teacher's own image and text encoders on `data` (ImageTextData); `images`, when given,
    are its decoded uint8 (N, 3, S, S) at the teacher's input size."""
    from ammkd.distill.data import image_tensor

    if images is None:
        images, data, _ = image_tensor(data, teacher.spec, skip_bad)
    texts, owner = data.flat_captions()
    img = teacher.encode_images(images, key_parts=tuple(data.sources))  # a frozen prefix: from its cache
    return recall_at_k(img, teacher.encode_texts(texts), owner)


def evaluate_student(model_dir, data, skip_bad: bool = False) -> dict[str, float]:
    """A student folder: its image embeddings against the fused class vectors of the captions."""
    from ammkd.distill.data import image_tensor
    from ammkd.distill.teachers import load_teacher
    from ammkd.distill.train import fused_text_vectors, load_fusion, load_student

    student, meta = load_student(model_dir)
    images, data, _ = image_tensor(data, student.arch.input_spec, skip_bad)
    with torch.no_grad():
        x = torch.from_numpy(images).float() / 255.0
        img = torch.cat([student(x[i : i + 256]) for i in range(0, len(x), 256)])
    unique, per_image = data.texts()
    teachers = [load_teacher(t) for t in meta["teachers"]]
    fused = fused_text_vectors(teachers, unique, meta["fusion"], load_fusion(model_dir, meta))
    ids = np.array([i for ids in per_image for i in ids])
    return recall_at_k(img, fused[ids], data.flat_captions()[1])


def evaluate_bundle(
    bundle_dir, data, skip_bad: bool = False, backend: str = "auto", quantization: str | None = None
) -> dict[str, float]:
    """A bundle through its runtime: the image embeddings of one of its targets (`backend`,
    `quantization` as in `Retriever.open`) against its fp16 index rows.

    Every caption of `data` must be in the bundle's text set (the student has no text encoder).
    """
    from ammkd.common.errors import DataError
    from ammkd.distill.data import image_tensor
    from ammkd.mobile_runtime.preprocess import uint8_to_input
    from ammkd.mobile_runtime.retriever import Retriever

    r = Retriever.open(bundle_dir, backend=backend, quantization=quantization)
    spec = r.bundle.input_spec
    images, data, _ = image_tensor(data, spec, skip_bad)
    emb = r.encoder.embed(uint8_to_input(images, spec))
    texts, owner = data.flat_captions()
    row = {t: i for i, t in enumerate(r.texts)}
    missing = [t for t in texts if t not in row]
    if missing:
        raise DataError(
            f"{bundle_dir}: {len(missing)} caption(s) of {data.name} are not in the bundle's "
            f"text set, e.g. {missing[0]!r}; evaluate the student folder instead"
        )
    return recall_at_k(emb, r.index[[row[t] for t in texts]], owner)


def evaluate(model: str, data_spec: str, split: str = "val", skip_bad: bool = False) -> dict[str, float]:
    """Dispatch on what `model` is: a bundle, a student folder, or a teacher (folder or spec).
    With `skip_bad`, unreadable images (and their captions) are left out of the evaluation."""
    from pathlib import Path

    from ammkd.distill.data import load_split
    from ammkd.distill.teachers import load_teacher
    from ammkd.distill.train import STUDENT_META
    from ammkd.export.bundle_format import MANIFEST

    data = load_split(data_spec, split)
    path = Path(model)
    if (path / MANIFEST).is_file():
        return evaluate_bundle(path, data, skip_bad)
    if (path / STUDENT_META).is_file():
        return evaluate_student(path, data, skip_bad)
    return evaluate_teacher(load_teacher(model), data, skip_bad=skip_bad)
