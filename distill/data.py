"""Image-caption datasets behind the DATA spec string (their decoded tensors: image_tensors.py).

Specs (docs/design.md §2.1): `synthetic[:N]`, `flickr8k:DIR[:split]`, `csv:FILE[:img_col:cap_col][:all]`,
`coco:CAPTIONS_JSON:IMAGES_DIR[:all]`, `karpathy:JSON:IMAGES_DIR[:split]`.
A stage asks for a split ("train" or "val"); a split named in the spec overrides it, so
`ammkd eval --data flickr8k:DIR:dev` evaluates on dev. Formats without splits (CSV, a COCO
captions file) split 90/10 by image-name hash, or give every image with `:all`.
Each image keeps all its captions; evaluation uses all of them (5-captions-per-image Recall@K).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ammkd.bundle.preprocess import load_rgb
from ammkd.common.errors import DataError
from ammkd.distill import synthetic

DEFAULT_SYNTHETIC_IMAGES = 4000
SYNTHETIC_SEED = 0
SYNTHETIC_NATIVE_SIZE = 64  # pixels; rendered at this size, then preprocessed like any photo
SPLIT_ALIASES = {"val": ("val", "dev"), "dev": ("dev", "val"), "train": ("train",), "test": ("test",)}


@dataclass
class ImageTextData:
    """One split of an image-caption dataset. Images decode lazily; captions are in memory.

    `captions[i]` are all captions of image `i` (Flickr-style: several per image).
    """

    name: str
    captions: list[list[str]]
    sources: list[str]  # file path, or a synthetic "seed/index" id: what error messages name
    loader: Callable[[int], Image.Image]
    class_prompts: list[str] = field(default_factory=list)
    cache_key: str | None = None  # synthetic: decoded tensors are cached on disk under this key
    from_files: bool = False  # sources are image files, decodable in worker processes

    @property
    def split(self) -> str:
        """The split these images are (train, val, test, ... or `all`): the name's last field."""
        return self.name.rsplit(":", 1)[-1]

    def __len__(self) -> int:
        return len(self.captions)

    def image(self, i: int) -> Image.Image:
        return self.loader(i)

    def texts(self) -> tuple[list[str], list[list[int]]]:
        """Unique caption texts (first-seen order) and, per image, the ids of its captions."""
        ids: dict[str, int] = {}
        per_image = [[ids.setdefault(c, len(ids)) for c in caps] for caps in self.captions]
        return list(ids), per_image

    def flat_captions(self) -> tuple[list[str], np.ndarray]:
        """Every caption as a query (duplicates kept) and the image index of each: (T,), (T,)."""
        texts = [c for caps in self.captions for c in caps]
        owner = np.repeat(np.arange(len(self.captions)), [len(c) for c in self.captions])
        return texts, owner


def _check_captions(captions: list[list[str]], sources: list[str], where: str) -> None:
    for src, caps in zip(sources, captions):
        if not caps:
            raise DataError(f"{where}: image {src} has no caption")
        for c in caps:
            if not c or not c.strip():
                raise DataError(f"{where}: empty caption for image {src}")


def _synthetic(arg: str | None, split: str) -> ImageTextData:
    try:
        n = int(arg) if arg else DEFAULT_SYNTHETIC_IMAGES
    except ValueError:
        raise DataError(f"synthetic:{arg}: the image count must be an integer") from None
    if n < 20:
        raise DataError(f"synthetic:{n}: need at least 20 images (train/val/test)")
    if split not in synthetic.SPLITS:
        raise DataError(f"synthetic: unknown split {split!r} (use train, val or test)")
    idx = list(synthetic.split_range(n, split))
    return ImageTextData(
        name=f"synthetic:{n}:{split}",
        captions=[synthetic.describe(SYNTHETIC_SEED, i)[2] for i in idx],
        sources=[f"synthetic/{SYNTHETIC_SEED}/{i}" for i in idx],
        loader=lambda j: synthetic.render(SYNTHETIC_SEED, idx[j], size=SYNTHETIC_NATIVE_SIZE)[0],
        class_prompts=synthetic.class_prompts(),
        cache_key=f"synthetic-v{synthetic.VERSION}-s{SYNTHETIC_SEED}-{idx[0]}-{idx[-1] + 1}" if idx else None,
    )


