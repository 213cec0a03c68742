import itertools

import pytest
import torch

from ammkd.distill.weighting import min_norm_weights, project_capped_simplex, teacher_weights


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
    gram = g @ g.T
    assert teacher_weights("equal", gram).tolist() == [0.5, 0.5]
    assert teacher_weights("fixed", gram, fixed=[3, 1]).tolist() == [0.75, 0.25]
    assert teacher_weights("single", gram, single=1).tolist() == [0.0, 1.0]
    assert teacher_weights("none", gram).tolist() == [0.0, 0.0]
    assert torch.allclose(teacher_weights("adaptive", gram), min_norm_weights(g), atol=1e-5)
    with pytest.raises(ValueError):
        min_norm_weights(torch.randn(3, 4), cap=0.3)  # 3 x 0.3 < 1: infeasible
