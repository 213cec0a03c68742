"""Training-only heads that map the student into each teacher's feature spaces.

The feature loss (CLIP-KD) compares the student's embedding with teacher k's through a linear
projector D_f -> D_k; the spectral loss (SDKD-style) compares the student's last feature map
with teacher k's through a 1x1 convolution C_s -> C_k after resizing to the teacher's grid.
The heads train with the student and are dropped afterwards: nothing here is exported.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FeatureHeads(nn.Module):
    """Per-teacher projectors (feature loss) and adapters (spectral loss); either may be empty.

    embed_dim: the student's D_f; teacher_dims: each teacher's D_k; student_channels: C_s of the
    student's last feature map; teacher_channels: each teacher's C_k (None: no spectral loss).
    """

    def __init__(
        self,
        embed_dim: int,
        teacher_dims: list[int] | None = None,
        student_channels: int | None = None,
        teacher_channels: list[int] | None = None,
    ):
        super().__init__()
        self.projectors = nn.ModuleList([nn.Linear(embed_dim, d, bias=False) for d in teacher_dims or []])
        self.adapters = nn.ModuleList([nn.Conv2d(student_channels, c, 1) for c in teacher_channels or []])

    def project(self, k: int, emb: torch.Tensor) -> torch.Tensor:
        """(B, D_f) student embedding -> (B, D_k) in teacher k's space (not normalised)."""
        return self.projectors[k](emb)

    def adapt(self, k: int, student_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, C_s, h, w) student feature map -> (B, C_k, H, W) on teacher k's grid `size`."""
        if student_map.shape[-2:] != size:
            student_map = F.interpolate(student_map, size=size, mode="bilinear", align_corners=False)
        return self.adapters[k](student_map)
