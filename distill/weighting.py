"""Adaptive teacher weights: the min-norm point of the teachers' gradients (AE-KD, docs/design.md §2.7).

min_a || sum_k a_k g_k ||^2  subject to  sum_k a_k = 1,  0 <= a_k <= C (the tolerance cap).
The gradients are taken w.r.t. the student's logits, flattened over the batch: (K, P).
"""

from __future__ import annotations

import torch

WEIGHTINGS = ("adaptive", "equal", "fixed", "single", "none")


def project_capped_simplex(v: torch.Tensor, cap: float, iters: int = 60) -> torch.Tensor:
    """Euclidean projection of v (K,) onto {a : sum a = 1, 0 <= a <= cap}, by bisection on the shift."""
    lo, hi = (v.min() - cap).item(), v.max().item()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if (v - mid).clamp(0, cap).sum() > 1:
            lo = mid
        else:
            hi = mid
    return (v - 0.5 * (lo + hi)).clamp(0, cap)


def min_norm_weights(grads: torch.Tensor, cap: float = 0.6, iters: int = 200) -> torch.Tensor:
    """grads (K, P) -> weights (K,) on the capped simplex minimising ||weights @ grads||^2."""
    g = grads.double().reshape(grads.shape[0], -1)
    return min_norm_from_gram(g @ g.T, cap, iters).to(grads.dtype)


def min_norm_from_gram(gram: torch.Tensor, cap: float = 0.6, iters: int = 200) -> torch.Tensor:
    """The same problem from the Gram matrix G = g g^T (K, K): ||a @ g||^2 = a^T G a.

    Gradients flattened over a batch have dot products that are sums over its samples, so
    data-parallel ranks all-reduce their local G and all solve the same global problem.
    K = 2: closed form a = ((g2 - g1) . g2) / ||g1 - g2||^2, clipped to [1 - C, C].
    K > 2: projected gradient descent on a^T G a (a convex QP). Returns float32 (K,).
    """
    k = gram.shape[0]
    if cap * k < 1 - 1e-9:
        raise ValueError(f"tolerance cap {cap} is infeasible for {k} teachers (needs cap >= 1/{k})")
    gram = gram.double()
    if k == 1:
        return torch.ones(1)
    if k == 2:
        denom = gram[0, 0] - 2 * gram[0, 1] + gram[1, 1]
        a = 0.5 if denom <= 1e-30 else ((gram[1, 1] - gram[0, 1]) / denom).item()
        a = min(max(a, 1 - cap), cap)
        return torch.tensor([a, 1 - a])
    a = torch.full((k,), 1.0 / k, dtype=torch.float64)
    step = 1.0 / (2 * torch.linalg.eigvalsh(gram).max().clamp(min=1e-30))
    for _ in range(iters):
        a = project_capped_simplex(a - step * 2 * (gram @ a), cap)
    return a.float()


def teacher_weights(
    mode: str, gram: torch.Tensor, cap: float = 0.6, fixed: list[float] | None = None, single: int = 0
) -> torch.Tensor:
    """Weights (K,) for one step under a weighting mode (`WEIGHTINGS`), from the Gram matrix
    (K, K) of the teachers' gradients w.r.t. the student's logits."""
    k = gram.shape[0]
    if mode == "adaptive":
        return min_norm_from_gram(gram, cap)
    if mode == "equal":
        return torch.full((k,), 1.0 / k)
    if mode == "fixed":
        w = torch.tensor(fixed, dtype=torch.float32)
        return w / w.sum()
    if mode == "single":
        return torch.nn.functional.one_hot(torch.tensor(single), k).float()
    if mode == "none":
        return torch.zeros(k)
    raise ValueError(f"unknown weighting {mode!r}; use one of {WEIGHTINGS}")


def smooth_weights(state: torch.Tensor, weights: torch.Tensor, ema: float) -> torch.Tensor:
    """EMA of the teacher weights across steps, in place in `state` (K,) (NaN before the first
    step): state = ema * state + (1 - ema) * weights. Returns the smoothed weights (still on
    the simplex: a convex combination of points on it). ema = 0 returns `weights` unchanged."""
    with torch.no_grad():
        if ema == 0 or torch.isnan(state).any():
            state.copy_(weights)
        else:
            state.mul_(ema).add_((1 - ema) * weights)
    return state.clone()
