"""Fusion of the teachers' features into one joint space: the student's (deployable) index space.

Modes (DistillConfig.fusion):
  concat            C_f = [C_1; ...; C_K] / sqrt(K), parameter-free. Rows stay unit-norm and a
                    cosine in the fused space is the mean of the teachers' cosines.
  network           a trained FusionNetwork (docs/design.md §2.3, after MCAD): a linear map of the
                    concatenated text vectors gives C_f (any width D_f, e.g. narrower than the
                    concatenation: a smaller index and student head), a linear map of the
                    concatenated image features gives fused image features; both are trained
                    contrastively on the train split with the teachers frozen.
  network+teacher   as `network`, and the fused image-text distribution joins the teachers as
                    one more teacher in the KL terms and the adaptive weighting.
"""

from __future__ import annotations

import math

import numpy as np
import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F

FUSIONS = ("concat", "network", "network+teacher")


def uses_network(mode: str) -> bool:
    return mode in ("network", "network+teacher")


def fused_dim(teacher_dims: list[int], mode: str = "concat", network_dim: int | None = None) -> int:
    """D_f: the concatenated width for `concat`, `network_dim` (default the same) for a network."""
    if mode not in FUSIONS:
        raise ValueError(f"unknown fusion {mode!r}; use one of {FUSIONS}")
    return network_dim if uses_network(mode) and network_dim else sum(teacher_dims)


def fuse_class_vectors(class_vectors: list[np.ndarray], mode: str = "concat") -> np.ndarray:
    """Parameter-free fusion: K arrays (N, D_k), unit rows -> (N, sum D_k) float32 with unit rows."""
    if mode != "concat":
        raise ValueError(f"fusion {mode!r} needs its trained FusionNetwork (FusionNetwork.texts)")
    return (np.concatenate(class_vectors, axis=1) / math.sqrt(len(class_vectors))).astype(np.float32)


class FusionNetwork(nn.Module):
    """K teachers' unit features -> the joint space (., D_f), unit rows; one linear map per side.

    Both maps start as the concat fusion (D_f = sum D_k) or a random orthogonal projection of
    it (narrower D_f, cosines roughly preserved), so training starts from the parameter-free
    fusion and the two sides start aligned.
    """

    def __init__(self, dims: list[int], out_dim: int, seed: int = 0):
        super().__init__()
        self.dims, self.out_dim = list(dims), out_dim
        width = sum(dims)
        gen = torch.Generator().manual_seed(seed)
        init = torch.linalg.qr(torch.randn(width, width, generator=gen))[0][:out_dim]
        if out_dim == width:
            init = torch.eye(width)
        init = init / math.sqrt(len(dims))
        self.image = nn.Linear(width, out_dim, bias=False)
        self.text = nn.Linear(width, out_dim, bias=False)
        with torch.no_grad():
            self.image.weight.copy_(init)
            self.text.weight.copy_(init)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def images(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """K tensors (B, D_k) -> (B, D_f) unit fused image features."""
        return F.normalize(self.image(torch.cat(feats, dim=-1)), dim=-1)

    def texts(self, vecs: list[torch.Tensor]) -> torch.Tensor:
        """K tensors (N, D_k) of class vectors -> (N, D_f) unit fused class vectors C_f."""
        return F.normalize(self.text(torch.cat(vecs, dim=-1)), dim=-1)

    @property
    def scale(self) -> float:
        return float(self.logit_scale.detach().exp().clamp(max=100))


def train_fusion(
    image_feats: list[np.ndarray],
    class_vecs: list[torch.Tensor],
    per_image: list[list[int]],
    out_dim: int,
    steps: int = 300,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> tuple[FusionNetwork, list[float]]:
    """Fit a FusionNetwork contrastively (CLIP loss, teachers frozen): image i against one of its
    captions, drawn at random each step. image_feats: K arrays (M, D_k); class_vecs: K (N, D_k).
    Returns the network (eval mode) and the loss per step."""
    net = FusionNetwork([v.shape[1] for v in class_vecs], out_dim, seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    loss_fn = open_clip.ClipLoss()
    rng = np.random.default_rng([seed, 7])
    m = len(per_image)
    losses = []
    for _ in range(steps):
        idx = rng.choice(m, size=min(batch_size, m), replace=False)
        caps = torch.tensor([per_image[i][rng.integers(len(per_image[i]))] for i in idx])
        img = net.images([torch.from_numpy(np.asarray(f[idx], dtype=np.float32)) for f in image_feats])
        txt = net.texts([v[caps] for v in class_vecs])
        loss = loss_fn(img, txt, net.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            net.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
    return net.eval().requires_grad_(False), losses
