"""`ammkd serve` serves only what it can prove is the page's, the bundle's or the gallery's, and
treats gallery/gallery.json as untrusted input (no browser needed: a stand-in page folder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_DATA, http_get, serving

from ammkd.common.errors import BundleError
from ammkd.distill.data import load_split
from ammkd.mobile_runtime.gallery import update_gallery
from ammkd.mobile_runtime.retriever import Retriever
from ammkd.tools.serve import ORT_DIST, make_server


@pytest.fixture()
def page(tmp_path) -> Path:
    """A page folder with what make_server checks for (index.html, onnxruntime-web's dist)."""
    root = tmp_path / "page"
    (root / ORT_DIST).mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><script src=app.js></script>")
    return root


@pytest.fixture()
def galleried(pipeline, tmp_path) -> dict:
    """A copy of the test bundle with a 4-photo gallery, plus a private file beside the photos."""
    bundle = shutil.copytree(pipeline["bundle"], tmp_path / "bundle")
    photos = tmp_path / "photos"
    photos.mkdir()
    data = load_split(TINY_DATA, "val")
    for i in range(4):
        data.image(i).save(photos / f"{i}.png")
    gallery = update_gallery(Retriever.open(bundle), photos).gallery
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    return {"bundle": bundle, "photos": photos, "gallery": gallery, "secret": secret}


def _edit_gallery_json(bundle: Path, edit) -> Path:
    path = bundle / "gallery" / "gallery.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("name", ["../secret.txt", "/etc/passwd", "a/../../secret.txt", "", "x\\..\\y"])
def test_gallery_entries_outside_the_photo_folder_are_refused(galleried, page, name):
    def point_outside(m):
        m["images"][0] = name if name != "/etc/passwd" else str(galleried["secret"])

    path = _edit_gallery_json(galleried["bundle"], point_outside)
    with pytest.raises(BundleError, match="gallery.json.*not a relative path inside the photo folder"):
        make_server(galleried["bundle"], port=0, web_root=page)
    assert path.is_file()  # nothing deleted


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(images="0.png"), "'images' is missing or not a list"),
        (lambda m: m.pop("source_dir"), "'source_dir' is missing"),
        (lambda m: m["embeddings"].update(bytes="12"), "'embeddings.bytes' is not a non-negative integer"),
        (lambda m: m["embeddings"].update(shape=[4]), r"'embeddings.shape' is not \[rows, dim\]"),
        (lambda m: m.pop("embeddings"), "'embeddings' is missing"),
    ],
)
def test_damaged_gallery_json_is_one_clear_error(galleried, page, edit, message):
    _edit_gallery_json(galleried["bundle"], edit)
    with pytest.raises(BundleError, match=message):
        make_server(galleried["bundle"], port=0, web_root=page)


def test_a_photo_symlinked_out_of_the_folder_is_not_served(galleried, page):
    photo = galleried["photos"] / galleried["gallery"].images[1]
    photo.unlink()
    photo.symlink_to(galleried["secret"])
    with serving(galleried["bundle"], web_root=page) as url:
        assert http_get(url, "/photos/0")[0] == 200
        status, _, body = http_get(url, "/photos/1")
        assert status == 404 and b"private" not in body


def test_bundle_route_serves_only_listed_files_and_hides_the_photo_folder(galleried, page):
    bundle = galleried["bundle"]
    (bundle / "dropped.txt").write_text("not in the manifest")
    manifest = json.loads((bundle / "manifest.json").read_text())
    listed = manifest["index"]["texts"]["path"]
    with serving(bundle, web_root=page) as url:
        assert http_get(url, "/bundle/manifest.json")[0] == 200
        assert http_get(url, f"/bundle/{listed}")[0] == 200
        status, _, body = http_get(url, "/bundle/gallery/gallery.json")
        served = json.loads(body)
        assert status == 200 and "source_dir" not in served and served["images"] == galleried["gallery"].images
        assert str(galleried["photos"]).encode() not in body
        assert http_get(url, "/bundle/gallery/embeddings.f32.bin")[0] == 200
        for path in ("/bundle/dropped.txt", "/bundle/export_config.json"):
            assert http_get(url, path)[0] == 404, path


@pytest.mark.parametrize("index", ["%C2%B2", "9" * 5000, "-1", "+1", "1.0", "%EF%BC%91"])
def test_malformed_photo_numbers_are_404_not_a_dropped_connection(galleried, page, index):
    with serving(galleried["bundle"], web_root=page) as url:
        status, _, body = http_get(url, f"/photos/{index}")
        assert status == 404 and body.startswith(b"404")
        assert http_get(url, "/photos/0")[0] == 200  # the server is still there
