import itertools

import pytest
import torch

from ammkd.distill.weighting import (
    WeightingInputs,
    WeightingOptions,
    min_norm_weights,
    project_capped_simplex,
    teacher_weights,
)


def brute_force(grads: torch.Tensor, cap: float, steps: int = 200) -> float:
    """Smallest ||a @ grads||^2 over a grid of the capped simplex."""
    k = grads.shape[0]
    best = float("inf")
    grid = [i / steps for i in range(steps + 1)]
    for head in itertools.product(grid, repeat=k - 1):
        a = torch.tensor([*head, 1 - sum(head)], dtype=torch.float64)
        if (a < -1e-12).any() or (a > cap + 1e-12).any():
            continue
        best = min(best, float((a @ grads.double()).pow(2).sum()))
    return best


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("cap", [0.6, 0.8, 1.0])
def test_two_teachers_closed_form_matches_grid(seed, cap):
    g = torch.randn(2, 50, generator=torch.Generator().manual_seed(seed))
    a = min_norm_weights(g, cap)
    assert a.sum().item() == pytest.approx(1.0)
    assert 1 - cap - 1e-6 <= a.min().item() and a.max().item() <= cap + 1e-6
    value = float((a.double() @ g.double()).pow(2).sum())
    assert value <= brute_force(g, cap, 2000) + 1e-6


@pytest.mark.parametrize("seed", range(3))
def test_three_teachers_projected_gradient_matches_grid(seed):
    g = torch.randn(3, 20, generator=torch.Generator().manual_seed(seed))
    a = min_norm_weights(g, 0.6)
    assert a.sum().item() == pytest.approx(1.0, abs=1e-6) and a.max().item() <= 0.6 + 1e-6
    assert float((a.double() @ g.double()).pow(2).sum()) <= brute_force(g, 0.6, 100) + 1e-4


def test_identical_gradients_give_equal_weights_and_cap_binds():
    g = torch.ones(2, 10)
    assert min_norm_weights(g, 0.6).tolist() == pytest.approx([0.5, 0.5])
    # teacher 0's gradient is zero: the unconstrained optimum is all weight on it, the cap stops at C
    g = torch.stack([torch.zeros(10), torch.ones(10)])
    assert min_norm_weights(g, 0.6).tolist() == pytest.approx([0.6, 0.4])


def test_projection_and_modes():
    p = project_capped_simplex(torch.tensor([5.0, 0.0, 0.0]), 0.5)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6) and p.max().item() <= 0.5 + 1e-6
    g = torch.randn(2, 4)
    x = _inputs(g[:, None, :])
    assert teacher_weights("equal", x).tolist() == [0.5, 0.5]
    assert teacher_weights("fixed", x, WeightingOptions(fixed_weights=[3, 1])).tolist() == [0.75, 0.25]
    assert teacher_weights("single", x, WeightingOptions(single_teacher=1)).tolist() == [0.0, 1.0]
    assert teacher_weights("none", x).tolist() == [0.0, 0.0]
    assert torch.allclose(teacher_weights("adaptive", x), min_norm_weights(g), atol=1e-5)
    with pytest.raises(ValueError, match="unknown weighting"):
        teacher_weights("adaptive-bogus", x)
    with pytest.raises(ValueError):
        min_norm_weights(torch.randn(3, 4), tolerance=0.3)  # 3 x 0.3 < 1: infeasible


def _inputs(grads: torch.Tensor, ce: torch.Tensor | None = None) -> WeightingInputs:
    """Inputs of one step from gradients (K, B, N) and caption cross-entropies (K, B) (zeros: all equal)."""
    flat = grads.flatten(1).double()
    return WeightingInputs(flat @ flat.T, grads, torch.zeros(grads.shape[:2]) if ce is None else ce)


@pytest.mark.parametrize("k", [2, 3])
def test_per_image_min_norm_solves_each_image_alone(k):
    grads = torch.randn(k, 6, 12, generator=torch.Generator().manual_seed(k))
    w = teacher_weights("adaptive-sample", _inputs(grads), WeightingOptions(tolerance=0.6))
    assert w.shape == (k, 6)
    for b in range(6):
        assert torch.allclose(w[:, b], min_norm_weights(grads[:, b], 0.6), atol=1e-4), b
    assert torch.allclose(w.sum(0), torch.ones(6), atol=1e-5) and w.max() <= 0.6 + 1e-5


def test_ground_truth_aware_weights_leave_out_teachers_wrong_on_the_image():
    torch.manual_seed(0)
    grads = torch.randn(3, 4, 10)
    ce = torch.tensor([[1.0, 5.0, 3.0, 1.0], [1.2, 1.0, 9.0, 1.0], [4.0, 1.3, 1.0, 1.0]])  # (K, B) nats
    w = teacher_weights("adaptive-gt", _inputs(grads, ce), WeightingOptions(tolerance=0.6, gt_margin=0.5))
    assert torch.allclose(w.sum(0), torch.ones(4), atol=1e-5)
    # image 0: teacher 2 is 3 nats worse than the best, so it gets nothing; 0 and 1 share by min-norm
    assert w[2, 0] == 0 and torch.allclose(w[:2, 0], min_norm_weights(grads[:2, 0], 0.6), atol=1e-4)
    # image 1: teachers 1 and 2 within 0.5 nats; image 2: teacher 2 alone takes all (the cap relaxes)
    assert w[0, 1] == 0 and w[:, 2].tolist() == pytest.approx([0.0, 0.0, 1.0])
    # image 3: all equal -> the plain per-image min-norm
    assert torch.allclose(w[:, 3], min_norm_weights(grads[:, 3], 0.6), atol=1e-4)
    # an infinite margin is adaptive-sample; a zero margin keeps only the best teacher (ties share)
    wide = teacher_weights("adaptive-gt", _inputs(grads, ce), WeightingOptions(tolerance=0.6, gt_margin=float("inf")))
    assert torch.allclose(wide, teacher_weights("adaptive-sample", _inputs(grads, ce)), atol=1e-6)
    narrow = teacher_weights("adaptive-gt", _inputs(grads, ce), WeightingOptions(tolerance=0.6, gt_margin=0.0))
    assert narrow[:, 1].tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_normalised_min_norm_ignores_gradient_size():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(3, 1, 40, generator=gen)
    base = teacher_weights("adaptive-norm", _inputs(g))
    scaled = teacher_weights("adaptive-norm", _inputs(g * torch.tensor([100.0, 1.0, 0.01])[:, None, None]))
    assert torch.allclose(base, scaled, atol=1e-5) and base.sum().item() == pytest.approx(1.0, abs=1e-6)
    # the plain solve moves towards the small gradient; with two teachers the normalised one is 0.5 / 0.5
    two = g[:2] * torch.tensor([10.0, 1.0])[:, None, None]
    assert teacher_weights("adaptive", _inputs(two))[1].item() > 0.55
    assert teacher_weights("adaptive-norm", _inputs(two)).tolist() == pytest.approx([0.5, 0.5], abs=1e-5)
