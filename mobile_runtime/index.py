"""Top-k search of unit-norm class vectors by inner product: exact (NumPy) and approximate (faiss).

`ExactIndex` is the apps' algorithm (`ammkd.mobile_runtime.search.topk`: one scan, ties towards
the lower id). `FaissIndex` wraps a faiss index over the same vectors: `flat` (exact scan),
`hnsw` (graph), `ivf` (inverted lists) or `auto` (flat below `APPROX_THRESHOLD` vectors, HNSW
above). `recall_at_k` measures an approximate search against the exact one.

Both take the matrix as (N, D) floats (float16 bundles are decoded to float32 once, here) and
answer `search(queries, k)` with ids (Q, k) int64 and scores (Q, k) float32, best first; a single
query (D,) is answered as Q = 1. k above N is clamped to N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ammkd.bundle.search import topk, topk_batch
from ammkd.common.errors import ConfigError

# Below this many vectors `auto` scans exactly. A flat scan reads N x D x 4 bytes per query and is
# memory-bound: benchmarks/search.py measures about 7 ms for 100k x 256 on one Xeon core, so about
# 15 ms at 200k, still interactive, and exact, with no build step and no memory beyond the vectors.
# Above it the scan grows linearly (some 70 ms expected at 1M) while HNSW answered 100k in under
# 0.1 ms at recall@10 0.99 (synthetic data), for a one-off build and a graph of about a quarter of
# the vectors' memory (M = 32, D = 256).
APPROX_THRESHOLD = 200_000

Kind = Literal["flat", "hnsw", "ivf", "auto"]
KINDS = ("flat", "hnsw", "ivf", "auto")


@dataclass(frozen=True)
class FaissParams:
    """Parameters of the approximate indexes (ignored by `flat`).

    m: HNSW neighbours per node (memory and build time grow with it, recall too).
    ef_construction: HNSW candidate list while building.
    ef_search: HNSW candidate list while searching (raised to k if below it); the speed/recall knob.
    nlist: IVF lists; None = round(4 * sqrt(N)), at most N.
    nprobe: IVF lists visited per query (capped at nlist); the speed/recall knob.
    train_per_list: IVF k-means training sample, vectors per list (faiss warns below 39).
    seed: IVF k-means seed.
    """

    m: int = 32
    ef_construction: int = 100
    ef_search: int = 64
    nlist: int | None = None
    nprobe: int = 16
    train_per_list: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("ef_construction", "ef_search", "nprobe", "train_per_list"):
            if getattr(self, name) < 1:
                raise ConfigError(f"FaissParams.{name} must be >= 1, got {getattr(self, name)}")
        if self.m < 2:
            raise ConfigError(f"FaissParams.m must be >= 2, got {self.m}")
        if self.nlist is not None and self.nlist < 1:
            raise ConfigError(f"FaissParams.nlist must be >= 1 or None, got {self.nlist}")


def _as_matrix(matrix: np.ndarray) -> np.ndarray:
    """(N, D) floats -> C-contiguous float32 (N, D); no copy when it already is."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise ConfigError(f"index matrix must be (N, D) with N, D >= 1, got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise ConfigError(f"index matrix must hold floats, got {matrix.dtype}")
    return np.ascontiguousarray(matrix, dtype=np.float32)


