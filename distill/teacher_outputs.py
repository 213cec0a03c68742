"""What a frozen teacher says about each training image: (B, N) logits over its class vectors.

Two modes (DistillConfig.teacher_outputs):
  cached  each teacher embeds every train image once (centre crop, no augmentation); the
          embeddings are stored as fp16 on disk, memory-mapped, keyed by the teacher's weights,
          the images and the input spec, so every later run (seeds, ablations) skips the
          teachers entirely and distillation runs the student alone;
  online  each step the teachers embed the batch, seeing the same random crop as the student
          (exact targets under augmentation, at the cost of a teacher forward pass per step).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from ammkd.common.files import atomic_save_npy, sha256_text
from ammkd.common.paths import cache_dir
from ammkd.distill.augment import Augment
from ammkd.distill.class_vectors import class_vectors
from ammkd.distill.data import ImageTextData
from ammkd.distill.distributed import Ranks
from ammkd.distill.fusion import FusionNetwork
from ammkd.distill.image_tensors import image_tensor
from ammkd.distill.schedule import step_rng
from ammkd.distill.teachers import Teacher

TEACHER_OUTPUT_MODES = ("cached", "online")


def _cached_features(teacher: Teacher, data: ImageTextData, ranks: Ranks = Ranks()) -> np.ndarray:
    """(M, D) fp16 image embeddings of every image of `data`, memory-mapped from the cache.
    Randomly initialised teachers have no stable fingerprint: computed in memory, not stored."""
    key = sha256_text(teacher.fingerprint, json.dumps(teacher.spec.to_dict(), sort_keys=True), *data.sources)
    path = cache_dir() / "teacher_outputs" / f"{key}.npy"
    if path.is_file():
        feats = np.load(path, mmap_mode="r")
        if feats.shape == (len(data), teacher.dim):
            return feats
    images, _, _ = image_tensor(data, teacher.spec)
    share = ranks.chunk(len(images))  # data-parallel: each rank embeds its share, then all gather
    key_parts = tuple(data.sources) if ranks.world == 1 else None  # a frozen prefix: its cached outputs
    local = teacher.encode_images(images[share.start : share.stop], key_parts=key_parts)
    feats = ranks.gather_rows(local, len(images)).numpy().astype(np.float16)
    if ranks.is_main and not teacher.fingerprint.endswith(":random-init"):
        atomic_save_npy(path, feats)
    ranks.barrier()
    return feats


class TeacherOutputs:
    """One frozen teacher over the train split; `embed(idx, seed, step)` gives its (B, D_k)
    embeddings of the images `idx` of step `step` (in online mode: of that step's augmented
    crops), and `logits_of` turns them into (B, N) logits over the text set."""

    def __init__(
        self, teacher: Teacher, data: ImageTextData, texts: list[str], mode: str, aug: Augment, ranks: Ranks = Ranks()
    ):
        if mode not in TEACHER_OUTPUT_MODES:
            raise ValueError(f"unknown teacher output mode {mode!r}; use one of {TEACHER_OUTPUT_MODES}")
        self.teacher, self.mode, self.aug, self.ranks = teacher, mode, aug, ranks
        self.class_vectors = torch.from_numpy(class_vectors(teacher, texts))  # (N, D_k)
        self.logit_scale = teacher.logit_scale
        if mode == "cached":
            self.features = _cached_features(teacher, data, ranks)
        else:
            store = teacher.spec.with_size(aug.storage_size(teacher.spec.size))
            self.images = torch.from_numpy(image_tensor(data, store)[0])

    def all_features(self, data: ImageTextData) -> np.ndarray:
        """(M, D_k) fp16 centre-crop embeddings of every train image (what the fusion network fits)."""
        return self.features if self.mode == "cached" else _cached_features(self.teacher, data, self.ranks)

    def embed(
        self, idx: torch.Tensor, seed: int, step: int, within: tuple[int, int] | None = None, with_map: bool = False
    ):
        """(B, D_k) float32 unit embeddings of the images `idx` as this step sees them
        (`within`: the rows' place in the global batch, see Augment). With `with_map` (online
        mode only), also the image tower's last feature map (B, C_k, h, w) of the same crops."""
        if self.mode == "cached":
            if with_map:
                raise ValueError("feature maps need teacher_outputs='online' (only embeddings are cached)")
            return torch.from_numpy(np.asarray(self.features[idx.numpy()], dtype=np.float32))
        batch = self.aug(self.images[idx], self.teacher.spec.size, step_rng(seed, step), within)  # the student's crop
        with torch.no_grad():
            return self.teacher.image_features_and_map(batch) if with_map else self.teacher.image_features(batch)

    def logits_of(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, D_k) embeddings from `embed` -> (B, N) logits over the text set."""
        return self.logit_scale * emb @ self.class_vectors.T


class FusedTeacherOutputs:
    """The fusion network's image-text distribution as one more teacher: the fused image features
    of the teachers' embeddings against the fused class vectors C_f (N, D_f)."""

    def __init__(self, outputs: list[TeacherOutputs], net: FusionNetwork, fused_vectors: torch.Tensor):
        self.outputs, self.net, self.class_vectors = outputs, net, fused_vectors

    def logits_of(self, embs: list[torch.Tensor]) -> torch.Tensor:
        """Each teacher's (B, D_k) embeddings of the batch -> (B, N) fused logits."""
        with torch.no_grad():
            return self.net.scale * self.net.images(embs) @ self.class_vectors.T
