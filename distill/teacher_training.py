"""Contrastive training of one CLIP teacher (open_clip ClipLoss) on the train split of a dataset.

A run folder holds: `config.json` (resolved), `metrics.jsonl` (loss, lr, scale, validation
recall), `learning_curve.png`, `skipped.json` (with --skip-bad), a periodic `checkpoint.pt`
while training, and at the end the teacher itself (open_clip local-dir layout, see teachers.py).

Gradient accumulation follows open_clip's `--accum-freq`: features of the whole global batch
are computed without gradients first, then each micro-batch is re-encoded with gradients and
the loss is taken against the full batch, so the contrastive negatives are those of the global
batch and the gradient equals the one-pass gradient (exactly, for towers without BatchNorm).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch

from ammkd.common.config import check_schedule, save_config
from ammkd.common.errors import ConfigError, DataError
from ammkd.common.files import append_jsonl, atomic_write_json
from ammkd.common.progress import progress
from ammkd.distill.augment import Augment
from ammkd.distill.curves import plot_learning_curve
from ammkd.distill.data import ImageTextData, load_split, without_split
from ammkd.distill.distributed import ranks
from ammkd.distill.evaluate import evaluate_teacher
from ammkd.distill.frozen_prefix import bn_eval, freeze_prefix, prefix_batch
from ammkd.distill.image_tensors import image_tensor
from ammkd.distill.schedule import (
    Checkpointer,
    adamw,
    batch_indices,
    claim_run_folder,
    cosine_lr,
    set_lr,
    step_rng,
    total_steps,
)
from ammkd.distill.teachers import TEACHER_META, Teacher, load_teacher, save_teacher
from ammkd.distill.text_towers import is_hf_cfg


@dataclass
class TeacherConfig:
    """Contrastive fine-tuning of one teacher, after which it is frozen."""

    model: str = "ammkd-tiny-vit"
    data: str = "synthetic"
    epochs: float = 10.0
    batch_size: int = 128  # global batch: the contrastive negatives of a step
    accum_steps: int = 1  # micro-batches per step (batch_size must divide evenly)
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    text_unlocked_layers: int = 0  # HF text towers: last N transformer layers train (0: frozen, projection only)
    image_frozen_stages: int | None = None  # timm EfficientNet/MobileNet towers: stem + first N stages frozen,
    # their outputs cached once (centre crop); only horizontal flips augment (aug_scale must be [1, 1])
    image_lr_scale: float = 1.0  # lr of the image tower's pretrained weights relative to `lr` (heads: 1)
    aug_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # random-resized-crop area range
    aug_hflip: bool = False
    eval_every: int = 0  # steps between validation recalls in the log; 0: only at the end
    skip_bad: bool = False  # skip unreadable images (listed in skipped.json) instead of failing
    seed: int = 0
    checkpoint_every: int = 100  # steps; 0 disables

    def validate(self) -> None:
        check_schedule(self, "teacher config")
        if self.batch_size < 2:
            raise ConfigError(f"teacher config: batch_size must be >= 2, got {self.batch_size}")
        if self.accum_steps < 1 or self.batch_size % self.accum_steps or self.batch_size // self.accum_steps < 1:
            raise ConfigError(
                f"teacher config: batch_size {self.batch_size} must split into accum_steps={self.accum_steps} "
                "equal micro-batches"
            )
        lo, hi = (self.aug_scale + [0, 0])[:2]
        if len(self.aug_scale) != 2 or not 0 < lo <= hi <= 1:
            raise ConfigError(
                f"teacher config: aug_scale must be [lo, hi] with 0 < lo <= hi <= 1, got {self.aug_scale}"
            )

        if self.image_frozen_stages is not None and (self.image_frozen_stages < 0 or self.aug_scale != [1.0, 1.0]):
            raise ConfigError(
                "teacher config: image_frozen_stages must be >= 0 and needs aug_scale [1, 1] "
                "(the frozen stages see each image once, centre-cropped; aug_hflip still applies)"
            )
        if not self.image_lr_scale > 0:
            raise ConfigError(f"teacher config: image_lr_scale must be > 0, got {self.image_lr_scale}")

    @property
    def augment(self) -> Augment:
        return Augment(scale=tuple(self.aug_scale), hflip=self.aug_hflip)


def _prepare_text_tower(teacher: Teacher, unlocked_layers: int) -> None:
    """HF text towers are pretrained: freeze all but the projection (and the last N layers)."""
    if is_hf_cfg(teacher.model_cfg):
        teacher.model.lock_text_tower(unlocked_layers=unlocked_layers, freeze_layer_norm=True)


def _features(teacher: Teacher, images: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """`images`: (B, 3, S, S) in [0, 255], or, for a teacher with a frozen prefix, the frozen
    stages' outputs (B, C, h, w)."""
    img = teacher.image_features(images) if teacher.frozen_stages is None else teacher.features_from_prefix(images)
    return img, teacher.text_features(texts)


