"""Exact top-k search of a query against a matrix of unit-norm vectors: the algorithm the apps use."""

from __future__ import annotations

import numpy as np

# Scores held at once by `topk_batch` (Q rows x N columns, float32): 64 MiB, whatever Q and N.
_BATCH_SCORES = 1 << 24


def _select(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """scores (N,) -> (ids (min(k, N),) int64, scores float32): the k best, descending, ties towards lower id."""
    n = len(scores)
    k = max(0, min(k, n))
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]  # the k-th best score
        cand = np.flatnonzero(scores >= kth)  # every id tied with it too, so ties resolve by id below
    else:
        cand = np.arange(n)
    ids = cand[np.lexsort((cand, -scores[cand].astype(np.float64)))][:k]
    return ids.astype(np.int64, copy=False), scores[ids].astype(np.float32)


def topk(query: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """query (D,), matrix (N, D) -> (ids (k,), scores (k,)) by descending dot product.

    One matrix-vector product, then argpartition for the k best and a sort of those k only.
    Ties break towards the lower id, so every runtime returns the same order.
    """
    return _select(matrix @ query.astype(matrix.dtype, copy=False), k)


def topk_batch(queries: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """queries (Q, D), matrix (N, D) -> (ids (Q, min(k, N)) int64, scores (Q, min(k, N)) float32).

    `topk` for each query, with the scores of a block of queries computed as one matrix product
    (blocks of at most 64 MiB of scores). The selection is `topk`'s, row by row; only the
    rounding of the products may differ from the matrix-vector product in the last bit.
    """
    n = len(matrix)
    kk = min(k, n)
    ids = np.empty((len(queries), kk), np.int64)
    scores = np.empty((len(queries), kk), np.float32)
    block = max(1, _BATCH_SCORES // max(n, 1))
    for start in range(0, len(queries), block):
        s = queries[start : start + block].astype(matrix.dtype, copy=False) @ matrix.T
        for row, row_scores in enumerate(s, start):
            ids[row], scores[row] = _select(row_scores, kk)
    return ids, scores
