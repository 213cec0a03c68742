"""Distillation losses over class vectors: small functions, shapes in the docstrings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_distill(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(p || q), p = softmax(teacher/T), q = softmax(student/T); both (B, N) over the
    same N texts. Mean over the batch. Scalar."""
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    return temperature**2 * (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def kl_grad_wrt_student_logits(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Gradient of `kl_distill` w.r.t. student_logits, in closed form: T * (q - p) / B. (B, N).

    d KL(p || softmax(z/T)) / dz = (q - p) / T; times T^2 and 1/B from the batch mean.
    Free of any backward pass, which is what makes per-step adaptive weighting cheap.
    """
    p = F.softmax(teacher_logits / temperature, dim=-1)
    q = F.softmax(student_logits / temperature, dim=-1)
    return temperature * (q - p) / teacher_logits.shape[0]


def soft_cross_entropy(student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a target distribution (B, N) (uniform over each image's captions)."""
    return -(target * F.log_softmax(student_logits, dim=-1)).sum(-1).mean()
