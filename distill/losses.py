"""Distillation losses over class vectors: small functions, shapes in the docstrings."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def kl_distill(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(p || q), p = softmax(teacher/T), q = softmax(student/T); both (B, N) over the
    same N texts. Mean over the batch. Scalar."""
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    return temperature**2 * (log_p.exp() * (log_p - log_q)).sum(-1).mean()


class ClassVectorTerms(NamedTuple):
    """The class-vector losses of one step and their gradients w.r.t. the student's logits.

    kl_grads (K, B, N): the gradient of teacher k's `kl_distill`, T_k * (q - p_k) / B in closed
    form (d KL(p || softmax(z/T)) / dz = (q - p) / T, times T^2 and 1/B); kls (K,): the KL values
    (batch means of kl_per_sample (K, B)); task: the soft cross-entropy against the caption
    targets; task_grad (B, N): its gradient; teacher_ce (K, B): each teacher's own cross-entropy
    against the caption targets, -sum_n target_bn log p_k,bn (nats; how wrong it is on each image).
    """

    kl_grads: torch.Tensor
    kls: torch.Tensor
    task: torch.Tensor
    task_grad: torch.Tensor
    kl_per_sample: torch.Tensor
    teacher_ce: torch.Tensor


@torch.no_grad()
def class_vector_terms(
    teacher_logits: list[torch.Tensor], student_logits: torch.Tensor, temperatures: list[float], target: torch.Tensor
) -> ClassVectorTerms:
    """`kl_distill` for every teacher and the cross-entropy against `target` (B, N) (a
    distribution over each image's captions), values and gradients w.r.t. the
    student's logits (B, N), from one log-softmax of the student per temperature. The adaptive
    weights need the gradients anyway; reusing them for the backward pass (see
    `closed_form_surrogate`) skips autograd through K + 1 softmaxes over N texts."""
    b = student_logits.shape[0]
    log_q = {t: F.log_softmax(student_logits / t, dim=-1) for t in set(temperatures) | {1.0}}
    grads, kls, ces = [], [], []
    for z, t in zip(teacher_logits, temperatures):
        log_p = F.log_softmax(z / t, dim=-1)
        p = log_p.exp()
        grads.append(t * (log_q[t].exp() - p) / b)
        kls.append(t**2 * (p * (log_p - log_q[t])).sum(-1))
        ces.append(-(target * log_p).sum(-1))
    task = -(target * log_q[1.0]).sum(-1).mean()
    task_grad = (log_q[1.0].exp() * target.sum(-1, keepdim=True) - target) / b
    kl = torch.stack(kls)
    return ClassVectorTerms(torch.stack(grads), kl.mean(1), task, task_grad, kl, torch.stack(ces))


def closed_form_surrogate(student_logits: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient w.r.t. student_logits (B, N) is `grad` (B, N), detached: added to a
    loss, it backpropagates a gradient computed in closed form. Its value means nothing."""
    return (student_logits * grad.detach()).sum()


def feature_distill(student_proj: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """CLIP-KD's feature distillation: squared distance between the L2-normalised projection of
    the student's embedding (B, D_k) and the teacher's unit embedding (B, D_k). Mean over the
    batch of a sum over dims, so in [0, 4]. Scalar."""
    return (F.normalize(student_proj, dim=-1) - teacher_emb).pow(2).sum(-1).mean()


def relation_distill(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """CLIP-KD's relation (CRD) loss on a batch's image x caption logits, both (B, B): the mean of
    KL(teacher || student) over rows (image -> text) and over columns (text -> image), at T = 1."""
    return 0.5 * (kl_distill(teacher_logits, student_logits) + kl_distill(teacher_logits.T, student_logits.T))


def low_frequency_mask(height: int, width: int, cutoff: float) -> torch.Tensor:
    """(H, W) bool mask of the 2-D FFT bins whose radial frequency is <= cutoff (cycles per
    sample; 0.5 is Nyquist along one axis). The complement is the high band. DC is always low."""
    fy = torch.fft.fftfreq(height).view(-1, 1)
    fx = torch.fft.fftfreq(width).view(1, -1)
    return (fy**2 + fx**2).sqrt() <= cutoff


def spectral_distill(
    student_map: torch.Tensor, teacher_map: torch.Tensor, cutoff: float, band_weights: tuple[float, float] = (1.0, 1.0)
) -> torch.Tensor:
    """SDKD-style spectral feature distillation between feature maps of the same shape (B, C, H, W)
    (the student's after its adapter). Each map is standardised per sample, moved to the
    frequency domain (orthonormal 2-D FFT per channel) and split into a low and a high band;
    the loss is w_low * mean |S - T|^2 over low bins + w_high * the same over high bins."""
    s = F.layer_norm(student_map, student_map.shape[1:])
    t = F.layer_norm(teacher_map, teacher_map.shape[1:])
    diff = (torch.fft.fft2(s, norm="ortho") - torch.fft.fft2(t, norm="ortho")).abs().pow(2)  # (B, C, H, W)
    low = low_frequency_mask(*s.shape[-2:], cutoff).to(s.device)
    loss = band_weights[0] * diff[..., low].mean()
    if (~low).any():  # a 1x1 map has no high band
        loss = loss + band_weights[1] * diff[..., ~low].mean()
    return loss
