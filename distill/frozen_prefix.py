"""A pretrained timm image tower cut at a frozen boundary, and a disk cache of what lies below it.

Fine-tuning a pretrained tower on a CPU is affordable when its first stages stay frozen: their
output for an image never changes, so it is computed once (centre crop, no augmentation) and
stored as fp16; each training step then runs only the trainable top. `frozen_stages = k`
freezes the stem and the first k of the tower's `blocks` stages (timm EfficientNet/-Lite and
MobileNetV3 layouts); the BatchNorm statistics of the trainable top stay at their pretrained
values (eval mode), its weights train.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn as nn

from ammkd.common.errors import ConfigError
from ammkd.common.files import atomic_save_npy, sha256_text
from ammkd.common.paths import cache_dir
from ammkd.common.progress import progress


def _check(trunk: nn.Module, frozen_stages: int) -> None:
    if not all(hasattr(trunk, a) for a in ("conv_stem", "bn1", "blocks", "forward_head")):
        raise ConfigError(
            f"frozen_stages needs a timm EfficientNet or MobileNetV3 tower (conv_stem, bn1, blocks); "
            f"got {type(trunk).__name__}"
        )
    if not 0 <= frozen_stages < len(trunk.blocks):
        raise ConfigError(f"frozen_stages must be in [0, {len(trunk.blocks) - 1}], got {frozen_stages}")


def prefix_forward(trunk: nn.Module, x: torch.Tensor, frozen_stages: int) -> torch.Tensor:
    """Normalised images (B, 3, S, S) -> the output of the stem and the first `frozen_stages` stages."""
    _check(trunk, frozen_stages)
    x = trunk.bn1(trunk.conv_stem(x))
    for stage in trunk.blocks[:frozen_stages]:
        x = stage(x)
    return x


def suffix_forward(trunk: nn.Module, h: torch.Tensor, frozen_stages: int) -> torch.Tensor:
    """What `prefix_forward` returned -> the tower's pooled features (B, C), as `trunk(x)` would."""
    for stage in trunk.blocks[frozen_stages:]:
        h = stage(h)
    if hasattr(trunk, "conv_head") and hasattr(trunk, "bn2"):  # EfficientNet: head conv before pooling
        h = trunk.bn2(trunk.conv_head(h))
    return trunk.forward_head(h)


def freeze_prefix(trunk: nn.Module, frozen_stages: int) -> None:
    """Freeze the stem and the first stages' weights (their BatchNorm statistics: `bn_eval`)."""
    _check(trunk, frozen_stages)
    for m in (trunk.conv_stem, trunk.bn1, *trunk.blocks[:frozen_stages]):
        m.requires_grad_(False)


def bn_eval(module: nn.Module) -> nn.Module:
    """Put every BatchNorm of `module` in eval mode (running statistics used, not updated)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return module


def prefix_fingerprint(trunk: nn.Module, frozen_stages: int) -> str:
    """SHA-256 over the frozen part's weights and buffers: the key of its cached outputs."""
    h = hashlib.sha256(f"frozen_stages={frozen_stages}".encode())
    parts = [trunk.conv_stem, trunk.bn1, *trunk.blocks[:frozen_stages]]
    for i, m in enumerate(parts):
        for k, v in m.state_dict().items():
            h.update(f"{i}.{k}".encode())
            h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def cached_prefix_outputs(
    trunk: nn.Module,
    frozen_stages: int,
    images_u8: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    key_parts: tuple[str, ...],
    batch_size: int = 64,
) -> np.ndarray:
    """(M, C, h, w) fp16 prefix outputs of uint8 images (M, 3, S, S), memory-mapped from the cache
    (keyed by the frozen weights, the normalisation and `key_parts`, e.g. the image sources)."""
    key = sha256_text(prefix_fingerprint(trunk, frozen_stages), repr((mean, std, images_u8.shape)), *key_parts)
    path = cache_dir() / "frozen_prefix" / f"{key}.npy"
    if path.is_file():
        feats = np.load(path, mmap_mode="r")
        if feats.shape[0] == len(images_u8):
            return feats
    was_training = trunk.training
    trunk.eval().to(memory_format=torch.channels_last)  # NHWC convolutions: ~1.5x faster on CPU
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    out = None
    for i in progress(range(0, len(images_u8), batch_size), f"frozen stages of {len(images_u8)} images"):
        x = (torch.from_numpy(np.asarray(images_u8[i : i + batch_size])).float() / 255.0 - m) / s
        h = prefix_forward(trunk, x.contiguous(memory_format=torch.channels_last), frozen_stages)
        if out is None:
            out = np.empty((len(images_u8), *h.shape[1:]), dtype=np.float16)
        out[i : i + len(h)] = h.float().numpy().astype(np.float16)
    trunk.train(was_training)
    atomic_save_npy(path, out)
    return np.load(path, mmap_mode="r")


def prefix_batch(
    prefix: np.ndarray, idx: np.ndarray, hflip: bool = False, rng: np.random.Generator | None = None
) -> torch.Tensor:
    """Rows `idx` of cached prefix outputs as float32 (B, C, h, w), channels-last (read in sorted
    order from the memory map). With `hflip`, each row is mirrored with probability 1/2 (the
    feature map of the mirrored image, up to the asymmetry of the frozen convolutions)."""
    order = np.argsort(idx)
    rows = np.empty((len(idx), *prefix.shape[1:]), dtype=np.float32)
    rows[order] = np.asarray(prefix[np.asarray(idx)[order]], dtype=np.float32)
    h = torch.from_numpy(rows)
    if hflip:
        flip = torch.from_numpy((rng or np.random.default_rng()).random(len(idx)) < 0.5)
        h[flip] = h[flip].flip(-1)
    return h.contiguous(memory_format=torch.channels_last)
