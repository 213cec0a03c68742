"""The bundle format: one home for its constants, its input spec, its schema, writing and reading.

A bundle is a folder whose single source of truth is `manifest.json`. Every other file is named
by the manifest (paths relative to the bundle folder) with its SHA-256 and byte size; numeric
arrays are raw little-endian row-major binaries so any language reads them in a few lines.
This module imports neither torch nor onnx: the runtime and the apps' test tools read it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ammkd.common.errors import BundleError
from ammkd.common.files import atomic_write_json, sha256_file

INPUT_NAME = "image"  # the image encoder's input: (B, 3, S, S) float32, preprocessed
OUTPUT_NAME = "embedding"  # its output: (B, D) float32, L2-normalised

FORMAT_NAME = "ammkd-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")

_DTYPES = {"float16": "<f2", "float32": "<f4", "int32": "<i4", "int64": "<i8", "uint8": "u1"}


@dataclass
class InputSpec:
    """How a photo becomes the encoder's input tensor; enough to reimplement in any language.

    The image is converted to RGB, resized so its shorter side is `size` (aspect kept) with
    `interpolation`, centre-cropped to `size`x`size`, scaled to `value_range` (uint8/255 for
    [0, 1]) and laid out NCHW float32. `mean`/`std` are applied inside the graph when
    `normalization_in_graph` is true (the default), otherwise by the caller.

    The geometry, exactly (S = `size`, a W x H image; IEEE-754 binary64 arithmetic):
    - an S x S image is used as it is;
    - otherwise `scale = S / min(W, H)`, then `NW = max(S, rhe(W * scale))` and
      `NH = max(S, rhe(H * scale))`, where rhe rounds to the nearest integer with ties to even
      (`resize_rounding = "half_even"`: Python's round(), Java's Math.rint; not int() truncation
      as torchvision's resize does, nor half-up); the image is resized to NW x NH unless that is
      its size;
    - the crop's top-left corner is `left = floor((NW - S) / 2)`, `top = floor((NH - S) / 2)`
      (`crop_offset = "floor"`: an odd margin leaves its extra pixel on the right / bottom; not
      torchvision's round((NW - S) / 2)), and the crop is S x S from there.
    Manifests written before these two fields existed mean the same rule (their defaults).
    """

    size: int
    resize: str = "shortest_side"  # resize the shorter side to `size`, keep the aspect ratio
    interpolation: str = "bicubic"  # PIL semantics (antialiased when downscaling)
    crop: str = "center"
    resize_rounding: str = "half_even"  # NW, NH: round half to even (see the docstring)
    crop_offset: str = "floor"  # left, top: floor((NW - S) / 2), floor((NH - S) / 2)
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    normalization_in_graph: bool = True
    layout: str = "NCHW"
    color: str = "RGB"
    dtype: str = "float32"
    name: str = "image"

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("value_range", "mean", "std"):
            if k in known:
                known[k] = tuple(float(v) for v in known[k])
        return cls(**known)

    def with_size(self, size: int) -> "InputSpec":
        return replace(self, size=size)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("value_range", "mean", "std"):
            d[k] = list(d[k])
        return d


@dataclass
class FileEntry:
    """A file of the bundle: relative path, SHA-256, size, and for arrays dtype + shape."""

    path: str
    sha256: str
    bytes: int
    dtype: str | None = None
    shape: list[int] | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def file_entry(bundle_dir: Path, rel: str, dtype: str | None = None, shape=None) -> FileEntry:
    """Describe an already-written file of the bundle."""
    p = Path(bundle_dir) / rel
    return FileEntry(rel, sha256_file(p), p.stat().st_size, dtype, list(shape) if shape is not None else None)


def write_array(bundle_dir: Path, rel: str, array: np.ndarray, dtype: str) -> FileEntry:
    """Write `array` as a raw little-endian row-major binary and return its entry."""
    arr = np.ascontiguousarray(array, dtype=_DTYPES[dtype])
    p = Path(bundle_dir) / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(arr.tobytes(order="C"))
    return file_entry(bundle_dir, rel, dtype, arr.shape)


def load_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate_manifest(manifest: dict, where: str = MANIFEST) -> None:
    """Raise BundleError naming the first schema violation."""
    import jsonschema

    try:
        jsonschema.validate(manifest, load_schema())
    except jsonschema.ValidationError as e:
        at = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise BundleError(f"{where}: invalid manifest at {at}: {e.message}") from None


def listed_files(node) -> list[dict]:
    """Every file entry of a manifest (at any depth: dicts with "path" and "sha256"), in order."""
    if isinstance(node, dict):
        own = [node] if isinstance(node.get("path"), str) and "sha256" in node else []
        return own + [e for v in node.values() for e in listed_files(v)]
    if isinstance(node, list):
        return [e for v in node for e in listed_files(v)]
    return []


def write_manifest(bundle_dir: Path, manifest: dict) -> Path:
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **manifest}
    validate_manifest(manifest, str(Path(bundle_dir) / MANIFEST))
    return atomic_write_json(Path(bundle_dir) / MANIFEST, manifest)


def _reason(e: BaseException) -> str:
    """An OS error in words: 'Permission denied', 'symlink loop', ..."""
    if isinstance(e, RuntimeError) or getattr(e, "errno", None) == errno.ELOOP:
        return "symlink loop"
    return getattr(e, "strerror", None) or str(e)


@dataclass
class BundleReader:
    """Reads a bundle folder; every file is hash-checked before its bytes are used."""

    root: Path
    manifest: dict = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path) -> "BundleReader":
        root = Path(root)
        mpath = root / MANIFEST
        if not root.is_dir():
            raise BundleError(f"{root}: not a bundle folder (it does not exist or is not a directory)")
        if not mpath.is_file():
            raise BundleError(f"{mpath}: missing; a bundle folder must contain {MANIFEST}")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{mpath}: not valid JSON ({e}); the file is truncated or corrupt") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise BundleError(f"{mpath}: not an {FORMAT_NAME} manifest")
        version = manifest.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError(f"{mpath}: format_version must be an integer, got {type(version).__name__} {version!r}")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{mpath}: format_version {version!r} is not supported by this ammkd "
                f"(it reads version {FORMAT_VERSION}); re-export the bundle or upgrade ammkd"
            )
        validate_manifest(manifest, str(mpath))
        index, out = manifest["index"], manifest["output"]
        if index["vectors"]["shape"] != [index["count"], index["dim"]] or index["dim"] != out["dim"]:
            raise BundleError(
                f"{mpath}: index vectors {index['vectors']['shape']} do not match count "
                f"{index['count']} x dim {index['dim']} (encoder output dim {out['dim']})"
            )
        if index["vectors"].get("dtype") != "float16":  # what every reader (Kotlin, the page) decodes
            raise BundleError(f"{mpath}: index vectors are {index['vectors'].get('dtype')!r}; bundles ship float16")
        return cls(root, manifest)

    def _resolve(self, entry: dict) -> Path:
        rel = entry["path"]
        try:
            p = (self.root / rel).resolve()
        except (RuntimeError, OSError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
            raise BundleError(f"{self.root / rel}: cannot be resolved ({_reason(e)})") from None
        if self.root.resolve() not in p.parents:
            raise BundleError(f"{self.root / MANIFEST}: file path {rel!r} points outside the bundle")
        if not p.is_file():
            raise BundleError(f"{self.root / rel}: missing from the bundle")
        return p

    def _verify(self, entry: dict, data: bytes) -> bytes:
        where = self.root / entry["path"]
        if len(data) != entry["bytes"]:
            raise BundleError(
                f"{where}: size {len(data)} bytes, manifest says {entry['bytes']} (truncated or replaced)"
            )
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BundleError(f"{where}: SHA-256 does not match the manifest (file was modified)")
        return data

    def _read(self, entry: dict) -> tuple[Path, bytes]:
        """A file's path and bytes, its size checked against the manifest before it is read (a
        file bigger than the manifest says is never loaded), then its SHA-256."""
        p = self._resolve(entry)
        where = self.root / entry["path"]
        try:
            size = p.stat().st_size
            if size != entry["bytes"]:
                raise BundleError(f"{where}: size {size} bytes, manifest says {entry['bytes']} (truncated or replaced)")
            data = p.read_bytes()
        except OSError as e:
            raise BundleError(f"{where}: cannot be read ({_reason(e)})") from None
        return p, self._verify(entry, data)

    def read_bytes(self, entry: dict) -> bytes:
        """A file's bytes, read once and checked (size, SHA-256) before they are returned."""
        return self._read(entry)[1]

    def path(self, entry: dict) -> Path:
        """Path of a file after checking it; for consumers that must open it by name themselves."""
        return self._read(entry)[0]

    def read_json(self, entry: dict) -> Any:
        data = self.read_bytes(entry)
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{self.root / entry['path']}: not UTF-8 JSON ({e})") from None

    def read_array(self, entry: dict) -> np.ndarray:
        """A raw binary entry as an array of its manifest dtype and shape; its `bytes` must be the
        shape's count times the dtype's size, checked before the file is read."""
        dtype = np.dtype(_DTYPES[entry["dtype"]])
        expected = math.prod(entry["shape"])  # Python ints: no overflow
        if expected * dtype.itemsize != entry["bytes"]:
            raise BundleError(
                f"{self.root / entry['path']}: shape {entry['shape']} of {entry['dtype']} is "
                f"{expected * dtype.itemsize} bytes, the manifest says {entry['bytes']}"
            )
        return np.frombuffer(self.read_bytes(entry), dtype=dtype).reshape(entry["shape"])

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.manifest["input"])

    def target(self, role: str = "image_encoder", fmt: str | None = None, quantization: str | None = None) -> dict:
        """The manifest entry of the first target with this role (and format and quantization,
        if given; the unquantized one comes first)."""
        for t in self.manifest["targets"]:
            if t["role"] == role and fmt in (None, t["format"]) and quantization in (None, t["quantization"]):
                return t
        have = ", ".join(f"{t['role']}/{t['format']}" for t in self.manifest["targets"]) or "none"
        raise BundleError(f"{self.root / MANIFEST}: no {role} target in format {fmt or 'any'} (has: {have})")
