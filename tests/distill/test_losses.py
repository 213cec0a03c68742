import pytest
import torch

from ammkd.distill.losses import kl_distill, kl_grad_wrt_student_logits, soft_cross_entropy


def test_closed_form_gradient_equals_autograd():
    torch.manual_seed(0)
    t, s = torch.randn(4, 30) * 3, (torch.randn(4, 30) * 3).requires_grad_()
    for temp in (1.0, 2.5):
        (g,) = torch.autograd.grad(kl_distill(t, s, temp), s)
        assert torch.allclose(g, kl_grad_wrt_student_logits(t, s.detach(), temp), atol=1e-6)


def test_kl_is_zero_only_for_equal_distributions():
    z = torch.randn(3, 10)
    assert kl_distill(z, z).abs().item() < 1e-6
    assert kl_distill(z, z + torch.randn(3, 10)).item() > 1e-3


def test_soft_cross_entropy_with_one_hot_is_cross_entropy():
    z = torch.randn(5, 7)
    y = torch.randint(0, 7, (5,))
    assert torch.allclose(
        soft_cross_entropy(z, torch.nn.functional.one_hot(y, 7).float()), torch.nn.functional.cross_entropy(z, y)
    )


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
