"""Text class vectors: each teacher's L2-normalised text embeddings of a text set, cached on disk.

The cache key is SHA-256(teacher fingerprint, texts), so a retrained teacher or a changed text
set never reads stale vectors. Randomly initialised teachers have no stable fingerprint and are
not cached.
"""

from __future__ import annotations

import numpy as np

from ammkd.common.files import atomic_save_npy, sha256_text
from ammkd.common.paths import cache_dir
from ammkd.distill.teachers import Teacher


def class_vectors(teacher: Teacher, texts: list[str]) -> np.ndarray:
    """(N, D) float32, unit rows: teacher text embeddings of `texts` (computed once, then cached)."""
    cacheable = not teacher.fingerprint.endswith(":random-init")
    path = cache_dir() / "class_vectors" / f"{sha256_text(teacher.fingerprint, *texts)}.npy"
    if cacheable and path.is_file():
        cached = np.load(path)
        if cached.shape == (len(texts), teacher.dim):
            return cached
    vectors = teacher.encode_texts(texts).numpy().astype(np.float32)
    if cacheable:
        atomic_save_npy(path, vectors)
    return vectors
