"""AMMKD distillation: KL over text class vectors from several teachers, adaptively weighted.

Per step, for a batch of images:
  teacher k:  z_k = s_k * v_k . C_k^T          (B, N)  v_k its image embedding, C_k its class vectors
  student:    z_s = s_s * f . C_f^T            (B, N)  f its embedding, C_f the fused class vectors
  loss = kd_weight * sum_k a_k KL(softmax(z_k/T) || softmax(z_s/T)) * T^2
         + task_weight * CE(z_s, uniform over the image's own captions)
with a = min-norm weights of the teachers' gradients w.r.t. z_s (DESIGN.md §4-5).
Teachers are frozen: their image embeddings are computed once before training.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ammkd.common.config import save_config
from ammkd.common.errors import ConfigError, DataError
from ammkd.common.files import append_jsonl, atomic_save_npy, atomic_write, atomic_write_json
from ammkd.common.progress import progress
from ammkd.distill.class_vectors import class_vectors
from ammkd.distill.data import ImageTextData, image_tensor, load_split
from ammkd.distill.fusion import FUSIONS, fuse_class_vectors, fused_dim
from ammkd.distill.losses import kl_distill, kl_grad_wrt_student_logits, soft_cross_entropy
from ammkd.distill.student import Student, StudentArch, create_student
from ammkd.distill.teachers import Teacher, cosine_lr, load_teacher
from ammkd.distill.weighting import WEIGHTINGS, teacher_weights

STUDENT_WEIGHTS = "student.safetensors"
STUDENT_META = "student.json"
INDEX_TEXTS = "index_texts.json"
INDEX_VECTORS = "index_vectors.npy"


@dataclass
class DistillConfig:
    teachers: list[str] = field(default_factory=list)
    data: str = "synthetic"
    student: str = "ammkd-mobilenet"
    image_size: int | None = None  # default: the student preset's
    weighting: str = "adaptive"
    tolerance: float = 0.6  # cap C on any teacher's weight (AE-KD's tolerance)
    fixed_weights: list[float] | None = None
    single_teacher: int = 0
    fusion: str = "concat"
    kd_temperature: float = 1.0
    kd_weight: float = 1.0
    task_weight: float = 1.0
    epochs: float = 10.0
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    seed: int = 0

    def validate(self) -> None:
        k = len(self.teachers)
        if k < 1:
            raise ConfigError("distill: needs at least one teacher (--teachers T1,T2)")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"distill: unknown weighting {self.weighting!r}; use one of {list(WEIGHTINGS)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"distill: unknown fusion {self.fusion!r}; use one of {list(FUSIONS)}")
        if self.weighting == "adaptive" and not (1.0 / k <= self.tolerance <= 1.0):
            raise ConfigError(f"distill: tolerance must be in [1/{k}, 1] for {k} teachers, got {self.tolerance}")
        if self.weighting == "fixed" and (not self.fixed_weights or len(self.fixed_weights) != k
                                          or min(self.fixed_weights) < 0 or sum(self.fixed_weights) <= 0):
            raise ConfigError(f"distill: fixed weighting needs {k} non-negative fixed_weights")
        if self.weighting == "single" and not 0 <= self.single_teacher < k:
            raise ConfigError(f"distill: single_teacher must be in [0, {k - 1}]")
        if self.epochs <= 0 or self.batch_size < 2 or self.lr <= 0 or self.kd_temperature <= 0:
            raise ConfigError("distill: epochs, lr and kd_temperature must be > 0 and batch_size >= 2")


def fused_text_vectors(teachers: list[Teacher], texts: list[str], fusion: str = "concat") -> np.ndarray:
    """(N, D_f) fused class vectors of `texts`: what the student's embeddings are matched against."""
    return fuse_class_vectors([class_vectors(t, texts) for t in teachers], fusion)


def _teacher_logits(teachers: list[Teacher], data: ImageTextData, texts: list[str]) -> list[torch.Tensor]:
    """Per teacher, logits of every training image over the text set: K x (M, N), float16 to save memory."""
    out = []
    for t in teachers:
        images, _, _ = image_tensor(data, t.spec)
        vecs = torch.from_numpy(class_vectors(t, texts))
        feats = t.encode_images(images)
        out.append((t.logit_scale * feats @ vecs.T).half())
    return out


def load_student(model_dir: str | Path) -> tuple[Student, dict]:
    """Rebuild a trained student from its folder: (model in eval mode, student.json metadata)."""
    model_dir = Path(model_dir)
    meta_path = model_dir / STUDENT_META
    if not meta_path.is_file():
        raise ConfigError(f"{model_dir}: not a student folder (no {STUDENT_META})")
    meta = json.loads(meta_path.read_text())
    student = Student(StudentArch(**meta["arch"]))
    student.load_state_dict(load_file(str(model_dir / STUDENT_WEIGHTS)))
    return student.eval(), meta