def _read_table(path: Path, img_col: str, cap_col: str) -> dict[str, list[str]]:
    """Rows of a CSV/TSV grouped by image path (resolved against the file): {path: captions}."""
    if not path.is_file():
        raise DataError(f"{path}: captions file not found")
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline()
    # open_clip's convention is tab-separated whatever the extension; plain CSV is comma-separated.
    delimiter = "\t" if "\t" in header or path.suffix.lower() in (".tsv", ".tab") else ","
    grouped: dict[str, list[str]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            missing = {img_col, cap_col} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                img, cap = (row.get(img_col) or "").strip(), (row.get(cap_col) or "")
                if not img:
                    raise DataError(f"{path}:{line}: empty image path")
                if not cap.strip():
                    raise DataError(f"{path}:{line}: empty caption for image {img}")
                grouped.setdefault(str((path.parent / img)), []).append(cap.strip())
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    if not grouped:
        raise DataError(f"{path}: no rows")
    return grouped


def _from_files(name: str, grouped: dict[str, list[str]]) -> ImageTextData:
    if not grouped:
        raise DataError(f"{name}: no images in this split")
    paths = list(grouped)
    return ImageTextData(name, [grouped[p] for p in paths], paths, lambda j: load_rgb(paths[j]), from_files=True)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid UTF-8 JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"{path}: expected a JSON object with an 'images' list")
    return doc


def _images_dir(args: list[str], kind: str) -> tuple[Path, Path]:
    if len(args) < 2 or not args[0] or not args[1]:
        raise DataError(f"{kind}: needs an annotation file and an image folder, e.g. {kind}:captions.json:images/")
    images = Path(args[1])
    if not images.is_dir():
        raise DataError(f"{images}: image folder not found")
    return Path(args[0]), images


def _coco(args: list[str], split: str, whole: bool) -> ImageTextData:
    """COCO captions: {"images": [{id, file_name}], "annotations": [{image_id, caption}]}."""
    path, images = _images_dir(args, "coco")
    doc = _read_json(path)
    try:
        names = {img["id"]: img["file_name"] for img in doc["images"]}
        grouped: dict[str, list[str]] = {str(images / n): [] for n in names.values()}
        for a in doc.get("annotations", []):
            if a["image_id"] not in names:
                raise DataError(f"{path}: annotation {a.get('id')} names unknown image_id {a['image_id']}")
            if not str(a["caption"]).strip():
                raise DataError(f"{path}: empty caption for image {names[a['image_id']]}")
            grouped[str(images / names[a["image_id"]])].append(str(a["caption"]).strip())
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not in COCO captions format (missing {e})") from None
    grouped = {p: c for p, c in grouped.items() if c}  # images without captions are not retrievable
    if not whole:
        keep = set(_hash_split(list(grouped), split))
        grouped = {p: c for p, c in grouped.items() if p in keep}
    return _from_files(f"coco:{path}:{'all' if whole else split}", grouped)


def _karpathy(args: list[str], split: str) -> ImageTextData:
    """Karpathy splits (dataset_flickr30k.json, dataset_coco.json): per image filename, optional
    filepath, split (train/restval/val/test) and sentences[].raw. `train` includes `restval`."""
    path, images = _images_dir(args, "karpathy")
    doc = _read_json(path)
    wanted = {"train": {"train", "restval"}, "val": {"val"}, "dev": {"val"}, "test": {"test"}}.get(split, {split})
    grouped: dict[str, list[str]] = {}
    try:
        for img in doc["images"]:
            if img["split"] not in wanted:
                continue
            file = images / img.get("filepath", "") / img["filename"]
            caps = [str(s["raw"]).strip() for s in img["sentences"]]
            if not caps or not all(caps):
                raise DataError(f"{path}: image {img['filename']} has an empty or missing caption")
            grouped[str(file)] = caps
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not in Karpathy split format (missing {e})") from None
    return _from_files(f"karpathy:{path}:{split}", grouped)


