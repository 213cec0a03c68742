import json
import shutil

import numpy as np
import pytest
from PIL import Image

from ammkd.bundle.format import BundleReader
from ammkd.common.errors import BundleError
from ammkd.mobile_runtime.retriever import Retriever


@pytest.fixture
def bundle_copy(pipeline, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(pipeline["bundle"], dst)
    return dst


def test_missing_file_is_refused(bundle_copy):
    (bundle_copy / "index" / "class_vectors.f16.bin").unlink()
    with pytest.raises(BundleError, match=r"class_vectors.f16.bin: missing"):
        Retriever.open(bundle_copy)


def test_wrong_hash_is_refused(bundle_copy):
    p = bundle_copy / "image_encoder.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"image_encoder.onnx: SHA-256 does not match"):
        Retriever.open(bundle_copy)


def test_truncated_file_is_refused(bundle_copy):
    p = bundle_copy / "index" / "texts.json"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"texts.json: size .* \(truncated or replaced\)"):
        Retriever.open(bundle_copy)


def test_unknown_format_version_and_bad_manifest_are_refused(bundle_copy):
    mpath = bundle_copy / "manifest.json"
    manifest = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(BundleError, match="format_version 99 is not supported"):
        Retriever.open(bundle_copy)
    mpath.write_text(json.dumps({**manifest, "format_version": "1"}))  # not "'1' is not supported (reads 1)"
    with pytest.raises(BundleError, match="format_version must be an integer, got str '1'"):
        Retriever.open(bundle_copy)
    mpath.write_text(json.dumps({k: v for k, v in manifest.items() if k != "index"}))
    with pytest.raises(BundleError, match="invalid manifest"):
        Retriever.open(bundle_copy)
    mpath.write_text(mpath.read_text()[:50])
    with pytest.raises(BundleError, match="not valid JSON"):
        Retriever.open(bundle_copy)


def test_path_escaping_the_bundle_is_refused(bundle_copy):
    mpath = bundle_copy / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["index"]["texts"]["path"] = "../outside.json"
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(BundleError):
        Retriever.open(bundle_copy)


def test_search_returns_sorted_hits_with_timings(pipeline):
    r = Retriever.open(pipeline["bundle"])
    img = r.bundle.path(r.bundle.manifest["golden"][0]["image"])
    hits = r.top_texts(img, k=5)
    assert len(hits) == 5 and all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert hits[0].text == r.texts[hits[0].id]
    assert {"load", "preprocess", "encode", "search"} <= set(r.timings_ms)
    rgb = np.asarray(Image.open(img).convert("RGB"))  # a golden photo: odd, non-square
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert [h.id for h in r.top_texts(rgba, k=5)] == [h.id for h in hits]  # an RGBA buffer works the same


def test_index_shape_that_contradicts_the_manifest_is_refused(bundle_copy):
    mpath = bundle_copy / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["index"]["count"] += 1
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="do not match count"):
        Retriever.open(bundle_copy)


def test_index_vectors_must_be_float16_and_fit_their_bytes(bundle_copy):
    """What every reader decodes: float16 rows; a dtype or shape that contradicts `bytes` is a
    BundleError before the file is read, not a ValueError from numpy."""
    mpath = bundle_copy / "manifest.json"
    original = json.loads(mpath.read_text())
    manifest = json.loads(json.dumps(original))
    manifest["index"]["vectors"]["dtype"] = "float32"
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="index vectors are 'float32'; bundles ship float16"):
        Retriever.open(bundle_copy)
    manifest = json.loads(json.dumps(original))
    golden = manifest["golden"][0]["embedding"]
    golden["dtype"] = "float16"  # same shape, half the bytes the manifest lists
    mpath.write_text(json.dumps(manifest))
    reader = BundleReader.open(bundle_copy)
    with pytest.raises(
        BundleError, match=r"embedding_0\.f32\.bin: shape .* of float16 is \d+ bytes, the manifest says"
    ):
        reader.read_array(reader.manifest["golden"][0]["embedding"])


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("input", "size"), 100_000, "input/size: 100000 is greater than the maximum of 4096"),
        (("output", "dim"), 10**7, "output/dim"),
        (("index", "count"), 10**12, "index/count"),
        (("index", "vectors", "shape"), [1] * 9, "index/vectors/shape"),
        (("index", "vectors", "shape"), [2**40, 2**40], r"index/vectors/shape/\d: \d+ is greater than the maximum"),
    ],
)
def test_sizes_a_reader_would_allocate_from_are_bounded(bundle_copy, where, value, message):
    """A manifest cannot make a reader allocate without bound (input.size 100000 was a 30 GB tensor)."""
    mpath = bundle_copy / "manifest.json"
    manifest = json.loads(mpath.read_text())
    node = manifest
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"manifest.json: invalid manifest at {message}"):
        Retriever.open(bundle_copy)


def test_a_file_bigger_than_the_manifest_says_is_refused_before_reading(bundle_copy):
    p = bundle_copy / "index" / "texts.json"
    with open(p, "ab") as f:
        f.truncate(p.stat().st_size + (1 << 30))  # a sparse gigabyte: never read
    with pytest.raises(BundleError, match=r"texts.json: size \d+ bytes, manifest says \d+"):
        Retriever.open(bundle_copy)


def test_a_symlink_loop_inside_the_bundle_is_one_clear_error(bundle_copy):
    """Issue 20 item 12: a listed file that is a symlink loop is a BundleError naming it."""
    texts = bundle_copy / "index" / "texts.json"
    texts.unlink()
    (bundle_copy / "loop1").symlink_to("loop2")
    (bundle_copy / "loop2").symlink_to("loop1")
    texts.symlink_to("../loop1")
    with pytest.raises(BundleError, match=r"texts\.json: cannot be resolved \(symlink loop\)"):
        Retriever.open(bundle_copy)
