"""CLIP teachers through open_clip: specs, encoding, contrastive training, saving and loading.

A teacher spec is one of:
  - a tiny preset name shipped here (`ammkd-tiny-vit`, `ammkd-tiny-rn`), randomly initialised;
  - an open_clip registry name, optionally with a pretrained tag: `ViT-B-32:openai`
    (downloads weights, so it needs internet; without a tag the model is randomly initialised);
  - a teacher folder written by `train_teacher` (open_clip's `local-dir:` layout:
    `open_clip_config.json` + `open_clip_model.safetensors`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ammkd.common.config import save_config
from ammkd.common.errors import ConfigError
from ammkd.common.files import append_jsonl, atomic_write, atomic_write_json, sha256_file
from ammkd.common.progress import progress
from ammkd.distill.data import image_tensor, load_split
from ammkd.distill.schedule import Checkpointer, adamw, batch_indices, cosine_lr, set_lr, step_rng, total_steps
from ammkd.export.bundle_format import InputSpec

PRESET_DIR = Path(__file__).with_name("presets") / "teachers"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

open_clip.add_model_config(PRESET_DIR)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


@dataclass
class Teacher:
    """A frozen-or-trainable open_clip model with what is needed to feed it.

    `encode_images` takes uint8 (B, 3, S, S) at `spec.size` and returns L2-normalised (B, D).
    """

    name: str  # the spec it was loaded from
    model: torch.nn.Module
    tokenizer: object
    spec: InputSpec
    fingerprint: str  # identifies the weights: SHA-256 of the checkpoint, or the spec for random init

    @property
    def dim(self) -> int:
        return (
            int(self.model.text_projection.shape[1])
            if hasattr(self.model, "text_projection")
            else int(self.model.visual.output_dim)
        )

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp().clamp(max=100))

    def _normalise(self, images_u8: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.spec.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std).view(1, 3, 1, 1)
        return (images_u8.float() / 255.0 - mean) / std

    def image_features(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> normalised (B, D), with gradients if the model is training."""
        return F.normalize(self.model.encode_image(self._normalise(images_u8)), dim=-1)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(texts)), dim=-1)

    @torch.no_grad()
    def encode_images(self, images_u8: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.model.eval()
        x = torch.as_tensor(images_u8)
        return torch.cat([self.image_features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 512) -> torch.Tensor:
        self.model.eval()
        chunks = range(0, len(texts), batch_size)
        return torch.cat(
            [
                self.text_features(texts[i : i + batch_size])
                for i in progress(chunks, f"encoding {len(texts)} texts ({self.name})")
            ]
        )


def _input_spec(model: torch.nn.Module, preprocess_cfg: dict | None = None) -> InputSpec:
    cfg = preprocess_cfg or getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return InputSpec(
        size=int(size),
        interpolation=cfg.get("interpolation", "bicubic"),
        mean=tuple(cfg.get("mean", OPENAI_MEAN)),
        std=tuple(cfg.get("std", OPENAI_STD)),
    )


@contextlib.contextmanager
def _quiet_random_init():
    """open_clip warns on every model built without weights; for a preset that is the point."""

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    f = Drop()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def load_teacher(spec: str) -> Teacher:
    """Build a Teacher from a spec string (see the module docstring)."""
    path = Path(spec)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise ConfigError(f"{path}: not a teacher folder (no {CONFIG_FILE})")
        if not (path / WEIGHTS_FILE).is_file():
            raise ConfigError(f"{path}: teacher folder has no {WEIGHTS_FILE}")
        try:
            cfg = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
            model = open_clip.create_model(f"local-dir:{path}")
            tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, KeyError, RuntimeError, OSError) as e:
            raise ConfigError(f"{path}: teacher folder does not load ({type(e).__name__}: {e})") from None
        return Teacher(
            str(path), model, tokenizer, _input_spec(model, cfg.get("preprocess_cfg")), sha256_file(path / WEIGHTS_FILE)
        )
    name, _, pretrained = spec.partition(":")
    if name not in open_clip.list_models():
        raise ConfigError(
            f"unknown teacher {spec!r}: not a folder, a preset ({', '.join(preset_names())}) "
            f"or an open_clip model name (open_clip.list_models())"
        )
    if pretrained and pretrained not in open_clip.list_pretrained_tags_by_model(name):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ConfigError(f"teacher {spec!r}: unknown pretrained tag {pretrained!r} for {name} (known: {tags})")
    try:
        with _quiet_random_init():
            model = open_clip.create_model(name, pretrained=pretrained or None)
    except Exception as e:  # hub downloads fail offline with many exception types
        raise ConfigError(
            f"teacher {spec!r}: could not fetch pretrained weights ({type(e).__name__}: {e}); this needs "
            f"internet access to the model hub; offline, use a local teacher folder"
        ) from None
    return Teacher(
        spec,
        model,
        open_clip.get_tokenizer(name),
        _input_spec(model),
        f"{spec}" if pretrained else f"{spec}:random-init",
    )


def save_teacher(teacher: Teacher, out: Path, extra: dict) -> None:
    """Write an open_clip `local-dir:` folder: config + safetensors weights + ammkd metadata."""
    out.mkdir(parents=True, exist_ok=True)
    name = teacher.name.partition(":")[0]
    model_cfg = (
        open_clip.get_model_config(name)
        if name in open_clip.list_models()
        else json.loads((Path(teacher.name) / CONFIG_FILE).read_text())["model_cfg"]
    )
    s = teacher.spec
    atomic_write_json(
        out / CONFIG_FILE,
        {
            "model_cfg": model_cfg,
            "preprocess_cfg": {
                "size": s.size,
                "mean": list(s.mean),
                "std": list(s.std),
                "interpolation": s.interpolation,
                "resize_mode": "shortest",
            },
        },
    )
    state = {k: v.detach().contiguous() for k, v in teacher.model.state_dict().items()}
    atomic_write(out / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    atomic_write_json(out / "teacher.json", {"weights_sha256": sha256_file(out / WEIGHTS_FILE), **extra})


@dataclass
class TeacherConfig:
    """Contrastive fine-tuning of one teacher (open_clip ClipLoss), then it is frozen."""

    model: str = "ammkd-tiny-vit"
    data: str = "synthetic"
    epochs: float = 10.0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    seed: int = 0
    checkpoint_every: int = 100  # steps; 0 disables

    def validate(self) -> None:
        if self.epochs <= 0 or self.batch_size < 2 or self.lr <= 0:
            raise ConfigError("teacher config: epochs and lr must be > 0 and batch_size >= 2")


def train_teacher(cfg: TeacherConfig, out: str | Path, resume: bool = False) -> Path:
    """Train a teacher contrastively on `cfg.data` (train split) and save it to `out`.

    Each step pairs every image with one of its captions drawn at random. With `resume`, an
    interrupted run continues from its last checkpoint in `out`. Returns `out`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    torch.manual_seed(cfg.seed)
    teacher = load_teacher(cfg.model)
    data = load_split(cfg.data, "train")
    images, data, _ = image_tensor(data, teacher.spec)
    images = torch.from_numpy(images)
    model = teacher.model.train()
    opt = adamw(model.named_parameters(), cfg.lr, cfg.weight_decay)
    loss_fn = open_clip.ClipLoss()
    total = total_steps(len(data), cfg.batch_size, cfg.epochs)
    warmup = max(1, round(cfg.warmup_fraction * total))
    log = out / "metrics.jsonl"
    ckpt = Checkpointer(out, cfg.checkpoint_every, resume, log, asdict(cfg), model=model, optimizer=opt)
    t0 = time.time()
    for step in progress(range(ckpt.start(), total), f"training teacher {cfg.model}"):
        idx = batch_indices(step, len(data), cfg.batch_size, cfg.seed)
        rng = step_rng(cfg.seed, step)
        texts = [data.captions[i][rng.integers(len(data.captions[i]))] for i in idx]
        set_lr(opt, cosine_lr(step, total, cfg.lr, warmup))
        img = teacher.image_features(images[idx])
        txt = teacher.text_features(texts)
        loss = loss_fn(img, txt, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 10 == 0 or step == total - 1:
            append_jsonl(
                log,
                {
                    "step": step,
                    "loss": round(loss.item(), 5),
                    "lr": opt.param_groups[0]["lr"],
                    "logit_scale": round(teacher.logit_scale, 3),
                    "elapsed_s": round(time.time() - t0, 2),
                },
            )
        ckpt.step_done(step, total)
    model.eval()
    save_teacher(
        teacher,
        out,
        {"source": cfg.model, "data": cfg.data, "steps": total, "train_seconds": round(time.time() - t0, 1)},
    )
    ckpt.finish()
    return out


class TeacherImageEncoder(torch.nn.Module):
    """A teacher's image tower as the student is exported: [0, 1] RGB in, unit embedding out.
    Used to time teachers with the same runtime as the student."""

    def __init__(self, teacher: Teacher):
        super().__init__()
        self.visual = teacher.model.visual
        self.register_buffer("mean", torch.tensor(teacher.spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(teacher.spec.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        from ammkd.distill.student import l2_normalize

        return l2_normalize(self.visual((image - self.mean) / self.std))
