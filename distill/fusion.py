"""Fusion of the teachers' text class vectors into the student's (deployable) index space.

`concat`: C_f = [C_1; C_2; ...] / sqrt(K). Rows stay unit-norm, and a cosine in the fused space
is the mean of the teachers' cosines, so no training is needed. The trained fusion network of
DESIGN.md §3 plugs in here as another mode.
"""

from __future__ import annotations

import math

import numpy as np

FUSIONS = ("concat",)


def fused_dim(teacher_dims: list[int], mode: str = "concat") -> int:
    if mode != "concat":
        raise ValueError(f"unknown fusion {mode!r}; use one of {FUSIONS}")
    return sum(teacher_dims)


def fuse_class_vectors(class_vectors: list[np.ndarray], mode: str = "concat") -> np.ndarray:
    """K arrays (N, D_k), unit rows -> (N, sum D_k) float32 with unit rows."""
    if mode != "concat":
        raise ValueError(f"unknown fusion {mode!r}; use one of {FUSIONS}")
    return (np.concatenate(class_vectors, axis=1) / math.sqrt(len(class_vectors))).astype(np.float32)