def distill(cfg: DistillConfig, out: str | Path) -> Path:
    """Train a student from cfg.teachers on cfg.data (train split); write it, its index and its
    validation metrics to `out`. Returns `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    teachers = [load_teacher(t) for t in cfg.teachers]
    for t in teachers:
        t.model.eval().requires_grad_(False)
    data = load_split(cfg.data, "train")
    texts, per_image = data.texts()
    dim = fused_dim([t.dim for t in teachers], cfg.fusion)
    student = create_student(cfg.student, dim, cfg.image_size)
    c_f = torch.from_numpy(fused_text_vectors(teachers, texts, cfg.fusion))  # (N, D_f)
    t_logits = _teacher_logits(teachers, data, texts)  # K x (M, N)
    images, _, _ = image_tensor(data, student.arch.input_spec)
    images = torch.from_numpy(images)
    target = torch.zeros(len(data), len(texts))
    for i, ids in enumerate(per_image):
        target[i, ids] = 1.0 / len(ids)  # ids may repeat: a caption given twice counts twice

    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = list(student.parameters()) + [log_scale]
    opt = torch.optim.AdamW([{"params": [p for p in student.parameters() if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                             {"params": [p for p in student.parameters() if p.ndim < 2] + [log_scale], "weight_decay": 0.0}],
                            lr=cfg.lr)
    steps_per_epoch = max(1, len(data) // cfg.batch_size)
    total = max(1, round(cfg.epochs * steps_per_epoch))
    warmup = max(1, round(cfg.warmup_fraction * total))
    log = out / "metrics.jsonl"
    log.unlink(missing_ok=True)
    order = np.array([], dtype=np.int64)
    alphas = []
    t0 = time.time()
    student.train()
    for step in progress(range(total), f"distilling ({cfg.weighting})"):
        if len(order) < cfg.batch_size:
            order = np.concatenate([order, rng.permutation(len(data))])
        idx, order = torch.from_numpy(order[:cfg.batch_size]), order[cfg.batch_size:]
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, total, cfg.lr, warmup)
        emb = student(images[idx].float() / 255.0)
        z_s = log_scale.exp() * emb @ c_f.T  # (B, N)
        z_t = [tl[idx].float() for tl in t_logits]
        grads = torch.stack([kl_grad_wrt_student_logits(z, z_s.detach(), cfg.kd_temperature).flatten() for z in z_t])
        alpha = teacher_weights(cfg.weighting, grads, cfg.tolerance, cfg.fixed_weights, cfg.single_teacher)
        kls = [kl_distill(z, z_s, cfg.kd_temperature) for z in z_t]
        kd = sum(a * kl for a, kl in zip(alpha.tolist(), kls))
        task = soft_cross_entropy(z_s, target[idx])
        loss = cfg.kd_weight * kd + cfg.task_weight * task
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            log_scale.clamp_(0, math.log(100))
        alphas.append(alpha.tolist())
        if step % 5 == 0 or step == total - 1:
            record = {"step": step, "loss": round(loss.item(), 5), "task": round(task.item(), 5),
                      "kl": [round(k.item(), 5) for k in kls], "alpha": [round(a, 4) for a in alpha.tolist()],
                      "lr": opt.param_groups[0]["lr"], "student_scale": round(log_scale.exp().item(), 3),
                      "elapsed_s": round(time.time() - t0, 2)}
            if len(grads) == 2:
                record["grad_cosine"] = round(F.cosine_similarity(grads[0], grads[1], dim=0).item(), 4)
            append_jsonl(log, record)
    student.eval()
    train_seconds = time.time() - t0

    state = {k: v.detach().contiguous() for k, v in student.state_dict().items()}
    atomic_write(out / STUDENT_WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    _write_index(out, teachers, cfg)
    meta = {
        "arch": student.arch.to_dict(),
        "teachers": [str(Path(t).resolve()) if Path(t).is_dir() else t for t in cfg.teachers],
        "fusion": cfg.fusion,
        "weighting": cfg.weighting,
        "logit_scale": round(log_scale.exp().item(), 4),
        "data": cfg.data,
        "steps": total,
        "train_seconds": round(train_seconds, 1),
        "mean_alpha": np.mean(alphas, axis=0).round(4).tolist(),
    }
    atomic_write_json(out / STUDENT_META, meta)
    return out


def _write_index(out: Path, teachers: list[Teacher], cfg: DistillConfig) -> None:
    """The deployable text set: every caption of every split, plus the class prompts, fused."""
    texts: dict[str, None] = {}
    for split in ("train", "val", "test"):
        try:
            d = load_split(cfg.data, split)
        except DataError:  # a dataset without this split: nothing to add
            continue
        texts.update(dict.fromkeys(d.texts()[0]))
        texts.update(dict.fromkeys(d.class_prompts))
    texts_list = list(texts)
    atomic_write_json(out / INDEX_TEXTS, texts_list)
    atomic_save_npy(out / INDEX_VECTORS, fused_text_vectors(teachers, texts_list, cfg.fusion))
