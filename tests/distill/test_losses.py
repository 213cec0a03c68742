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
