"""The gallery's place in a bundle: a user's own photos embedded by one of the bundle's encoders
(`gallery/gallery.json` + `gallery/embeddings.f32.bin`, docs/design.md §5). The runtime writes
and searches it (mobile_runtime/gallery.py); a re-export carries it over (export/exporter.py).
"""

from __future__ import annotations

import hashlib

GALLERY_FORMAT = "ammkd-gallery"
GALLERY_VERSION = 1
GALLERY_DIR = "gallery"
GALLERY_MANIFEST = "gallery.json"
EMBEDDINGS = "embeddings.f32.bin"  # (M, D) float32 little-endian, row i the embedding of images[i]
ENCODER_KEYS = ("format", "quantization", "sha256")
MAX_DIM = 65536  # as the bundle manifest's output.dim


def encoder_id(target: dict) -> dict:
    """What a gallery records of the encoder that embedded it: format, quantization, SHA-256 of its files."""
    files = target["package"]["files"] if "package" in target else [target["file"]]
    digest = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()
    return {"format": target["format"], "quantization": target["quantization"], "sha256": digest}