def contrastive_step(
    teacher: Teacher, images: torch.Tensor, texts: list[str], accum_steps: int, loss_fn
) -> torch.Tensor:
    """Accumulate the gradient of the global-batch ClipLoss over `accum_steps` micro-batches;
    return the loss. `images` (B, 3, S, S) in [0, 255] (or frozen-stage outputs), `texts` B captions."""
    scale = teacher.model.logit_scale.exp()
    if accum_steps == 1:
        img, txt = _features(teacher, images, texts)
        loss = loss_fn(img, txt, scale)
        loss.backward()
        return loss.detach()
    chunks = [range(s, s + len(texts) // accum_steps) for s in range(0, len(texts), len(texts) // accum_steps)]
    with torch.no_grad():
        cached = [_features(teacher, images[c.start : c.stop], texts[c.start : c.stop]) for c in chunks]
    loss = torch.zeros(())
    for j, c in enumerate(chunks):
        img_j, txt_j = _features(teacher, images[c.start : c.stop], texts[c.start : c.stop])
        img = torch.cat([img_j if i == j else f[0] for i, f in enumerate(cached)])
        txt = torch.cat([txt_j if i == j else f[1] for i, f in enumerate(cached)])
        # The scale is shared by every micro-batch: it takes the gradient of the loss once.
        loss = loss_fn(img, txt, scale if j == 0 else scale.detach())
        loss.backward()  # d(loss)/d(chunk j): summed over j, the full-batch gradient
    return loss.detach()


def _validation(teacher: Teacher, val: ImageTextData | None, val_images: np.ndarray | None) -> dict:
    if val is None:
        return {}
    teacher.model.eval()
    metrics = evaluate_teacher(teacher, val, images=val_images)
    _train_mode(teacher)
    return {"val_mean_recall": metrics["mean_recall"], "val_t2i_R@1": metrics["t2i_R@1"]}


def _freeze_image_prefix(teacher: Teacher, frozen_stages: int | None) -> None:
    if frozen_stages is None:
        return
    if not hasattr(teacher.model.visual, "trunk"):
        raise ConfigError(f"image_frozen_stages needs a timm image tower (ARCH:WEIGHTS); {teacher.name} has none")
    freeze_prefix(teacher.model.visual.trunk, frozen_stages)
    teacher.frozen_stages = frozen_stages


def _train_mode(teacher: Teacher) -> torch.nn.Module:
    """Training mode; a tower with a frozen prefix is a pretrained one and keeps its BatchNorm
    statistics (small CLIP batches of one dataset would only blur them)."""
    model = teacher.model.train()
    if teacher.frozen_stages is not None:
        bn_eval(model.visual.trunk)
    return model


def _load_val(cfg: TeacherConfig, teacher: Teacher, skipped: list[str]):
    try:
        val = load_split(without_split(cfg.data), "val")  # held out even when cfg.data names :train
    except DataError:  # a dataset without a validation split: the curve shows loss only
        return None, None
    arr, val, bad = image_tensor(val, teacher.spec, skip_bad=cfg.skip_bad)
    skipped.extend(bad)
    return val, arr


def train_teacher(cfg: TeacherConfig, out: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Train a teacher contrastively on `cfg.data` (train split) and save it to `out`.

    Each step pairs every image with one of its captions drawn at random and a random-resized
    crop of the image. With `resume`, an interrupted run continues from its last checkpoint in
    `out` and ends with the same weights as an uninterrupted run; a folder that already holds a
    run is refused unless `resume` or `overwrite` (schedule.claim_run_folder). Returns `out`.
    """
    cfg.validate()
    rk = ranks()  # torchrun: this process's share of every global batch (see distributed.py)
    if cfg.batch_size % rk.world or (rk.world > 1 and cfg.accum_steps > 1):
        raise ConfigError(
            f"teacher config: under torchrun, batch_size {cfg.batch_size} must divide evenly over "
            f"{rk.world} processes, and accum_steps must be 1"
        )
    out = Path(out)
    claim_run_folder(out, TEACHER_META, resume, overwrite, rk.is_main)
    out.mkdir(parents=True, exist_ok=True)
    if rk.is_main:
        save_config(cfg, out / "config.json")
    torch.manual_seed(cfg.seed)
    teacher = load_teacher(cfg.model)
    _prepare_text_tower(teacher, cfg.text_unlocked_layers)
    _freeze_image_prefix(teacher, cfg.image_frozen_stages)
    aug = cfg.augment
    data = load_split(cfg.data, "train")
    frozen = teacher.frozen_stages is not None  # the frozen stages see the evaluation pixels
    store = teacher.spec if frozen else teacher.spec.with_size(aug.storage_size(teacher.spec.size))
    images, data, skipped = image_tensor(data, store, skip_bad=cfg.skip_bad)
    prefix = None
    if frozen:  # computed once (by rank 0; the others read its cache); each step runs only the tower's top
        if not rk.is_main:
            rk.barrier()
        prefix = teacher.prefix_outputs(images, tuple(data.sources))
        if rk.is_main:
            rk.barrier()
    images = torch.from_numpy(images)
    val, val_images = _load_val(cfg, teacher, skipped)
    skipped = list(dict.fromkeys(skipped))  # a file in both splits (e.g. `:all` data) counts once
    if cfg.skip_bad and rk.is_main:
        atomic_write_json(out / "skipped.json", {"count": len(skipped), "files": skipped})
    teacher.prepare_texts(data.texts()[0])
    if val is not None:
        teacher.prepare_texts(val.texts()[0])
    model = _train_mode(teacher).to(memory_format=torch.channels_last)  # NHWC convolutions: faster CNN steps on CPU
    opt = adamw(
        [(n, p) for n, p in model.named_parameters() if p.requires_grad],
        cfg.lr,
        cfg.weight_decay,
        lr_scale=lambda name: cfg.image_lr_scale if name.startswith("visual.trunk.") else 1.0,
    )
    # Across ranks: every rank's features are gathered (with their gradients), so the negatives
    # are the global batch's; each rank's gradient is then world x its share, and averaging the
    # gradients over ranks gives the single-process gradient.
    loss_fn = open_clip.ClipLoss(gather_with_grad=True, rank=rk.rank, world_size=rk.world)
    trainable = [p for p in model.parameters() if p.requires_grad]
    total = total_steps(len(data), cfg.batch_size, cfg.epochs, "teacher config")
    warmup = max(1, round(cfg.warmup_fraction * total))
    log = out / "metrics.jsonl"
    ckpt = Checkpointer(
        out, cfg.checkpoint_every, resume, log, asdict(cfg), writer=rk.is_main, model=model, optimizer=opt
    )
    first = ckpt.start()
    rk.barrier()
    t0 = time.time()
    for step in progress(range(first, total), f"training teacher {cfg.model}"):
        idx = batch_indices(step, len(data), cfg.batch_size, cfg.seed)
        lo, hi = rk.rows(len(idx))
        rng = step_rng(cfg.seed, step)  # drawn for the global batch: every rank sees its rows' draws
        texts = [data.captions[i][rng.integers(len(data.captions[i]))] for i in idx][lo:hi]
        if prefix is not None:
            batch = prefix_batch(prefix, idx, cfg.aug_hflip, rng)[lo:hi]
        else:
            crops = aug(images[idx[lo:hi]], teacher.spec.size, rng, (lo, len(idx)))
            batch = crops.contiguous(memory_format=torch.channels_last)
        set_lr(opt, cosine_lr(step, total, cfg.lr, warmup))
        opt.zero_grad(set_to_none=True)
        loss = contrastive_step(teacher, batch, texts, cfg.accum_steps, loss_fn)
        ckpt.require_finite(loss, step, "teacher training")
        rk.average_grads(trainable)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        last = step == total - 1
        evaluate_now = last or (cfg.eval_every > 0 and step > 0 and step % cfg.eval_every == 0)
        if rk.is_main and (step % 10 == 0 or evaluate_now):
            record = {
                "step": step,
                "loss": round(loss.item(), 5),
                "lr": opt.param_groups[0]["lr"],
                "logit_scale": round(teacher.logit_scale, 3),
                "elapsed_s": round(time.time() - t0, 2),
            }
            if evaluate_now:
                record.update(_validation(teacher, val, val_images))
            append_jsonl(log, record)
        ckpt.step_done(step, total)
    model.eval()
    if not rk.is_main:  # rank 0 writes the teacher; the others wait for it
        rk.barrier()
        return out
    save_teacher(
        teacher,
        out,
        {
            "source": cfg.model,
            "data": cfg.data,
            "steps": total,
            "images": len(data),
            "skipped_images": len(skipped),
            "image_frozen_stages": teacher.frozen_stages,
            "train_seconds": round(time.time() - t0, 1),
        },
    )
    plot_learning_curve(log, out / "learning_curve.png", f"teacher {cfg.model} on {cfg.data}")
    ckpt.finish()
    rk.barrier()
    return out
