"""Training-time image augmentation on decoded uint8 batches, reproducible from a step's RNG.

Images are decoded once at a storage size a little above the model's input size; each step
takes a random-resized crop of each image (CLIP-style: a large fraction of the picture, aspect
near 1) and resizes it to the input size in one batched bilinear `roi_align`. With scale (1, 1)
and no flip, images are stored at the input size and passed through untouched: exactly the
evaluation pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import roi_align


@dataclass(frozen=True)
class Augment:
    """Random-resized crop (area fraction in `scale`, aspect in `ratio`) and optional h-flip."""

    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = False  # off by default: captions say "left" and "right"
    storage_factor: float = 1.25  # images are stored at round(size * this) before cropping

    @property
    def identity(self) -> bool:
        return self.scale == (1.0, 1.0) and not self.hflip

    def storage_size(self, size: int) -> int:
        """Side at which images are decoded for training: the input size itself without augmentation."""
        return size if self.identity else max(size, round(size * self.storage_factor))

    def boxes(self, n: int, side: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 4) crop boxes x1, y1, x2, y2 in pixels of a `side`-square image."""
        lo, hi = self.scale
        area = rng.uniform(lo, hi, n) * side * side
        log_r = rng.uniform(np.log(self.ratio[0]), np.log(self.ratio[1]), n)
        aspect = np.exp(log_r)
        w = np.clip(np.sqrt(area * aspect), 1, side)
        h = np.clip(np.sqrt(area / aspect), 1, side)
        x1 = rng.uniform(0, 1, n) * (side - w)
        y1 = rng.uniform(0, 1, n) * (side - h)
        return np.stack([x1, y1, x1 + w, y1 + h], axis=1)

    def __call__(
        self, images_u8: torch.Tensor, size: int, rng: np.random.Generator, within: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """uint8 (B, 3, S', S') -> float (B, 3, size, size) in [0, 255], cropped and resized.

        `within` = (offset, total): these B images are rows offset..offset+B of a batch of
        `total` (one data-parallel rank's share); they get the crops a whole-batch call would.
        """
        n, side = len(images_u8), images_u8.shape[-1]
        if self.identity and side == size:
            return images_u8.float()  # exactly the evaluation pixels
        offset, total = within or (0, n)
        boxes = torch.from_numpy(self.boxes(total, side, rng)[offset : offset + n]).float()
        rois = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], boxes], dim=1)
        out = roi_align(images_u8.float(), rois, output_size=(size, size), spatial_scale=1.0, aligned=True)
        if self.hflip:
            flip = torch.from_numpy(rng.random(total)[offset : offset + n] < 0.5)
            out[flip] = out[flip].flip(-1)
        return out.clamp_(0, 255)


NO_AUGMENT = Augment(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False)
