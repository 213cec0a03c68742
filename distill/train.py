"""AMMKD distillation: KL over text class vectors from several teachers, adaptively weighted.

Per step, for a batch of images:
  teacher k:  z_k = s_k * v_k . C_k^T          (B, N)  v_k its image embedding, C_k its class vectors
  student:    z_s = s_s * f . C_f^T            (B, N)  f its embedding, C_f the fused class vectors
  loss = kd_weight * sum_k a_k KL(softmax(z_k/T) || softmax(z_s/T)) * T^2
         + task_weight * CE(z_s, uniform over the image's own captions)
with a = min-norm weights of the teachers' gradients w.r.t. z_s (docs/design.md §2.5-2.7), per batch,
or per image (a_kb, the `adaptive-sample` / `adaptive-gt` schemes of weighting.py).
Teachers are frozen: their image embeddings are computed once and cached (teacher_outputs.py),
or computed every step on the student's crops (`teacher_outputs="online"`). Each teacher may
have its own temperature T_k; batch weights a may be smoothed across steps (EMA). The folder
this writes (weights, student.json, the index) is named and read by student_folder.py.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ammkd.common.config import check_schedule, save_config
from ammkd.common.errors import ConfigError
from ammkd.common.files import append_jsonl, atomic_write, atomic_write_json
from ammkd.common.progress import progress
from ammkd.distill.augment import Augment
from ammkd.distill.curves import plot_learning_curve
from ammkd.distill.data import ImageTextData, load_split
from ammkd.distill.distributed import ranks
from ammkd.distill.feature_heads import FeatureHeads
from ammkd.distill.frozen_prefix import bn_eval, cached_prefix_outputs, freeze_prefix, prefix_batch
from ammkd.distill.fusion import (
    FUSIONS,
    fuse_class_vectors,
    fused_dim,
    train_fusion,
    uses_network,
)
from ammkd.distill.image_tensors import image_tensor
from ammkd.distill.losses import (
    class_vector_terms,
    closed_form_surrogate,
    feature_distill,
    relation_distill,
    spectral_distill,
)
from ammkd.distill.schedule import (
    Checkpointer,
    adamw,
    batch_indices,
    claim_run_folder,
    cosine_lr,
    read_log,
    set_lr,
    step_rng,
    total_steps,
)
from ammkd.distill.student import Student, create_student, student_backbone_weights
from ammkd.distill.student_folder import (
    FUSION_WEIGHTS,
    STUDENT_META,
    STUDENT_WEIGHTS,
    teacher_id,
    write_index,
)
from ammkd.distill.teacher_outputs import TEACHER_OUTPUT_MODES, FusedTeacherOutputs, TeacherOutputs
from ammkd.distill.teachers import Teacher, load_teacher
from ammkd.distill.weighting import (
    CAPPED,
    PER_IMAGE,
    WEIGHTINGS,
    WeightingInputs,
    WeightingOptions,
    smooth_weights,
    teacher_weights,
)


@dataclass
class DistillConfig:
    teachers: list[str] = field(default_factory=list)
    data: str = "synthetic"
    student: str = "ammkd-mnv3-large"
    image_size: int | None = None  # default: the student preset's
    frozen_stages: int | None = None  # pretrained timm students: stem + first N stages frozen, outputs cached
    weighting: str = "adaptive"
    tolerance: float = 0.6  # cap C on any teacher's weight (AE-KD's tolerance)
    fixed_weights: list[float] | None = None
    single_teacher: int = 0
    gt_margin: float = 1.0  # adaptive-gt: nats above the best teacher's caption cross-entropy still allowed
    fusion: str = "network"  # network (trained fused index) | network+teacher (and a fused teacher) | concat
    fusion_dim: int | None = None  # D_f of a fusion network (default: the sum of the teachers' widths)
    fusion_steps: int = 300
    kd_temperature: float = 1.0
    kd_temperatures: list[float] | None = None  # one per teacher; default: kd_temperature for all
    alpha_ema: float = 0.0  # smoothing of the adaptive weights across steps (0: off, e.g. 0.9)
    teacher_outputs: str = "cached"  # cached (fp16 on disk, student-only steps) | online (teachers every step)
    kd_weight: float = 1.0
    task_weight: float = 1.0
    feature_weight: float = 0.0  # CLIP-KD feature loss: MSE of normalised embeddings through a projector
    relation_weight: float = 0.0  # CLIP-KD relation loss: KL on in-batch image x caption similarities
    spectral_weight: float = 0.0  # SDKD-style loss on FFT bands of the last feature maps (needs online)
    spectral_cutoff: float = 0.25  # radial frequency (cycles/sample) splitting the low and high bands
    spectral_band_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # low, high
    epochs: float = 10.0
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    aug_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # student crops; teachers see the centre
    skip_bad: bool = False  # skip unreadable images (listed in skipped.json) instead of failing
    seed: int = 0
    checkpoint_every: int = 100  # steps; 0 disables

    @property
    def kd_teachers(self) -> int:
        """How many distributions the KL terms weigh: the teachers, plus the fused one if asked."""
        return len(self.teachers) + (self.fusion == "network+teacher")

    def validate(self) -> None:
        check_schedule(self, "distill")
        if not self.teachers:
            raise ConfigError("distill: needs at least one teacher (--teachers T1,T2)")
        k = self.kd_teachers
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"distill: unknown weighting {self.weighting!r}; use one of {list(WEIGHTINGS)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"distill: unknown fusion {self.fusion!r}; use one of {list(FUSIONS)}")
        if self.weighting in CAPPED and k > 1 and not (1.0 / k <= self.tolerance <= 1.0):
            raise ConfigError(f"distill: tolerance must be in [1/{k}, 1] for {k} teachers, got {self.tolerance}")
        if self.weighting == "fixed" and (
            not self.fixed_weights
            or len(self.fixed_weights) != k
            or min(self.fixed_weights) < 0
            or sum(self.fixed_weights) <= 0
        ):
            raise ConfigError(f"distill: fixed weighting needs {k} non-negative fixed_weights")
        if self.weighting == "single" and not 0 <= self.single_teacher < k:
            raise ConfigError(f"distill: single_teacher must be in [0, {k - 1}]")
        if self.batch_size < 2 or self.kd_temperature <= 0:
            raise ConfigError("distill: kd_temperature must be > 0 and batch_size >= 2")
        if self.kd_temperatures is not None and (len(self.kd_temperatures) != k or min(self.kd_temperatures) <= 0):
            raise ConfigError(f"distill: kd_temperatures needs {k} positive values, one per teacher")
        if not 0 <= self.alpha_ema < 1:
            raise ConfigError(f"distill: alpha_ema must be in [0, 1), got {self.alpha_ema}")
        if self.alpha_ema > 0 and self.weighting in PER_IMAGE:
            raise ConfigError(f"distill: alpha_ema smooths batch weights; {self.weighting} weighs each image afresh")
        if not self.gt_margin >= 0:
            raise ConfigError(f"distill: gt_margin must be >= 0 nats, got {self.gt_margin}")
        if self.teacher_outputs not in TEACHER_OUTPUT_MODES:
            raise ConfigError(
                f"distill: unknown teacher_outputs {self.teacher_outputs!r}; use one of {list(TEACHER_OUTPUT_MODES)}"
            )
        if self.fusion_dim is not None and self.fusion_dim < 2 or self.fusion_steps < 1:
            raise ConfigError("distill: fusion_dim must be >= 2 and fusion_steps >= 1")
        if min(self.kd_weight, self.task_weight, self.feature_weight, self.relation_weight, self.spectral_weight) < 0:
            raise ConfigError("distill: loss weights (kd, task, feature, relation, spectral) must be >= 0")
        if self.spectral_weight > 0 and self.teacher_outputs != "online":
            raise ConfigError(
                "distill: spectral_weight needs teacher_outputs='online' (the teachers' feature maps are not cached)"
            )
        bands = self.spectral_band_weights
        if not 0 < self.spectral_cutoff < 0.71 or len(bands) != 2 or min(bands) < 0:
            raise ConfigError("distill: spectral_cutoff must be in (0, 0.71) and spectral_band_weights two values >= 0")
        if len(self.aug_scale) != 2 or not 0 < self.aug_scale[0] <= self.aug_scale[1] <= 1:
            raise ConfigError(f"distill: aug_scale must be [lo, hi] with 0 < lo <= hi <= 1, got {self.aug_scale}")
        if self.frozen_stages is not None and (
            self.frozen_stages < 0 or list(self.aug_scale) != [1.0, 1.0] or self.spectral_weight > 0
        ):
            raise ConfigError(
                "distill: frozen_stages must be >= 0 and needs aug_scale [1, 1] and no spectral term "
                "(the frozen stages see each image once, centre-cropped)"
            )


def _caption_targets(per_image: list[list[int]], idx: torch.Tensor, n_texts: int) -> torch.Tensor:
    """(B, N) target distribution: uniform over each image's captions (a repeated caption counts twice)."""
    target = torch.zeros(len(idx), n_texts)
    for row, i in enumerate(idx.tolist()):
        ids = torch.tensor(per_image[i])
        target[row].index_add_(0, ids, torch.full((len(ids),), 1.0 / len(ids)))
    return target


