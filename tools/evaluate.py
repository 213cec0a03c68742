"""Evaluate whatever a path names: a bundle (through its runtime), a student folder or a teacher.

Host-side: it reads images with the training data loaders (distill/data.py) and runs bundles
with the device runtime (mobile_runtime/retriever.py), so it sits above both.
"""

from __future__ import annotations

import numpy as np

from ammkd.distill.data import ImageTextData
from ammkd.distill.evaluate import evaluate_student, evaluate_teacher, recall_at_k


def evaluate_bundle(
    bundle_dir,
    data,
    skip_bad: bool = False,
    backend: str = "auto",
    quantization: str | None = None,
    text_quantization: str | None = None,
) -> dict[str, float]:
    """A bundle through its runtime: the image embeddings of one of its targets (`backend`,
    `quantization` as in `Retriever.open`) against its captions' vectors: their fp16 index rows,
    or, with `text_quantization` (a text encoder variant: none, int8-dynamic, ...), the bundle's
    text encoder's embeddings of the raw captions.

    With index rows every caption of `data` must be in the bundle's text set.
    """
    from ammkd.bundle.preprocess import uint8_to_input
    from ammkd.common.errors import DataError
    from ammkd.distill.image_tensors import image_tensor
    from ammkd.mobile_runtime.retriever import Retriever

    r = Retriever.open(bundle_dir, backend=backend, quantization=quantization)
    spec = r.bundle.input_spec
    images, data, _ = image_tensor(data, spec, skip_bad)
    emb = r.encoder.embed(uint8_to_input(images, spec))
    texts, per_image = data.texts()
    if text_quantization is not None:
        r.text_quantization = text_quantization
        return recall_at_k(emb, np.stack([r.embed_text(t) for t in texts]), per_image)
    row = {t: i for i, t in enumerate(r.texts)}
    missing = [t for t in texts if t not in row]
    if missing:
        raise DataError(
            f"{bundle_dir}: {len(missing)} caption(s) of {data.name} are not in the bundle's "
            f"text set, e.g. {missing[0]!r}; evaluate the student folder, or use the bundle's text encoder"
        )
    return recall_at_k(emb, r.index[[row[t] for t in texts]], per_image)


def evaluate(model: str, data_spec: str, split: str = "val", skip_bad: bool = False) -> dict[str, float]:
    """Recall of `model` on `split` of a DATA spec (a split named in the spec wins)."""
    from ammkd.distill.data import load_split

    return evaluate_on(model, load_split(data_spec, split), skip_bad)


def evaluate_on(model: str, data: ImageTextData, skip_bad: bool = False) -> dict[str, float]:
    """Dispatch on what `model` is: a bundle, a student folder, or a teacher (folder or spec).
    With `skip_bad`, unreadable images (and their captions) are left out of the evaluation."""
    from pathlib import Path

    from ammkd.bundle.format import MANIFEST
    from ammkd.distill.student_folder import STUDENT_META
    from ammkd.distill.teachers import load_teacher

    path = Path(model)
    if (path / MANIFEST).is_file():
        return evaluate_bundle(path, data, skip_bad)
    if (path / STUDENT_META).is_file():
        return evaluate_student(path, data, skip_bad)
    return evaluate_teacher(load_teacher(model), data, skip_bad=skip_bad)
