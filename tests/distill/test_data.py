import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ammkd.common.errors import DataError
from ammkd.distill.data import image_tensor, load_split
from ammkd.export.bundle_format import InputSpec
from ammkd.mobile_runtime.preprocess import load_rgb


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
