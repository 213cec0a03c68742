"""Retrieval evaluation: image->text and text->image Recall@K with all captions of each image."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    pass

KS = (1, 5, 10)


def recall_at_k(
    image_emb: np.ndarray | torch.Tensor,
    text_emb: np.ndarray | torch.Tensor,
    texts_of_image: list[list[int]],
    ks=KS,
) -> dict[str, float]:
    """Flickr/COCO retrieval recall in percent, counted by text identity, deterministic.

    image_emb (I, D) and text_emb (U, D): unit rows, one per image and one per *distinct* text;
    texts_of_image[i]: the ids (into text_emb) of image i's captions, repeats kept.
    i2t: an image hits at K if one of its texts is among its top-K distinct texts.
    t2i: every caption is a query (repeats kept, Flickr8k dev: 5,000) and hits at K if one of
    the images that have this text is among its top-K images.
    Ranks order by score, exact ties towards the lower id, so equal inputs give equal recall.
    """
    img = torch.as_tensor(np.asarray(image_emb), dtype=torch.float32)
    txt = torch.as_tensor(np.asarray(text_emb), dtype=torch.float32)
    images_of_text: list[list[int]] = [[] for _ in range(len(txt))]
    for i, ids in enumerate(texts_of_image):
        for u in dict.fromkeys(ids):
            images_of_text[u].append(i)
    i2t = _first_hit_ranks(img, txt, [sorted(set(ids)) for ids in texts_of_image])  # (I,)
    t2i = _first_hit_ranks(txt, img, images_of_text)  # (U,)
    queries = torch.as_tensor([u for ids in texts_of_image for u in ids], dtype=torch.long)
    t2i = t2i[queries]
    out: dict[str, float] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            out[f"{name}_R@{k}"] = 100.0 * (ranks < k).float().mean().item()
    out["mean_recall"] = float(np.mean([out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks]))
    return {k: round(v, 2) for k, v in out.items()}


def _first_hit_ranks(queries: torch.Tensor, keys: torch.Tensor, positives: list[list[int]], chunk: int = 1024):
    """Per query, the 0-based rank of its best positive key when keys are ordered by score
    (descending), exact ties towards the lower key id; len(keys) where a query has none.

    queries (Q, D), keys (N, D) float32; positives[q]: ascending key ids. Returns (Q,) long.
    """
    n = len(keys)
    width = max((len(p) for p in positives), default=0)
    pos = torch.full((len(queries), max(width, 1)), -1, dtype=torch.long)
    for q, p in enumerate(positives):
        pos[q, : len(p)] = torch.as_tensor(p, dtype=torch.long)
    key_ids = torch.arange(n)
    ranks = torch.full((len(queries),), n, dtype=torch.long)
    for lo in range(0, len(queries), chunk):
        sim = queries[lo : lo + chunk] @ keys.T  # (q, N)
        p = pos[lo : lo + chunk]
        s = sim.gather(1, p.clamp(min=0)).masked_fill(p < 0, -torch.inf)
        best = s.max(dim=1).values  # the best positive's score
        best_id = torch.where(s == best[:, None], p, n).min(dim=1).values  # its lowest id among equals
        above = (sim > best[:, None]).sum(dim=1) + ((sim == best[:, None]) & (key_ids < best_id[:, None])).sum(dim=1)
        ranks[lo : lo + chunk] = torch.where(p[:, 0] >= 0, above, n)
    return ranks


def evaluate_teacher(teacher, data, images: np.ndarray | None = None, skip_bad: bool = False) -> dict[str, float]:
    """A teacher's own image and text encoders on `data` (ImageTextData); `images`, when given,
    are its decoded uint8 (N, 3, S, S) at the teacher's input size."""
    from ammkd.distill.image_tensors import image_tensor

    if images is None:
        images, data, _ = image_tensor(data, teacher.spec, skip_bad)
    texts, per_image = data.texts()
    img = teacher.encode_images(images, key_parts=tuple(data.sources))  # a frozen prefix: from its cache
    return recall_at_k(img, teacher.encode_texts(texts), per_image)


def evaluate_student(model_dir, data, skip_bad: bool = False) -> dict[str, float]:
    """A student folder: its image embeddings against the fused class vectors of the captions."""
    from ammkd.distill.image_tensors import image_tensor
    from ammkd.distill.student_folder import fused_text_vectors, load_fusion, load_student
    from ammkd.distill.teachers import load_teacher

    student, meta = load_student(model_dir)
    images, data, _ = image_tensor(data, student.arch.input_spec, skip_bad)
    with torch.no_grad():
        x = torch.from_numpy(images).float() / 255.0
        img = torch.cat([student(x[i : i + 256]) for i in range(0, len(x), 256)])
    unique, per_image = data.texts()
    teachers = [load_teacher(t) for t in meta["teachers"]]
    fused = fused_text_vectors(teachers, unique, meta["fusion"], load_fusion(model_dir, meta))
    return recall_at_k(img, fused, per_image)