@dataclass
class _Run:
    """What a run builds before its first step (see _prepare); the step and the writer read it."""

    teachers: list[Teacher]
    student: Student
    aug: Augment
    data: ImageTextData
    images: torch.Tensor  # (M, 3, S, S) uint8, stored larger than the crop when augmenting
    prefix: np.ndarray | None  # (M, C, h, w) fp16 cached outputs of the frozen stages, or None
    skipped: list[str]
    texts: list[str]
    per_image: list[list[int]]
    outputs: list[TeacherOutputs]
    kd_outputs: list  # the outputs the KL terms weigh: the teachers, plus the fused teacher if asked
    c_f: torch.Tensor  # (N, D_f) the student's class vectors
    fusion_net: torch.nn.Module | None
    fusion_losses: list[float]
    heads: FeatureHeads
    log_scale: torch.nn.Parameter  # the student's learnable log(1/tau)


def distill(cfg: DistillConfig, out: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Train a student from cfg.teachers on cfg.data (train split); write it and its index to
    `out`. With `resume`, an interrupted run continues from its last checkpoint; a folder that
    already holds a run is refused unless `resume` or `overwrite` (schedule.claim_run_folder).
    Returns `out`."""
    cfg.validate()
    rk = ranks()  # torchrun: this process's share of the work (see distributed.py)
    if cfg.batch_size % rk.world:
        raise ConfigError(f"distill: batch_size {cfg.batch_size} must divide evenly over {rk.world} processes")
    out = Path(out)
    claim_run_folder(out, STUDENT_META, resume, overwrite, rk.is_main)
    out.mkdir(parents=True, exist_ok=True)
    if rk.is_main:
        save_config(cfg, out / "config.json")
    run = _prepare(cfg, out, rk)
    student = run.student
    named = [
        *((n, p) for n, p in student.named_parameters() if p.requires_grad),
        *run.heads.named_parameters(prefix="heads"),
        ("logit_scale", run.log_scale),
    ]
    opt = adamw(named, cfg.lr, cfg.weight_decay)
    total = total_steps(len(run.data), cfg.batch_size, cfg.epochs, "distill")
    warmup = max(1, round(cfg.warmup_fraction * total))
    log = out / "metrics.jsonl"
    alpha_state = torch.full((len(run.kd_outputs),), float("nan"))  # EMA of the weights (NaN: no step yet)
    ckpt = Checkpointer(
        out,
        cfg.checkpoint_every,
        resume,
        log,
        asdict(cfg),
        writer=rk.is_main,
        model=student,
        optimizer=opt,
        logit_scale=run.log_scale,
        alpha_state=alpha_state,
        heads=run.heads,
    )
    model = rk.wrap(student)  # DDP averages the student's gradients over ranks
    first = ckpt.start()
    rk.barrier()
    t0 = time.time()
    _train_mode(student, cfg.frozen_stages)
    for step in progress(range(first, total), f"distilling ({cfg.weighting})"):
        set_lr(opt, cosine_lr(step, total, cfg.lr, warmup))
        surrogate, logged = _step(cfg, run, model, rk, step, alpha_state)
        ckpt.require_finite(logged[0][0], step, "distill")  # the loss's value, logged
        opt.zero_grad(set_to_none=True)
        surrogate.backward()
        rk.average_grads([run.log_scale, *run.heads.parameters()])  # outside the DDP module
        opt.step()
        with torch.no_grad():
            run.log_scale.clamp_(0, math.log(100))
        if step % 5 == 0 or step == total - 1:
            values, n_kl, aux_names, alpha, raw, gram = logged
            means = rk.mean(torch.stack(values))  # collective
            if rk.is_main:
                _log_step(log, step, means, n_kl, aux_names, alpha, raw, gram, opt, run.log_scale, t0)
        ckpt.step_done(step, total)
    student.eval()
    train_seconds = time.time() - t0
    if not rk.is_main:  # rank 0 writes the outputs; the others wait for them
        rk.barrier()
        return out
    _write_student(cfg, out, run, total, train_seconds, log)
    ckpt.finish()
    rk.barrier()
    return out


def _prepare(cfg: DistillConfig, out: Path, rk) -> _Run:
    """Load the teachers, build the student, read the images, compute the class vectors (and
    train the fusion network); the same on every rank and on resume (seeded)."""
    torch.manual_seed(cfg.seed)
    teachers = [load_teacher(t) for t in cfg.teachers]
    for t in teachers:
        t.model.eval().requires_grad_(False)
    dim = fused_dim([t.dim for t in teachers], cfg.fusion, cfg.fusion_dim)
    # NHWC convolutions (oneDNN): about 1.6x faster student steps on CPU than NCHW, same maths
    student = create_student(cfg.student, dim, cfg.image_size).to(memory_format=torch.channels_last)
    aug = Augment(scale=tuple(cfg.aug_scale))
    store = student.arch.input_spec.with_size(aug.storage_size(student.arch.image_size))
    images, data, skipped = image_tensor(load_split(cfg.data, "train"), store, skip_bad=cfg.skip_bad)
    prefix = _frozen_prefix(student, cfg.frozen_stages, images, data.sources)
    if cfg.skip_bad and rk.is_main:
        atomic_write_json(out / "skipped.json", {"count": len(skipped), "files": skipped})
    texts, per_image = data.texts()
    outputs = [TeacherOutputs(t, data, texts, cfg.teacher_outputs, aug, rk) for t in teachers]
    fusion_net, fusion_losses, c_f = _student_class_vectors(cfg, outputs, data, per_image, dim)
    kd_outputs = list(outputs)
    if cfg.fusion == "network+teacher":
        kd_outputs.append(FusedTeacherOutputs(outputs, fusion_net, c_f))
    with_maps = cfg.spectral_weight > 0
    heads = FeatureHeads(
        dim,
        [t.dim for t in teachers] if cfg.feature_weight > 0 else None,
        student.map_channels() if with_maps else None,
        [_map_channels(t) for t in teachers] if with_maps else None,
    )
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    return _Run(
        teachers=teachers,
        student=student,
        aug=aug,
        data=data,
        images=torch.from_numpy(images),
        prefix=prefix,
        skipped=skipped,
        texts=texts,
        per_image=per_image,
        outputs=outputs,
        kd_outputs=kd_outputs,
        c_f=c_f,
        fusion_net=fusion_net,
        fusion_losses=fusion_losses,
        heads=heads,
        log_scale=log_scale,
    )


def _student_class_vectors(cfg: DistillConfig, outputs, data, per_image, dim: int):
    """(fusion network or None, its training losses, C_f (N, D_f)): the class vectors the
    student's embedding is scored against, fused from the teachers' (fusion.py)."""
    if not uses_network(cfg.fusion):
        return None, [], torch.from_numpy(fuse_class_vectors([o.class_vectors.numpy() for o in outputs], cfg.fusion))
    # deterministic: a resumed run refits the same network
    feats = [o.all_features(data) for o in outputs]
    vecs = [o.class_vectors for o in outputs]
    fusion_net, fusion_losses = train_fusion(feats, vecs, per_image, dim, cfg.fusion_steps, seed=cfg.seed)
    return fusion_net, fusion_losses, fusion_net.texts(vecs)


def _step(cfg: DistillConfig, run: _Run, model, rk, step: int, alpha_state: torch.Tensor):
    """One step's loss to backpropagate (a surrogate with the closed-form gradient of the KD and
    task terms, plus the optional terms) and what the log records: (values to average over
    ranks, number of KL terms, names of the optional terms, weights a (K,), raw weights (K,),
    gradient Gram (K, K))."""
    batch = batch_indices(step, len(run.data), cfg.batch_size, cfg.seed)
    lo, hi = rk.rows(len(batch))
    idx, within = torch.from_numpy(batch[lo:hi]), (lo, len(batch))
    with_maps = cfg.spectral_weight > 0
    if run.prefix is not None:  # the frozen stages' cached outputs: only the backbone's top runs
        emb, s_map = model(prefix_batch(run.prefix, idx.numpy()), from_stage=cfg.frozen_stages), None
    else:
        size = run.student.arch.image_size
        crops = run.aug(run.images[idx], size, step_rng(cfg.seed, step), within) / 255.0
        crops = crops.contiguous(memory_format=torch.channels_last)
        emb, s_map = model(crops, with_map=True) if with_maps else (model(crops), None)
    z_s = run.log_scale.exp() * emb @ run.c_f.T  # (B, N)
    t_out = [o.embed(idx, cfg.seed, step, within, with_map=with_maps) for o in run.outputs]
    t_embs, t_maps = zip(*t_out) if with_maps else (t_out, None)
    z_t = [o.logits_of(e) for o, e in zip(run.outputs, t_embs)]
    if len(run.kd_outputs) > len(run.outputs):
        z_t.append(run.kd_outputs[-1].logits_of(list(t_embs)))
    temps = cfg.kd_temperatures or [cfg.kd_temperature] * len(run.kd_outputs)
    cv = class_vector_terms(z_t, z_s, temps, _caption_targets(run.per_image, idx, len(run.texts)))
    grads = cv.kl_grads.flatten(1).double()
    gram = rk.sum_(grads @ grads.T)  # (K, K) over the global batch
    options = WeightingOptions(cfg.tolerance, cfg.fixed_weights, cfg.single_teacher, cfg.gt_margin)
    raw = teacher_weights(cfg.weighting, WeightingInputs(gram, cv.kl_grads, cv.teacher_ce), options)
    if raw.dim() == 2:  # per image (K, B): the logged weights are this process's batch mean
        alpha_kb, raw = raw, raw.mean(1)
        alpha = raw
    else:
        alpha = smooth_weights(alpha_state, raw, cfg.alpha_ema)
        alpha_kb = alpha[:, None].expand(-1, len(idx))
    # KD and task terms backpropagate their closed-form gradient w.r.t. z_s (same maths, no
    # autograd through the softmaxes over N texts); the optional terms use autograd
    dz = cfg.kd_weight * torch.einsum("kb,kbn->bn", alpha_kb, cv.kl_grads) + cfg.task_weight * cv.task_grad
    caps = _batch_captions(run.per_image, idx, step) if cfg.relation_weight > 0 else None
    aux = _auxiliary_losses(cfg, run.heads, alpha[: len(run.outputs)], (emb, s_map, z_s), (t_embs, t_maps, z_t), caps)
    aux_loss = sum(w * v for w, v in aux.values())
    kd = (alpha_kb * cv.kl_per_sample).sum(0).mean()
    loss = cfg.kd_weight * kd + cfg.task_weight * cv.task + aux_loss  # the value logged
    values = [loss.detach(), cv.task, *cv.kls, *(v.detach() for _, v in aux.values())]
    return closed_form_surrogate(z_s, dz) + aux_loss, (values, len(cv.kls), list(aux), alpha, raw, gram)


def _write_student(cfg: DistillConfig, out: Path, run: _Run, total: int, train_seconds: float, log: Path) -> None:
    """The student folder (student_folder.py): weights, fusion weights, index, student.json, curve."""
    state = {k: v.detach().contiguous() for k, v in run.student.state_dict().items()}
    atomic_write(out / STUDENT_WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    if run.fusion_net is not None:
        fusion_state = {k: v.detach().contiguous() for k, v in run.fusion_net.state_dict().items()}
        atomic_write(out / FUSION_WEIGHTS, lambda tmp: save_file(fusion_state, str(tmp)))
    write_index(out, run.teachers, cfg.data, cfg.fusion, run.fusion_net)
    losses = run.fusion_losses
    meta = {
        "arch": run.student.arch.to_dict(),
        "teachers": [str(Path(t).resolve()) if Path(t).is_dir() else t for t in cfg.teachers],
        "teacher_ids": [teacher_id(t) for t in run.teachers],
        "fusion": cfg.fusion,
        "fusion_dims": [t.dim for t in run.teachers],
        "fusion_final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
        "weighting": cfg.weighting,
        "weighting_options": _weighting_record(cfg),
        "backbone_weights": student_backbone_weights(cfg.student),
        "frozen_stages": cfg.frozen_stages,
        "logit_scale": round(run.log_scale.exp().item(), 4),
        "data": cfg.data,
        "images": len(run.data),
        "skipped_images": len(run.skipped),
        "steps": total,
        "train_seconds": round(train_seconds, 1),
        "mean_alpha": np.mean([r["alpha"] for r in read_log(log)], axis=0).round(4).tolist(),
    }
    atomic_write_json(out / STUDENT_META, meta)
    plot_learning_curve(log, out / "learning_curve.png", f"student {cfg.student} ({cfg.weighting}) on {cfg.data}")


def _weighting_record(cfg: DistillConfig) -> dict:
    """The training choices that shape the KD term, for student.json (and the bundle's manifest)."""
    rec = {
        "kd_weight": cfg.kd_weight,
        "task_weight": cfg.task_weight,
        "kd_temperatures": cfg.kd_temperatures or [cfg.kd_temperature] * cfg.kd_teachers,
        "alpha_ema": cfg.alpha_ema,
        "feature_weight": cfg.feature_weight,
        "relation_weight": cfg.relation_weight,
        "spectral_weight": cfg.spectral_weight,
    }
    if cfg.weighting in CAPPED:
        rec["tolerance"] = cfg.tolerance
    if cfg.weighting == "adaptive-gt":
        rec["gt_margin"] = cfg.gt_margin
    if cfg.weighting == "fixed":
        rec["fixed_weights"] = cfg.fixed_weights
    if cfg.weighting == "single":
        rec["single_teacher"] = cfg.single_teacher
    return rec


def _frozen_prefix(student: Student, frozen_stages: int | None, images: np.ndarray, sources: list[str]):
    """Freeze the student's stem + first stages and return their cached outputs of `images`
    (M, C, h, w) fp16, or None when nothing is frozen."""
    if frozen_stages is None:
        return None
    freeze_prefix(student.backbone, frozen_stages)
    spec = student.arch.input_spec
    key = json.dumps(spec.to_dict(), sort_keys=True)
    return cached_prefix_outputs(student.backbone, frozen_stages, images, spec.mean, spec.std, (key, *sources))


def _train_mode(student: Student, frozen_stages: int | None) -> None:
    """Training mode; a student with a frozen prefix is pretrained and keeps its BatchNorm statistics."""
    student.train()
    if frozen_stages is not None:
        bn_eval(student.backbone)


def _map_channels(t: Teacher) -> int:
    """C of a teacher's last feature map (a dry run of its image tower)."""
    with torch.no_grad():
        return t.image_features_and_map(torch.zeros(1, 3, t.spec.size, t.spec.size, dtype=torch.uint8))[1].shape[1]


def _batch_captions(per_image: list[list[int]], idx: torch.Tensor, step: int) -> torch.Tensor:
    """(B,) one caption id per image of the batch: each image's captions taken in turn over steps."""
    return torch.tensor([per_image[i][(step + r) % len(per_image[i])] for r, i in enumerate(idx.tolist())])


def _auxiliary_losses(cfg, heads, alpha, student, teachers, caps) -> dict:
    """The optional terms, {name: (weight, scalar loss)} for those with weight > 0, each a sum
    over the teachers weighted by their KD weights `alpha` renormalised (uniform if all are 0).
    student = (emb (B, D_f), feature map (B, C_s, h, w) or None, logits (B, N));
    teachers = (embeddings [(B, D_k)], feature maps [(B, C_k, h_k, w_k)] or None, logits [(B, N)]):
      feature   CLIP-KD FD: |normalise(P_k emb) - v_k|^2
      relation  CLIP-KD CRD: KL on the batch's image x caption logits (B, B), captions `caps` (B,)
      spectral  SDKD-style: FFT low/high-band distance of the feature maps, through a 1x1 adapter
    """
    (emb, s_map, z_s), (t_embs, t_maps, z_t) = student, teachers
    beta = alpha / alpha.sum() if alpha.sum() > 0 else torch.full_like(alpha, 1 / len(alpha))
    terms = {}
    if cfg.feature_weight > 0:
        fd = [feature_distill(heads.project(k, emb), v) for k, v in enumerate(t_embs)]
        terms["feature"] = (cfg.feature_weight, sum(b * x for b, x in zip(beta.tolist(), fd)))
    if cfg.relation_weight > 0:
        rd = [relation_distill(z[:, caps], z_s[:, caps]) for z in z_t[: len(beta)]]
        terms["relation"] = (cfg.relation_weight, sum(b * x for b, x in zip(beta.tolist(), rd)))
    if cfg.spectral_weight > 0:
        band_w = tuple(cfg.spectral_band_weights)
        sd = [
            spectral_distill(heads.adapt(k, s_map, m.shape[-2:]), m, cfg.spectral_cutoff, band_w)
            for k, m in enumerate(t_maps)
        ]
        terms["spectral"] = (cfg.spectral_weight, sum(b * x for b, x in zip(beta.tolist(), sd)))
    return terms


def _log_step(log, step, means, n_kl, aux_names, alpha, raw, gram, opt, log_scale, t0) -> None:
    """One metrics record: losses (means over ranks), weights, and the teachers' gradient cosine."""
    record = {
        "step": step,
        "loss": round(means[0].item(), 5),
        "task": round(means[1].item(), 5),
        "kl": [round(k, 5) for k in means[2 : 2 + n_kl].tolist()],
        **{name: round(v, 5) for name, v in zip(aux_names, means[2 + n_kl :].tolist())},
        "alpha": [round(a, 4) for a in alpha.tolist()],
        "alpha_raw": [round(a, 4) for a in raw.tolist()],
        "lr": opt.param_groups[0]["lr"],
        "student_scale": round(log_scale.exp().item(), 3),
        "elapsed_s": round(time.time() - t0, 2),
    }
    if len(gram) == 2:
        record["grad_cosine"] = round((gram[0, 1] / (gram[0, 0] * gram[1, 1]).sqrt().clamp(min=1e-30)).item(), 4)
    append_jsonl(log, record)