def _hash_split(paths: list[str], split: str) -> list[str]:
    """A deterministic 90/10 train/val split by path hash, for datasets without split files."""

    def is_val(p: str) -> bool:
        return hashlib.sha1(Path(p).name.encode()).digest()[0] < 26  # ~10%

    if split not in ("train", "val", "dev"):
        raise DataError(f"unknown split {split!r} for a dataset without split files (use train or val)")
    return [p for p in paths if is_val(p) == (split != "train")]


def _csv(args: list[str], split: str, whole: bool) -> ImageTextData:
    """A CSV has no split files: rows split 90/10 by image-name hash, or all rows with `:all`."""
    if not args or not args[0]:
        raise DataError("csv: needs a file, e.g. csv:data/train.csv[:img_col:cap_col]")
    if len(args) not in (1, 3):
        raise DataError(f"csv:{':'.join(args)}: give both column names (csv:FILE:img_col:cap_col) or neither")
    path = Path(args[0])
    img_col, cap_col = (args[1], args[2]) if len(args) == 3 else ("filepath", "title")
    grouped = _read_table(path, img_col, cap_col)
    if not whole:
        keep = set(_hash_split(list(grouped), split))
        grouped = {p: c for p, c in grouped.items() if p in keep}
    return _from_files(f"csv:{path}:{'all' if whole else split}", grouped)


def _flickr8k(args: list[str], split: str) -> ImageTextData:
    if not args or not args[0]:
        raise DataError("flickr8k: needs a folder, e.g. flickr8k:../shared/data/flickr8k[:train]")
    root = Path(args[0])
    if not root.is_dir():
        raise DataError(f"{root}: Flickr8k folder not found")
    split_file = next(
        (
            root / "splits" / f"{s}.txt"
            for s in SPLIT_ALIASES.get(split, (split,))
            if (root / "splits" / f"{s}.txt").is_file()
        ),
        None,
    )
    if split_file is None:
        raise DataError(f"{root / 'splits'}: no split file for {split!r}")
    names = [n.strip() for n in split_file.read_text(encoding="utf-8").splitlines() if n.strip()]
    table = _read_table(root / "captions.csv", "image", "caption")
    grouped = {}
    for n in names:
        key = str(root / n)
        if key not in table:
            raise DataError(f"{split_file}: image {n} has no caption in {root / 'captions.csv'}")
        grouped[str(root / "images" / n)] = table[key]
    return _from_files(f"flickr8k:{root}:{split}", grouped)


def without_split(spec: str) -> str:
    """The DATA spec with any split it names removed (flickr8k:DIR:train -> flickr8k:DIR), so
    that `load_split(without_split(spec), s)` gives split s of the same dataset."""
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    named = {"synthetic": 1, "flickr8k": 1, "karpathy": 2}.get(kind)  # where a split name sits
    if named is not None and len(parts) > named:
        return ":".join([kind, *parts[:named]])
    return spec


def load_split(spec: str, split: str) -> ImageTextData:
    """Parse a DATA spec and load `split` of it (a split named in the spec wins)."""
    kind, _, rest = spec.partition(":")
    if kind == "synthetic":
        parts = rest.split(":") if rest else []
        if len(parts) > 1:
            split = parts[1]
        return _synthetic(parts[0] if parts else None, split)
    if kind == "csv":
        parts = rest.split(":")
        whole = len(parts) > 1 and parts[-1] == "all"
        if whole:
            parts.pop()
        return _csv(parts, split, whole)
    if kind == "flickr8k":
        parts = rest.split(":")
        if len(parts) > 1:
            split = parts[1]
        return _flickr8k(parts, split)
    if kind == "coco":
        parts = rest.split(":")
        whole = len(parts) > 2 and parts[2] == "all"
        if len(parts) > 3 or (len(parts) == 3 and not whole):
            raise DataError(f"{spec}: use coco:CAPTIONS_JSON:IMAGES_DIR[:all]")
        return _coco(parts, split, whole)
    if kind == "karpathy":
        parts = rest.split(":")
        if len(parts) > 2:
            split = parts[2]
        return _karpathy(parts, split)
    raise DataError(
        f"unknown data spec {spec!r}: use synthetic[:N], flickr8k:DIR[:split], csv:FILE[:img_col:cap_col], "
        "coco:CAPTIONS_JSON:IMAGES_DIR or karpathy:JSON:IMAGES_DIR[:split]"
    )
