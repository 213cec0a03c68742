"""The parity gate: an exported encoder against the PyTorch student on the same held-out inputs.

For each artifact it records the cosine of the two embeddings (min, mean), whether a search of
the shipped fp16 index returns the same top-1 / top-k texts, and the change in image->text
Recall@K on the held-out images' own captions. Bounds depend on the artifact's weight dtype.
"""

from __future__ import annotations

import numpy as np

from ammkd.bundle.search import topk
from ammkd.common.errors import ExportError

MIN_COSINE = {"float32": 0.999, "float16": 0.995, "int8": 0.98, "palettized": 0.98}
RECALL_KS = (1, 5, 10)
# The text gate (docs/design.md §5.10): a text encoder's embeddings of index texts against their
# class vectors. Dynamic int8 also quantizes a transformer's activations, which moves single
# embeddings further than an image encoder's int8 does; search quality is measured as recall.
TEXT_MIN_COSINE = {"float32": 0.999, "int8": 0.95}


def min_cosine_for(dtype: str) -> float:
    """The default cosine bound of a weight dtype (`palettized4` -> `palettized`)."""
    return MIN_COSINE["palettized" if dtype.startswith("palettized") else dtype]


def _recall(emb: np.ndarray, index16: np.ndarray, captions: list[list[int]]) -> dict[int, float]:
    """Image->text Recall@K (%) of (M, D) embeddings whose own caption ids are `captions`."""
    ranked = [topk(e, index16, max(RECALL_KS))[0] for e in emb]
    return {k: 100.0 * float(np.mean([bool(set(r[:k]) & set(c)) for r, c in zip(ranked, captions)])) for k in RECALL_KS}


def parity(
    torch_emb: np.ndarray, emb: np.ndarray, index16: np.ndarray, k: int, captions: list[list[int]] | None = None
) -> dict:
    """torch_emb, emb (M, D) of the same inputs; index16 (N, D) the shipped index (as float32);
    captions: each held-out image's caption ids in the index (images without any are skipped)."""
    cos = (torch_emb * emb).sum(1) / (np.linalg.norm(torch_emb, axis=1) * np.linalg.norm(emb, axis=1))
    ref = [topk(e, index16, k)[0] for e in torch_emb]
    got = [topk(e, index16, k)[0] for e in emb]
    out = {
        "images": len(cos),
        "cosine_min": round(float(cos.min()), 6),
        "cosine_mean": round(float(cos.mean()), 6),
        "top1_agreement": round(float(np.mean([r[0] == g[0] for r, g in zip(ref, got)])), 4),
        f"top{k}_overlap": round(float(np.mean([len(set(r) & set(g)) / k for r, g in zip(ref, got)])), 4),
    }
    keep = [i for i, c in enumerate(captions or []) if c]
    if keep:
        caps = [captions[i] for i in keep]
        before, after = _recall(torch_emb[keep], index16, caps), _recall(emb[keep], index16, caps)
        out["i2t_recall_delta"] = {f"R@{q}": round(after[q] - before[q], 2) for q in RECALL_KS}
        out["i2t_recall"] = {f"R@{q}": round(after[q], 2) for q in RECALL_KS}
    return out


def gate_misses(
    results: dict[str, tuple[str, dict]], min_top1: float, min_cosine: float | None
) -> dict[str, list[str]]:
    """results: artifact name -> (weight dtype, parity). Returns artifact name -> its misses
    (one line each), for the artifacts that miss a bound; `min_cosine` overrides the per-dtype
    bound. Artifacts without figures (not measurable on this host) are not judged."""
    missed: dict[str, list[str]] = {}
    for name, (dtype, p) in results.items():
        if "cosine_min" not in p:
            continue
        bound = min_cosine if min_cosine is not None else min_cosine_for(dtype)
        lines = []
        if p["cosine_min"] < bound:
            lines.append(f"{name:<28} cosine_min      {p['cosine_min']:.6f} < {bound}")
        if p["top1_agreement"] < min_top1:
            lines.append(f"{name:<28} top1_agreement  {p['top1_agreement']:.3f} < {min_top1}")
        if lines:
            missed[name] = lines
    return missed


def gate_failure(missed: dict[str, list[str]], why: str) -> ExportError:
    """The error of a gate that stops the export: `why`, then a table of every miss."""
    lines = [f"  {line}" for name in missed for line in missed[name]]
    return ExportError(f"parity gate failed (exported vs PyTorch on held-out images): {why}\n" + "\n".join(lines))
