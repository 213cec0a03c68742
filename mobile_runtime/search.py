"""Exact top-k search of a query against a matrix of unit-norm vectors: the algorithm the apps use."""

from __future__ import annotations

import numpy as np


def topk(query: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """query (D,), matrix (N, D) -> (ids (k,), scores (k,)) by descending dot product.

    One matrix-vector product, then argpartition for the k best and a sort of those k only.
    Ties break towards the lower id, so every runtime returns the same order.
    """
    scores = matrix @ query.astype(matrix.dtype, copy=False)
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = np.lexsort((part, -scores[part].astype(np.float64)))
    ids = part[order]
    return ids, scores[ids].astype(np.float32)
