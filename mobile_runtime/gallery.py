"""The gallery: a folder of photos embedded by the bundle's encoder, searched by a text of the bundle.

It lives in the bundle folder (`gallery/`), beside the files the manifest lists, so an app that
copies the bundle copies its gallery too:

    gallery/gallery.json          format, encoder it was made with (SHA-256), source folder,
                                  image paths (relative to it), skipped files with reasons,
                                  and the embeddings file's dtype, shape, bytes and SHA-256
    gallery/embeddings.f32.bin    (M, D) float32, little-endian, row-major, row i = images[i]

The embeddings file is append-only: each batch of rows is appended and flushed, then
`gallery.json` is rewritten atomically with the new count and hash. An interruption between the
two leaves extra rows past the recorded size, which the next run cuts off; so a run that is
killed loses at most the batch in flight, and the next run continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ammkd.bundle.gallery_format import (
    EMBEDDINGS,
    ENCODER_KEYS,
    GALLERY_DIR,
    GALLERY_FORMAT,
    GALLERY_MANIFEST,
    GALLERY_VERSION,
    MAX_DIM,
    encoder_id,
)
from ammkd.bundle.preprocess import preprocess
from ammkd.bundle.search import topk
from ammkd.common.errors import BundleError, DataError
from ammkd.common.files import atomic_write_json
from ammkd.common.progress import progress

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
BATCH = 64  # images embedded, appended and recorded at a time (what an interruption can lose)


@dataclass
class Gallery:
    """A loaded gallery: `embeddings` (M, D) float32, row i the embedding of `images[i]`."""

    folder: Path  # the gallery folder inside the bundle
    manifest: dict
    embeddings: np.ndarray

    @property
    def images(self) -> list[str]:
        return self.manifest["images"]

    @property
    def source(self) -> Path:
        return Path(self.manifest["source_dir"])

    def search(self, query: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """query (D,) unit vector (a class vector of the index) -> [(image path, cosine)] best first."""
        if len(self.images) == 0:
            return []
        ids, scores = topk(query, self.embeddings, k)
        return [(str(self.source / self.images[i]), float(s)) for i, s in zip(ids, scores)]


def _empty_manifest(source: Path, encoder: dict, dim: int) -> dict:
    return {
        "format": GALLERY_FORMAT,
        "format_version": GALLERY_VERSION,
        "encoder": encoder,
        "source_dir": str(source),
        "dim": dim,
        "images": [],
        "skipped": [],
        "embeddings": {
            "path": f"{GALLERY_DIR}/{EMBEDDINGS}",
            "dtype": "float32",
            "shape": [0, dim],
            "bytes": 0,
            "sha256": hashlib.sha256(b"").hexdigest(),
        },
    }


def is_safe_relative(name: str) -> bool:
    """Whether `name` is a plain relative POSIX path: not absolute, no empty, `.` or `..` segments,
    no backslash or NUL (a gallery entry must stay inside its photo folder)."""
    parts = name.split("/")
    return bool(name) and "\\" not in name and "\x00" not in name and all(p not in ("", ".", "..") for p in parts)


def check_gallery_manifest(manifest, mpath: Path) -> None:
    """gallery.json is untrusted input: its format, the types of every field read, and image names
    that stay inside the photo folder; else a BundleError naming the file and the field."""

    def bad(why: str) -> BundleError:
        return BundleError(f"{mpath}: {why}; delete the gallery folder to rebuild it")

    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    if manifest.get("format") != GALLERY_FORMAT or manifest.get("format_version") != GALLERY_VERSION:
        raise BundleError(f"{mpath}: not an {GALLERY_FORMAT} version {GALLERY_VERSION} manifest")
    images, entry = manifest.get("images"), manifest.get("embeddings")
    if not isinstance(manifest.get("source_dir"), str):
        raise bad("'source_dir' is missing or not a string")
    if not isinstance(images, list) or not all(isinstance(n, str) for n in images):
        raise bad("'images' is missing or not a list of names")
    unsafe = next((n for n in images if not is_safe_relative(n)), None)
    if unsafe is not None:
        raise bad(f"image {unsafe!r} is not a relative path inside the photo folder")
    encoder, skipped, dim = manifest.get("encoder"), manifest.get("skipped"), manifest.get("dim")
    if not isinstance(encoder, dict) or not all(isinstance(encoder.get(k), str) for k in ENCODER_KEYS):
        raise bad(f"'encoder' is missing or not an object with string {', '.join(ENCODER_KEYS)}")
    if not isinstance(skipped, list) or not all(
        isinstance(s, dict) and isinstance(s.get("path"), str) and isinstance(s.get("reason"), str) for s in skipped
    ):
        raise bad("'skipped' is missing or not a list of {path, reason}")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_DIM:
        raise bad(f"'dim' is not an integer in [1, {MAX_DIM}]")
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise bad("'embeddings' is missing or has no 'sha256'")
    if entry.get("path") != f"{GALLERY_DIR}/{EMBEDDINGS}" or entry.get("dtype") != "float32":
        raise bad(f"'embeddings' must be {GALLERY_DIR}/{EMBEDDINGS}, float32")
    size, shape = entry.get("bytes"), entry.get("shape")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise bad("'embeddings.bytes' is not a non-negative integer")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise bad("'embeddings.shape' is not [rows, dim]")
    if shape[0] * shape[1] * 4 != size:
        raise bad(f"'embeddings' says {size} bytes for shape {shape} float32")
    if shape[1] != dim or shape[0] != len(images):
        raise bad(f"'embeddings.shape' {shape} does not fit {len(images)} images of dim {dim}")


def open_gallery(bundle_root: str | Path) -> Gallery | None:
    """The bundle's gallery, checked (format, size, SHA-256), or None if it has none. Rows past
    the recorded size (an interrupted append) are cut off first."""
    folder = Path(bundle_root) / GALLERY_DIR
    mpath = folder / GALLERY_MANIFEST
    if not mpath.is_file():
        return None
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(
            f"{mpath}: unreadable gallery manifest ({e}); delete the gallery folder to rebuild it"
        ) from None
    check_gallery_manifest(manifest, mpath)
    entry = manifest["embeddings"]
    path = folder / EMBEDDINGS
    size = path.stat().st_size if path.is_file() else 0
    if size < entry["bytes"]:
        raise BundleError(f"{path}: {size} bytes, gallery.json says {entry['bytes']} (truncated); rebuild the gallery")
    if size > entry["bytes"]:
        with open(path, "r+b") as f:  # the tail of an append that was interrupted before it was recorded
            f.truncate(entry["bytes"])
    data = path.read_bytes() if entry["bytes"] else b""
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise BundleError(f"{path}: SHA-256 does not match gallery.json (file was modified); rebuild the gallery")
    emb = np.frombuffer(data, "<f4").reshape(entry["shape"]).astype(np.float32)
    if len(emb) != len(manifest["images"]):
        raise BundleError(f"{mpath}: {len(manifest['images'])} images but {len(emb)} embeddings")
    return Gallery(folder, manifest, emb)


@dataclass
class GalleryUpdate:
    gallery: Gallery
    added: int
    skipped: list[dict]  # [{"path", "reason"}] of this run


def list_images(folder: Path) -> list[str]:
    """Image files under `folder` (recursively, by suffix), as sorted relative POSIX paths."""
    if not folder.is_dir():
        raise DataError(f"{folder}: gallery folder not found (or not a folder)")
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def update_gallery(retriever, images_dir: str | Path, rebuild: bool = False) -> GalleryUpdate:
    """Embed the images of `images_dir` that the bundle's gallery does not hold yet and append them.

    `retriever`: an open Retriever (its bundle, encoder and input spec are used). Unreadable images
    are skipped and reported (and tried again next time). A gallery made from another folder or
    with another encoder is refused unless `rebuild`, which starts it afresh."""
    source = Path(images_dir).resolve()
    names = list_images(source)
    folder = retriever.bundle.root / GALLERY_DIR
    encoder = encoder_id(retriever.target)
    dim = int(retriever.bundle.manifest["output"]["dim"])
    gallery = None if rebuild else open_gallery(retriever.bundle.root)
    if gallery is not None and (gallery.manifest["encoder"] != encoder or gallery.source != source):
        enc = gallery.manifest["encoder"]
        was = f"{gallery.source} with the {enc['format']}/{enc['quantization']} encoder"
        raise DataError(
            f"{folder}: this gallery was made from {was}; pass --rebuild-gallery to replace it with {source}"
        )
    if gallery is None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / EMBEDDINGS).write_bytes(b"")
        atomic_write_json(folder / GALLERY_MANIFEST, _empty_manifest(source, encoder, dim))
        gallery = open_gallery(retriever.bundle.root)
    manifest = gallery.manifest
    known = set(manifest["images"])
    todo = [n for n in names if n not in known]
    hasher = hashlib.sha256((folder / EMBEDDINGS).read_bytes())
    earlier_skips = {s["path"]: s for s in manifest["skipped"]}  # tried again in this run
    skipped, rows = [], [gallery.embeddings]
    spec = retriever.bundle.input_spec
    with open(folder / EMBEDDINGS, "ab") as f:
        for start in progress(range(0, len(todo), BATCH), "embedding gallery", total=-(-len(todo) // BATCH)):
            batch, inputs = [], []
            for name in todo[start : start + BATCH]:
                try:
                    inputs.append(preprocess(source / name, spec))
                    batch.append(name)
                except DataError as e:
                    skipped.append({"path": name, "reason": str(e).removeprefix(f"{source / name}: ")})
            if batch:
                emb = retriever.encoder.embed(np.concatenate(inputs))
                data = np.ascontiguousarray(emb, "<f4").tobytes()
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                hasher.update(data)
                rows.append(emb)
                manifest["images"] += batch
            pending = [earlier_skips[n] for n in todo[start + BATCH :] if n in earlier_skips]
            count = len(manifest["images"])
            manifest["skipped"] = skipped + pending
            manifest["embeddings"] |= {"shape": [count, dim], "bytes": count * dim * 4, "sha256": hasher.hexdigest()}
            atomic_write_json(folder / GALLERY_MANIFEST, manifest)
    added = len(manifest["images"]) - len(known)
    return GalleryUpdate(Gallery(folder, manifest, np.concatenate(rows)), added, skipped)
