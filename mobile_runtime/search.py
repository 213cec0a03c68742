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
    if k < len(scores):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th best score
        cand = np.flatnonzero(scores >= kth)  # every id tied with it too, so ties resolve by id below
    else:
        cand = np.arange(len(scores))
    ids = cand[np.lexsort((cand, -scores[cand].astype(np.float64)))][:k]
    return ids, scores[ids].astype(np.float32)
