"""The student: a mobile image backbone (timm) + a projection head into the fused text space.

Its forward takes RGB in [0, 1], NCHW float32, and returns L2-normalised embeddings: the mean/std
normalisation and the L2-norm live inside the module, so the exported graph needs nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import timm
import torch
import torch.nn as nn

from ammkd.bundle.format import InputSpec
from ammkd.common.errors import ConfigError
from ammkd.distill.frozen_prefix import suffix_forward
from ammkd.distill.pretrained import load_weights, parse_image_tower, tower_input

PRESET_DIR = Path(__file__).with_name("presets") / "students"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class StudentArch:
    """What is needed to rebuild a student: backbone name + kwargs, input size, output dim."""

    backbone: str
    image_size: int
    embed_dim: int
    backbone_kwargs: dict = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(size=self.image_size, mean=tuple(self.mean), std=tuple(self.std))

    def to_dict(self) -> dict:
        return asdict(self)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / ||x|| along the last dim, written as x * rsqrt(sum x^2): exports as plain ops
    (ExecuTorch and some converters lack linalg_vector_norm)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


class Student(nn.Module):
    def __init__(self, arch: StudentArch):
        super().__init__()
        self.arch = arch
        try:
            self.backbone = timm.create_model(arch.backbone, pretrained=False, num_classes=0, **arch.backbone_kwargs)
        except (RuntimeError, TypeError) as e:
            raise ConfigError(f"student backbone {arch.backbone!r}: {e}") from None
        with torch.no_grad():  # pooled width; timm's num_features can precede a conv head
            width = self.backbone.eval()(torch.zeros(1, 3, arch.image_size, arch.image_size)).shape[-1]
        self.head = nn.Linear(width, arch.embed_dim)
        self.register_buffer("mean", torch.tensor(arch.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(arch.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor, with_map: bool = False, from_stage: int | None = None):
        """image (B, 3, S, S) RGB in [0, 1] -> L2-normalised embedding (B, embed_dim); with
        `with_map`, also the backbone's last feature map (B, C, h, w) (for spectral distillation).
        With `from_stage=k`, `image` is instead the output of the backbone's stem and first k
        stages (frozen_prefix.py) and only the rest runs (training with a frozen, cached prefix)."""
        if from_stage is not None:
            return l2_normalize(self.head(suffix_forward(self.backbone, image, from_stage)))
        x = (image - self.mean) / self.std
        if not with_map:
            return l2_normalize(self.head(self.backbone(x)))
        final, maps = self.backbone.forward_intermediates(x, indices=1, output_fmt="NCHW")
        return l2_normalize(self.head(self.backbone.forward_head(final))), maps[-1]

    def map_channels(self) -> int:
        """C of the feature map that `forward(..., with_map=True)` returns (a dry run in eval mode)."""
        size, training = self.arch.image_size, self.training
        with torch.no_grad():
            _, maps = self.eval()(torch.zeros(1, 3, size, size), with_map=True)
        self.train(training)
        return maps.shape[1]


def student_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def student_backbone_weights(name: str) -> str | None:
    """The pretrained weights spec a student name starts from (None: random init)."""
    preset = PRESET_DIR / f"{name}.json"
    if preset.is_file():
        return json.loads(preset.read_text()).get("weights")
    tower = parse_image_tower(name)
    return tower[1] if tower else None


def create_student(name: str, embed_dim: int, image_size: int | None = None) -> Student:
    """A preset name (presets/students/*.json), a timm model name (random init) or a pretrained
    timm tower `ARCH:WEIGHTS` (`tf_efficientnet_lite0:imagenet`, a local checkpoint) -> a Student
    with a new projection head. A preset may name `weights` the same way."""
    preset = PRESET_DIR / f"{name}.json"
    tower = parse_image_tower(name)
    if preset.is_file():
        cfg = json.loads(preset.read_text())
    elif timm.is_model(name):
        cfg = {"backbone": name, "image_size": 64}
    elif tower is not None:
        cfg = {"backbone": tower[0], "weights": tower[1]}
    else:
        raise ConfigError(
            f"unknown student {name!r}: use a preset ({', '.join(student_presets())}), a timm model name "
            f"or ARCH:WEIGHTS (tf_efficientnet_lite0:imagenet)"
        )
    weights = cfg.pop("weights", None)
    if weights:  # the tower's own input: native size unless overridden, its normalisation
        native = tower_input(cfg["backbone"], weights)
        cfg.setdefault("image_size", native["size"])
        cfg.setdefault("mean", tuple(native["mean"]))
        cfg.setdefault("std", tuple(native["std"]))
    if image_size:
        cfg["image_size"] = image_size
    student = Student(StudentArch(embed_dim=embed_dim, **cfg))
    if weights:
        load_weights(student.backbone, weights)
    return student