def _as_queries(queries: np.ndarray, dim: int, k: int) -> np.ndarray:
    """(D,) or (Q, D) -> C-contiguous float32 (Q, D), after checking k and D."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    queries = np.asarray(queries)
    if queries.ndim == 1:
        queries = queries[None]
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ConfigError(f"queries must be (D,) or (Q, D) with D = {dim} (the index's), got shape {queries.shape}")
    return np.ascontiguousarray(queries, dtype=np.float32)


class ExactIndex:
    """Exact search: `topk` (the apps' algorithm) over a float32 (N, D) matrix."""

    def __init__(self, matrix: np.ndarray) -> None:
        """matrix (N, D) floats, rows unit-norm; float16 is decoded to float32 once."""
        self.matrix = _as_matrix(matrix)

    @property
    def ntotal(self) -> int:
        return self.matrix.shape[0]

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (D,) or (Q, D) -> (ids (Q, min(k, N)) int64, scores (Q, min(k, N)) float32), best first."""
        q = _as_queries(queries, self.dim, k)
        if len(q) == 1:  # the apps' path: one matrix-vector product
            ids, scores = topk(q[0], self.matrix, k)
            return ids[None].astype(np.int64, copy=False), scores[None]
        return topk_batch(q, self.matrix, k)


class FaissIndex:
    """faiss search over the same vectors by inner product: flat (exact), HNSW, IVF, or auto.

    `auto` is flat below `threshold` vectors (default `APPROX_THRESHOLD`) and HNSW from it on;
    `kind` then says which was built. `threads` sets faiss's OpenMP threads for the whole process
    (`faiss.omp_set_num_threads`), build and search alike. Approximate kinds may return fewer than
    k hits for a query (IVF with a small nprobe): the missing slots hold id -1.
    """

    def __init__(
        self,
        matrix: np.ndarray,
        kind: Kind = "auto",
        params: FaissParams | None = None,
        *,
        threshold: int = APPROX_THRESHOLD,
        threads: int | None = None,
    ) -> None:
        """matrix (N, D) floats, rows unit-norm (float16 decoded to float32 once); built here."""
        import faiss  # imported here: the exact path does not need it

        if kind not in KINDS:
            raise ConfigError(f"unknown index kind {kind!r}: choose one of {', '.join(KINDS)}")
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"threads must be >= 1, got {threads}")
            faiss.omp_set_num_threads(threads)
        x = _as_matrix(matrix)
        n, d = x.shape
        self.params = params or FaissParams()
        self.requested_kind = kind
        self.kind = ("flat" if n < threshold else "hnsw") if kind == "auto" else kind
        self.dim = d
        if self.kind == "flat":
            self.index = faiss.IndexFlatIP(d)
        elif self.kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(d, self.params.m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = self.params.ef_construction
        else:
            self.nlist = min(n, self.params.nlist or max(1, round(4 * math.sqrt(n))))
            self._quantizer = faiss.IndexFlatIP(d)  # kept alive with the index that points to it
            self.index = faiss.IndexIVFFlat(self._quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.cp.seed = self.params.seed
            self.index.cp.max_points_per_centroid = self.params.train_per_list
            self.index.train(x)
        self.index.add(x)
        self.tune(ef_search=self.params.ef_search, nprobe=self.params.nprobe)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def tune(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change the search-time knob without rebuilding (HNSW ef_search, IVF nprobe); others ignore it."""
        if ef_search is not None:
            if ef_search < 1:
                raise ConfigError(f"ef_search must be >= 1, got {ef_search}")
            if self.kind == "hnsw":
                self.index.hnsw.efSearch = ef_search
        if nprobe is not None:
            if nprobe < 1:
                raise ConfigError(f"nprobe must be >= 1, got {nprobe}")
            if self.kind == "ivf":
                self.index.nprobe = min(nprobe, self.nlist)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (D,) or (Q, D) -> (ids (Q, min(k, N)) int64, scores (Q, min(k, N)) float32), best first."""
        q = _as_queries(queries, self.dim, k)
        scores, ids = self.index.search(q, min(k, self.ntotal))
        return ids.astype(np.int64, copy=False), scores.astype(np.float32, copy=False)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """approx_ids (Q, k'), exact_ids (Q, k) ints -> mean over queries of |approx ∩ exact| / |exact|.

    The fraction of the exact top-k that the approximate search found, in any order; ids -1
    (faiss's "no hit") count as misses. k' may differ from k (recall of the top-k within k').
    """
    a = np.asarray(approx_ids)
    e = np.asarray(exact_ids)
    if a.ndim == 1:
        a = a[None]
    if e.ndim == 1:
        e = e[None]
    if a.ndim != 2 or e.ndim != 2 or len(a) != len(e) or len(e) == 0 or e.shape[1] == 0:
        raise ConfigError(f"recall_at_k needs (Q, k) id arrays with the same Q >= 1, got {a.shape} and {e.shape}")
    valid = e >= 0
    found = (e[:, :, None] == a[:, None, :]).any(axis=2) & valid
    per_query = found.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    return float(per_query.mean())
