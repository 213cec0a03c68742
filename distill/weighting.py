"""Teacher weights per step: fixed schemes and the min-norm point in gradient space (AE-KD, docs/design.md §2.7).

min_a || sum_k a_k g_k ||^2  subject to  sum_k a_k = 1,  0 <= a_k <= C (the tolerance cap).
The gradients g_k are teacher k's KL gradients w.r.t. the student's logits. Batch schemes solve
once per batch over the gradients flattened over it and return weights (K,); per-image schemes
solve once per image over its own row of logits and return weights (K, B):

  adaptive          per batch, all teachers (the paper's AE-KD)
  adaptive-norm     per batch, over each teacher's gradient scaled to unit norm (MGDA-UB's
                    normalisation): a teacher's direction counts, not its size, so a sharp,
                    strong teacher is no longer the one left out; with two teachers the
                    solution is always 0.5 / 0.5 (two unit vectors), so it differs from
                    `equal` only for K >= 3 (e.g. with the fused teacher)
  adaptive-sample   per image, all teachers
  adaptive-gt       per image, only the teachers whose cross-entropy against the image's own
                    captions is within `margin` nats of the best teacher's on that image
                    (ground-truth aware, as confidence-aware multi-teacher KD; one teacher
                    left: it takes all the weight)
  equal, fixed, single, none   no solve
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch


class WeightingInputs(NamedTuple):
    """What a scheme may look at in one step.

    gram (K, K): dot products of the teachers' gradients over the global batch (float64);
    grads (K, B, N): this process's rows of the gradients; teacher_ce (K, B): each teacher's
    cross-entropy against the caption targets (nats)."""

    gram: torch.Tensor
    grads: torch.Tensor
    teacher_ce: torch.Tensor


class WeightingOptions(NamedTuple):
    """The DistillConfig fields a scheme reads, under the same names: tolerance (C, the cap on any
    teacher's weight: adaptive schemes), fixed_weights (`fixed`), single_teacher (`single`),
    gt_margin (nats: `adaptive-gt`)."""

    tolerance: float = 0.6
    fixed_weights: list[float] | None = None
    single_teacher: int = 0
    gt_margin: float = 1.0


def project_capped_simplex(v: torch.Tensor, cap: float | torch.Tensor, iters: int = 60) -> torch.Tensor:
    """Euclidean projection of v (..., K) onto {a : sum a = 1, 0 <= a <= cap}, by bisection on the
    shift; `cap` a number or per-coordinate bounds (..., K) whose sum is >= 1 in every row."""
    cap = torch.as_tensor(cap, dtype=v.dtype).expand_as(v)
    lo = (v - cap).min(-1, keepdim=True).values
    hi = v.max(-1, keepdim=True).values
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        over = (v - mid).clamp(min=0).minimum(cap).sum(-1, keepdim=True) > 1
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    return (v - 0.5 * (lo + hi)).clamp(min=0).minimum(cap)


def min_norm_weights(grads: torch.Tensor, tolerance: float = 0.6, iters: int = 200) -> torch.Tensor:
    """grads (K, P) -> weights (K,) on the capped simplex (cap C = tolerance) minimising ||weights @ grads||^2."""
    g = grads.double().reshape(grads.shape[0], -1)
    return min_norm_from_gram(g @ g.T, tolerance, iters).to(grads.dtype)


def min_norm_from_gram(gram: torch.Tensor, tolerance: float = 0.6, iters: int = 200) -> torch.Tensor:
    """The same problem from the Gram matrix G = g g^T (K, K): ||a @ g||^2 = a^T G a.

    Gradients flattened over a batch have dot products that are sums over its samples, so
    data-parallel ranks all-reduce their local G and all solve the same global problem.
    Returns float32 (K,)."""
    k = gram.shape[0]
    if tolerance * k < 1 - 1e-9:
        raise ValueError(f"tolerance {tolerance} is infeasible for {k} teachers (needs tolerance >= 1/{k})")
    return min_norm_batched(gram[None], torch.full((1, k), tolerance, dtype=torch.float64), iters)[0]


def min_norm_batched(gram: torch.Tensor, upper: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """Many small min-norm problems at once: Gram matrices (M, K, K), per-coordinate caps (M, K)
    (0 leaves a teacher out; every row must sum to >= 1) -> weights (M, K) float32.

    K = 1: all weight on it. K = 2: closed form a_0 = (G11 - G01) / (G00 - 2 G01 + G11), clipped to
    [1 - u_1, u_0]. K > 2: projected gradient descent on a^T G a (a convex QP)."""
    gram, upper = gram.double(), upper.double()
    m, k = upper.shape
    if k == 1:
        return torch.ones(m, 1)
    if k == 2:
        denom = gram[:, 0, 0] - 2 * gram[:, 0, 1] + gram[:, 1, 1]
        a = torch.where(denom > 1e-30, (gram[:, 1, 1] - gram[:, 0, 1]) / denom.clamp(min=1e-30), 0.5)
        a = torch.maximum(torch.minimum(a, upper[:, 0]), 1 - upper[:, 1])
        return torch.stack([a, 1 - a], -1).float()
    a = project_capped_simplex(torch.full((m, k), 1.0 / k, dtype=torch.float64), upper)
    step = 1.0 / (2 * torch.linalg.eigvalsh(gram)[:, -1:].clamp(min=1e-30))  # (M, 1)
    for _ in range(iters):
        a = project_capped_simplex(a - step * 2 * (gram @ a[..., None])[..., 0], upper)
    return a.float()


def _per_image_gram(grads: torch.Tensor) -> torch.Tensor:
    """(K, B, N) -> (B, K, K): each image's own Gram matrix over its row of logits."""
    g = grads.double()
    return torch.einsum("kbn,jbn->bkj", g, g)


def _caps(eligible: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Per-image caps (B, K) from a mask (B, K) of the teachers allowed: C for each allowed one,
    relaxed to 1 / (number allowed) where C could not reach a sum of 1; 0 for the others."""
    n = eligible.sum(-1, keepdim=True).clamp(min=1).double()
    return torch.where(eligible, torch.maximum(torch.full_like(n, tolerance), 1 / n), 0.0)


def _adaptive(x: WeightingInputs, o: WeightingOptions) -> torch.Tensor:
    return min_norm_from_gram(x.gram, o.tolerance)


def _adaptive_norm(x: WeightingInputs, o: WeightingOptions) -> torch.Tensor:
    norms = x.gram.diagonal().clamp(min=1e-30).sqrt()
    return min_norm_from_gram(x.gram / (norms[:, None] * norms[None, :]), o.tolerance)


def _adaptive_sample(x: WeightingInputs, o: WeightingOptions) -> torch.Tensor:
    k, b = x.teacher_ce.shape
    return min_norm_batched(_per_image_gram(x.grads), _caps(torch.ones(b, k, dtype=torch.bool), o.tolerance)).T


def _adaptive_gt(x: WeightingInputs, o: WeightingOptions) -> torch.Tensor:
    ce = x.teacher_ce.T  # (B, K)
    eligible = ce <= ce.min(-1, keepdim=True).values + o.gt_margin
    return min_norm_batched(_per_image_gram(x.grads), _caps(eligible, o.tolerance)).T


def _equal(x: WeightingInputs, o: WeightingOptions) -> torch.Tensor:
    k = x.gram.shape[0]
    return torch.full((k,), 1.0 / k)


def _fixed(x: WeightingInputs, o: WeightingOptions) -> torch.Tensor:
    w = torch.tensor(o.fixed_weights, dtype=torch.float32)
    return w / w.sum()


def _single(x: WeightingInputs, o: WeightingOptions) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(o.single_teacher), x.gram.shape[0]).float()


def _none(x: WeightingInputs, o: WeightingOptions) -> torch.Tensor:
    return torch.zeros(x.gram.shape[0])


SCHEMES: dict[str, Callable[[WeightingInputs, WeightingOptions], torch.Tensor]] = {
    "adaptive": _adaptive,
    "adaptive-norm": _adaptive_norm,
    "adaptive-sample": _adaptive_sample,
    "adaptive-gt": _adaptive_gt,
    "equal": _equal,
    "fixed": _fixed,
    "single": _single,
    "none": _none,
}
WEIGHTINGS = tuple(SCHEMES)
PER_IMAGE = ("adaptive-sample", "adaptive-gt")  # weights (K, B); the others (K,)
CAPPED = ("adaptive", "adaptive-norm", *PER_IMAGE)  # the schemes that read the tolerance cap


def teacher_weights(mode: str, inputs: WeightingInputs, options: WeightingOptions = WeightingOptions()) -> torch.Tensor:
    """Weights for one step under a scheme of `SCHEMES`: (K,) for a batch scheme, (K, B) for a
    per-image one (`PER_IMAGE`); each column on the simplex (all zero for `none`)."""
    if mode not in SCHEMES:
        raise ValueError(f"unknown weighting {mode!r}; use one of {WEIGHTINGS}")
    return SCHEMES[mode](inputs, options)


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
