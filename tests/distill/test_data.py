import csv
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ammkd.bundle.format import InputSpec
from ammkd.bundle.preprocess import load_rgb
from ammkd.common.errors import DataError
from ammkd.distill.data import load_split, without_split
from ammkd.distill.image_tensors import image_tensor


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title"])
        w.writerows(rows)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8), "RGB")
    rgb.save(tmp_path / "rgb.jpg")
    rgb.convert("L").save(tmp_path / "gray.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "rgba.png")
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "palette.png", transparency=0)
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray((np.arange(40 * 60).reshape(40, 60) * 20).astype(np.uint16)).save(tmp_path / "deep.png")
    (tmp_path / "corrupt.jpg").write_bytes(b"this is not an image")
    data = (tmp_path / "rgb.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return tmp_path


@pytest.mark.parametrize("name", ["rgb.jpg", "gray.png", "rgba.png", "palette.png", "cmyk.jpg", "deep.png"])
def test_every_mode_decodes_to_rgb(image_folder, name):
    img = load_rgb(image_folder / name)
    assert img.mode == "RGB" and img.size == (60, 40)
    assert np.asarray(img).std() > 0  # not a blank conversion


@pytest.mark.parametrize(
    "name,reason",
    [("corrupt.jpg", "not a readable image"), ("truncated.jpg", "corrupt or truncated"), ("missing.jpg", "not found")],
)
def test_bad_images_name_the_file(image_folder, name, reason):
    with pytest.raises(DataError, match=reason) as e:
        load_rgb(image_folder / name)
    assert name in str(e.value)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost none of its pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_misleading_cases_get_the_right_message(image_folder, monkeypatch):
    (image_folder / "folder.jpg").mkdir()
    loop = image_folder / "loop.jpg"
    loop.symlink_to(loop.name)  # a link to itself
    (image_folder / "200mpx.png").write_bytes(_png_header(14_143, 14_143))  # over Pillow's 179 Mpx, under 256
    (image_folder / "300mpx.png").write_bytes(_png_header(17_321, 17_321))
    cases = {
        "folder.jpg": "is a folder, not an image file",
        "loop.jpg": "a symbolic link that is broken or loops",
        "200mpx.png": "corrupt or truncated",  # within the documented limit: what is wrong is the data
        "300mpx.png": "17321x17321 exceeds 256000000 pixels",
    }
    for name, reason in cases.items():
        with pytest.raises(DataError, match=reason):
            load_rgb(image_folder / name)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("ammkd.bundle.preprocess.Image.open", denied)  # root ignores chmod 000
    with pytest.raises(DataError, match=r"rgb.jpg: cannot be read \(permission denied\)"):
        load_rgb(image_folder / "rgb.jpg")


def test_csv_dataset_groups_captions_and_resolves_relative_paths(image_folder):
    spec = write_csv(
        image_folder / "data.csv", [("rgb.jpg", "a photo"), ("rgb.jpg", "another caption"), ("gray.png", "a grey one")]
    )
    data = load_split(f"csv:{spec}:filepath:title:all", "train")
    assert len(data) == 2 and data.captions[0] == ["a photo", "another caption"]
    arr, kept, skipped = image_tensor(data, InputSpec(size=32))
    assert arr.shape == (2, 3, 32, 32) and arr.dtype == np.uint8 and not skipped


def test_bad_image_in_dataset_fails_or_is_skipped(image_folder):
    spec = write_csv(image_folder / "bad.csv", [("rgb.jpg", "fine"), ("corrupt.jpg", "broken")])
    data = load_split(f"csv:{spec}:filepath:title:all", "train")
    with pytest.raises(DataError, match="corrupt.jpg"):
        image_tensor(data, InputSpec(size=16))
    arr, kept, skipped = image_tensor(data, InputSpec(size=16), skip_bad=True)
    assert len(arr) == len(kept) == 1 and "corrupt.jpg" in skipped[0]


def test_empty_caption_is_refused_with_line_number(image_folder):
    spec = write_csv(image_folder / "empty.csv", [("rgb.jpg", "fine"), ("gray.png", "   ")])
    with pytest.raises(DataError, match=r"empty.csv:3: empty caption"):
        load_split(f"csv:{spec}:filepath:title:all", "train")


@pytest.mark.parametrize(
    "spec,message",
    [
        ("imagenet:/data", "unknown data spec"),
        ("synthetic:abc", "must be an integer"),
        ("csv:/nonexistent/file.csv", "captions file not found"),
        ("flickr8k:/nonexistent", "Flickr8k folder not found"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(DataError, match=message):
        load_split(spec, "train")


def test_flickr8k_layout(tmp_path):
    root = tmp_path / "f8k"
    (root / "images").mkdir(parents=True)
    (root / "splits").mkdir()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(root / "images" / "a.jpg")
    Image.new("RGB", (30, 20), (10, 200, 10)).save(root / "images" / "b.jpg")
    (root / "captions.csv").write_text("image,caption\na.jpg,red\na.jpg,a red one\nb.jpg,green\n")
    (root / "splits" / "train.txt").write_text("a.jpg\n")
    (root / "splits" / "dev.txt").write_text("b.jpg\n")
    train = load_split(f"flickr8k:{root}", "train")
    assert train.captions == [["red", "a red one"]]
    assert load_split(f"flickr8k:{root}", "val").captions == [["green"]]  # val falls back to dev
    assert load_split(f"flickr8k:{root}:dev", "train").captions == [["green"]]  # a split in the spec wins


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 40), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(tmp_path / "rotated.jpg").size == (40, 60)


def test_decompression_bomb_limit_names_the_file(image_folder, monkeypatch):
    from ammkd.bundle import preprocess

    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 1000)  # the 60x40 fixture exceeds it
    with pytest.raises(DataError, match=r"rgb.jpg: 60x40 exceeds 1000 pixels"):
        load_rgb(image_folder / "rgb.jpg")


def _many_images(root: Path, n: int, bad: set[int] = frozenset()) -> list[tuple[str, str]]:
    """n images of mixed sizes and modes (i in `bad`: corrupt), one caption each."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        name = f"img{i:03d}.png"
        if i in bad:
            (root / name).write_bytes(b"\x89PNG broken")
        else:
            w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
            img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")
            img.convert(["RGB", "L", "RGBA", "P"][i % 4]).save(root / name)
        rows.append((name, f"caption {i}"))
    return rows


def test_parallel_decoding_of_mixed_sizes_and_modes_with_skip_list_and_cache(tmp_path, monkeypatch):
    from ammkd.distill import image_tensors as tensors_module

    spec = write_csv(tmp_path / "many.csv", _many_images(tmp_path, 150, bad={7, 99}))
    data = load_split(f"csv:{spec}:all", "train")
    with pytest.raises(DataError, match=r"img007.png: not a readable image.*--skip-bad"):
        image_tensor(data, InputSpec(size=24))  # decoded on every core; the error names the file
    arr, readable, skipped = image_tensor(data, InputSpec(size=24), skip_bad=True)
    assert arr.shape == (148, 3, 24, 24) and len(readable) == 148 and readable.captions[7] == ["caption 8"]
    assert len(skipped) == 2 and "img007.png" in skipped[0] and "img099.png" in skipped[1]
    monkeypatch.setattr(tensors_module, "_decode_all", lambda *a: pytest.fail("decoded twice"))
    again, _, _ = image_tensor(data, InputSpec(size=24), skip_bad=True)  # from the disk cache
    assert np.array_equal(again, arr)


@pytest.mark.timeout(120)
def test_a_dying_decode_worker_fails_the_run_instead_of_hanging(tmp_path, monkeypatch):
    import os

    from ammkd.distill import image_tensors as tensors_module

    spec = write_csv(tmp_path / "many.csv", _many_images(tmp_path, 130))
    monkeypatch.setattr(tensors_module, "to_uint8_chw", lambda *a: os._exit(3))  # inherited by forked workers
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(DataError, match="worker died"):
        image_tensor(load_split(f"csv:{spec}:all", "train"), InputSpec(size=16))


def test_coco_captions_format(image_folder):
    import json

    doc = {
        "images": [{"id": 1, "file_name": "rgb.jpg"}, {"id": 2, "file_name": "gray.png"}, {"id": 3, "file_name": "x"}],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "a noisy photo"},
            {"id": 11, "image_id": 2, "caption": "a grey photo "},
            {"id": 12, "image_id": 1, "caption": "random pixels"},
        ],
    }
    (image_folder / "captions.json").write_text(json.dumps(doc))
    data = load_split(f"coco:{image_folder / 'captions.json'}:{image_folder}:all", "train")
    assert data.captions == [["a noisy photo", "random pixels"], ["a grey photo"]]  # image 3: no caption, dropped
    assert data.sources[0] == str(image_folder / "rgb.jpg")
    doc["annotations"].append({"id": 13, "image_id": 9, "caption": "orphan"})
    (image_folder / "captions.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="unknown image_id 9"):
        load_split(f"coco:{image_folder / 'captions.json'}:{image_folder}:all", "train")


def test_karpathy_format_splits_and_restval(image_folder):
    import json

    def entry(name, split, *caps):
        return {"filename": name, "split": split, "sentences": [{"raw": c} for c in caps]}

    doc = {
        "images": [
            entry("rgb.jpg", "train", "one", "two"),
            entry("gray.png", "restval", "three"),
            entry("rgba.png", "val", "four"),
            entry("cmyk.jpg", "test", "five"),
        ]
    }
    path = image_folder / "dataset_flickr30k.json"
    path.write_text(json.dumps(doc))
    spec = f"karpathy:{path}:{image_folder}"
    assert load_split(spec, "train").captions == [["one", "two"], ["three"]]  # train includes restval
    assert load_split(spec, "val").captions == [["four"]]
    assert load_split(f"{spec}:test", "train").captions == [["five"]]
    path.write_text(json.dumps({"images": [{"filename": "rgb.jpg", "split": "train"}]}))
    with pytest.raises(DataError, match="not in Karpathy split format"):
        load_split(spec, "train")


@pytest.mark.parametrize(
    "spec,message",
    [
        ("coco:/nonexistent.json", "needs an annotation file and an image folder"),
        ("coco:/nonexistent.json:/nonexistent", "image folder not found"),
        ("karpathy:/nonexistent.json:/tmp", "annotation file not found"),
    ],
)
def test_bad_json_specs(spec, message):
    with pytest.raises(DataError, match=message):
        load_split(spec, "train")


def test_open_clip_tab_separated_csv(image_folder):
    (image_folder / "train.csv").write_text("filepath\ttitle\nrgb.jpg\ta photo, with a comma\n")
    data = load_split(f"csv:{image_folder / 'train.csv'}:all", "train")
    assert data.captions == [["a photo, with a comma"]] and data.sources == [str(image_folder / "rgb.jpg")]


@pytest.mark.parametrize(
    ("spec", "base"),
    [
        ("synthetic:300:train", "synthetic:300"),
        ("synthetic:300", "synthetic:300"),
        ("synthetic", "synthetic"),
        ("flickr8k:/data/f8k:train", "flickr8k:/data/f8k"),
        ("flickr8k:/data/f8k", "flickr8k:/data/f8k"),
        ("karpathy:k.json:imgs:train", "karpathy:k.json:imgs"),
        ("csv:c.csv:img:cap", "csv:c.csv:img:cap"),
        ("coco:c.json:imgs:all", "coco:c.json:imgs:all"),
    ],
)
def test_without_split_keeps_the_dataset_and_drops_a_named_split(spec, base):
    assert without_split(spec) == base
