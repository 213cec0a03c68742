import pytest
import torch

from ammkd.distill.losses import class_vector_terms, closed_form_surrogate, kl_distill


def test_class_vector_terms_equal_the_losses_and_their_autograd_gradients():
    torch.manual_seed(0)
    teachers, temps = [torch.randn(4, 30) * 3 for _ in range(3)], [1.0, 2.5, 0.5]
    s = (torch.randn(4, 30) * 3).requires_grad_()
    target = torch.zeros(4, 30)
    target[[0, 0, 1, 2, 3], [3, 7, 1, 29, 0]] = 1
    target /= target.sum(-1, keepdim=True)  # uniform over each image's captions
    cv = class_vector_terms(teachers, s.detach(), temps, target)
    for k, (t, temp) in enumerate(zip(teachers, temps)):
        kl = kl_distill(t, s, temp)
        (g,) = torch.autograd.grad(kl, s)
        assert cv.kls[k].item() == pytest.approx(kl.item(), rel=1e-5)
        assert torch.allclose(g, cv.kl_grads[k], atol=1e-6)
        for i in range(4):  # per image: the same KL on one row, and the teacher's own caption CE at T_k
            assert cv.kl_per_sample[k, i].item() == pytest.approx(kl_distill(t[i : i + 1], s[i : i + 1], temp).item())
            ce = torch.nn.functional.cross_entropy(t[i : i + 1] / temp, target[i : i + 1])
            assert cv.teacher_ce[k, i].item() == pytest.approx(ce.item(), rel=1e-5)
    task = torch.nn.functional.cross_entropy(s, target)  # probabilities as targets
    (g,) = torch.autograd.grad(task, s)
    assert cv.task.item() == pytest.approx(task.item(), rel=1e-6)
    assert torch.allclose(g, cv.task_grad, atol=1e-6)


def test_closed_form_surrogate_backpropagates_the_given_gradient():
    w = torch.randn(3, 5, requires_grad=True)
    x = torch.randn(2, 3)
    grad = torch.randn(2, 5)
    closed_form_surrogate(x @ w, grad).backward()
    assert torch.allclose(w.grad, x.T @ grad, atol=1e-6)


def test_kl_is_zero_only_for_equal_distributions():
    z = torch.randn(3, 10)
    assert kl_distill(z, z).abs().item() < 1e-6
    assert kl_distill(z, z + torch.randn(3, 10)).item() > 1e-3


def test_feature_distill_is_zero_at_the_teacher_and_scale_free():
    from ammkd.distill.losses import feature_distill

    t = torch.nn.functional.normalize(torch.randn(6, 10), dim=-1)
    assert feature_distill(3.0 * t, t).item() < 1e-10  # the projection is normalised first
    assert feature_distill(-t, t).item() == pytest.approx(4.0)


def test_relation_distill_compares_both_directions():
    from ammkd.distill.losses import relation_distill

    t = torch.randn(5, 5)
    assert relation_distill(t, t).item() < 1e-7
    shifted = t + torch.randn(5, 1)  # a per-row offset leaves every row's softmax unchanged ...
    assert kl_distill(t, shifted).item() < 1e-6
    assert relation_distill(t, shifted).item() > 1e-3  # ... but not the columns' (text -> image)


def test_spectral_bands_split_low_and_high_frequencies():
    from ammkd.distill.losses import low_frequency_mask, spectral_distill

    mask = low_frequency_mask(8, 8, 0.25)
    assert mask[0, 0] and not mask[4, 4] and mask.sum() < 64
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    smooth = torch.cos(2 * torch.pi * xx / 8).expand(2, 3, 8, 8)  # frequency 1/8: low band
    checker = 0.3 * torch.cos(torch.pi * (xx + yy)).expand(2, 3, 8, 8)  # Nyquist: high band
    teacher = smooth + checker
    assert spectral_distill(2 * teacher + 1, teacher, 0.25).item() < 1e-8  # standardised per sample
    # same variance, so standardising scales both alike: they differ in one band only
    high_differs, low_differs = smooth - checker, checker - smooth
    assert spectral_distill(high_differs, teacher, 0.25, (1.0, 0.0)).item() < 1e-8
    assert spectral_distill(high_differs, teacher, 0.25, (0.0, 1.0)).item() > 1e-2
    assert spectral_distill(low_differs, teacher, 0.25, (0.0, 1.0)).item() < 1e-8
    assert spectral_distill(low_differs, teacher, 0.25, (1.0, 0.0)).item() > 1e-2
