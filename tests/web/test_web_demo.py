"""The browser demo (web_demo/) served by `ammkd serve`, driven in headless Chromium.

The page runs the bundle's ONNX encoder with onnxruntime-web (WASM) on the bundle's golden input
tensor; its embedding and top-k must agree with the Python runtime. Needs Node, Chromium and the
page's packages: `apt-get install chromium` and `npm ci --prefix web_demo` (CI does both).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, http_get, run_cli, save_figures, serving

from ammkd.bundle.format import BundleReader
from ammkd.common.errors import ConfigError
from ammkd.tools.serve import WEB_DEMO, make_server

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DRIVER = WEB_DEMO / "tests" / "drive.mjs"
ENABLE = "to run it: apt-get install chromium && npm ci --prefix web_demo"


def _need_ort() -> None:
    if not (WEB_DEMO / "node_modules" / "onnxruntime-web" / "dist").is_dir():
        pytest.skip(f"web_demo/node_modules/onnxruntime-web is missing; {ENABLE}")


def _need_browser() -> None:
    _need_ort()
    if shutil.which("node") is None:
        pytest.skip(f"node is not installed; install Node 20, then {ENABLE}")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing; {ENABLE}")
    if not (WEB_DEMO / "node_modules" / "playwright-core").is_dir():
        pytest.skip(f"web_demo/node_modules/playwright-core is missing; {ENABLE}")


def drive(url: str, *args: str) -> dict:
    """Open the page in headless Chromium (web_demo/tests/drive.mjs) and return its JSON report."""
    proc = subprocess.run(
        ["node", str(DRIVER), url, "--chromium", CHROMIUM, *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=WEB_DEMO,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "driverError" not in report, report["driverError"]
    assert not report["pageErrors"], report["pageErrors"]
    return report


# The page's preprocessing of a golden PNG (the browser's resampler, not Pillow's) against the golden input.
GOLDEN_IMAGE_MEAN_DIFF = 1 / 255  # measured: 0.6e-3 and 1.4e-3 (torchvision's geometry: 2.5e-3 and 8.6e-3)
GOLDEN_IMAGE_COSINE = 0.99


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _check_golden(report: dict, r, bound: float = 0.999) -> None:
    """The page's embedding and top-k for each golden input it ran vs the Python runtime's."""
    golden = r.bundle.manifest["golden"]
    assert len(report["golden"]) == len(golden) > 0
    for i, page in enumerate(report["golden"]):
        x = r.bundle.read_array(golden[i]["input"])
        expected = r.search_embedding(r.encoder.embed(x), k=5)
        assert [h["id"] for h in page["topk"]] == [h.id for h in expected]
        assert [h["id"] for h in page["topk"]] == golden[i]["topk_ids"]
        np.testing.assert_allclose([h["score"] for h in page["topk"]], [h.score for h in expected], atol=1e-4)
        cos = _cosine(page["embedding"], r.bundle.read_array(golden[i]["embedding"]))
        assert cos >= bound, f"golden {i}: cosine {cos:.6f} to the PyTorch embedding"
        assert set(page["timings"]) >= {"load", "encode", "search"}


def _check_golden_images(report: dict, r) -> None:
    """Issue 20 item 15: each golden PNG through the page's own decode, resize and centre crop. The
    geometry is Python's exactly; the browser's resampler is not Pillow's, so the tensor is close
    to the golden input (mean |diff| GOLDEN_IMAGE_MEAN_DIFF), and closer than the crop of any other
    rounding rule (torchvision's and the like, tests/geometry_cases.py) is to it: the page crops
    where the manifest says."""
    from geometry_cases import alternative_plans

    from ammkd.bundle.preprocess import _INTERPOLATION, load_rgb, resize_plan, uint8_to_input

    spec, s = r.bundle.input_spec, r.bundle.input_spec.size
    golden = r.bundle.manifest["golden"]
    assert len(report["goldenImages"]) == len(golden)
    for g, page in zip(golden, report["goldenImages"]):
        img = load_rgb(r.bundle.path(g["image"]))
        assert (page["width"], page["height"]) == img.size
        plan = resize_plan(img.width, img.height, spec)
        assert [page["plan"][k] for k in ("nw", "nh", "left", "top")] == list(plan)
        want = r.bundle.read_array(g["input"]).reshape(-1)
        got = np.asarray(page["tensor"], np.float32)
        diff = float(np.abs(got - want).mean())
        others = {}
        for name, (nw, nh, left, top) in alternative_plans(img.width, img.height, s).items():
            crop = img.resize((nw, nh), _INTERPOLATION[spec.interpolation]).crop((left, top, left + s, top + s))
            other = uint8_to_input(np.asarray(crop, np.uint8).transpose(2, 0, 1), spec).reshape(-1)
            others[name] = float(np.abs(got - other).mean())
        print(f"{g['image']['path']} {img.size}: page vs golden input {diff:.5f}, vs other rules {others}")
        assert diff <= GOLDEN_IMAGE_MEAN_DIFF, (g["image"]["path"], diff)
        assert all(diff < d for d in others.values()), (g["image"]["path"], diff, others)
        cos = _cosine(page["embedding"], r.bundle.read_array(g["embedding"]))
        print(f"{g['image']['path']}: page's embedding of the PNG vs the golden embedding: cosine {cos:.6f}")
        assert cos >= GOLDEN_IMAGE_COSINE, f"{g['image']['path']}: cosine {cos:.6f} to the golden embedding"


def test_page_matches_python_runtime(pipeline):
    _need_browser()
    from ammkd.mobile_runtime.retriever import Retriever

    bundle = pipeline["bundle"]
    r = Retriever.open(bundle)
    image = r.bundle.root / r.bundle.manifest["golden"][0]["image"]["path"]
    with serving(bundle) as url:
        report = drive(
            url + "/",
            "--golden",
            "0",
            "--golden",
            "1",
            "--golden-image",
            "0",
            "--golden-image",
            "1",
            "--upload",
            str(image),
        )
    state = report["state"]
    assert state["ready"] and state["error"] is None, state
    assert state["ep"] == "wasm"  # the tests' Chromium runs with its GPU disabled
    assert state["scan"] == "wasm-simd" and state["scanNote"] == ""  # the index scan in WebAssembly SIMD
    assert state["scanKernel"] == "relaxed-madd"  # Chromium has relaxed SIMD: fused multiply-adds
    assert [g["scan"] for g in report["golden"]] == ["wasm-simd", "wasm-simd"]
    assert report["crossOriginIsolated"] is True  # COOP/COEP let the WASM runtime use threads
    _check_golden(report, r)
    _check_golden_images(report, r)
    # the golden image through the file input: the canvas preprocessing _check_golden_images compared
    # with the golden input (the browser's resampler, not Pillow's: close, not equal to Python's
    # ranking of the PNG), then the encoder, the search and the shown texts
    (upload,) = report["uploads"]
    assert upload["message"] == ""
    assert upload["results"] == [f"{h['score']:.4f}{h['text']}" for h in report["goldenImages"][0]["topk"]]
    assert "preprocess" in upload["timings"] and "encode" in upload["timings"]


def test_page_geometry_is_the_python_runtimes(pipeline, tmp_path):
    """Issue 20 item 15: preprocess.js's resizePlan equals resize_plan on a grid with exact halves
    and on photo sizes, and bundle.js reads a manifest without the geometry fields as the same rule
    and refuses values it does not implement (web_demo/tests/geometry_check.mjs, in Node)."""
    if shutil.which("node") is None:
        pytest.skip(f"node is not installed; install Node 20, then {ENABLE}")
    from geometry_cases import geometry_plans

    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps(geometry_plans()))
    proc = subprocess.run(
        ["node", str(WEB_DEMO / "tests" / "geometry_check.mjs"), str(plans), str(pipeline["bundle"] / "manifest.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["checked"] == len(json.loads(plans.read_text())) and report["mismatches"] == []
    m = report["manifests"]
    assert m["exported"] == "ok" and m["absent"] == "ok"
    assert "unsupported input resize_rounding=half_up" in m["halfUp"]
    assert "crop_offset=round" in m["roundOffset"]


def _exact_topk(bits: np.ndarray, query, k: int) -> list[int]:
    """search.js's JS scan in NumPy: float16 rows times the float32 query summed in float64, rounded
    to float32, the k best with ties towards the lower id."""
    q = np.asarray(query, np.float32).astype(np.float64)
    scores = (bits.view(np.float16).astype(np.float64) @ q).astype(np.float32)
    return [int(i) for i in np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))[:k]]


def _with_ties(pipeline, folder: Path) -> tuple[Path, np.ndarray, dict]:
    """A copy of the test bundle whose index has two exact copies of golden 0's best row (one at a
    lower id, one at a higher) and a near-copy of its second row, one float16 step off in the
    dimension the query weighs least -> (bundle, index bits (N, D) uint16, {name: id})."""
    bundle = shutil.copytree(pipeline["bundle"], folder)
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["index"]["vectors"]
    bits = np.fromfile(bundle / entry["path"], "<u2").reshape(entry["shape"])
    best, second = manifest["golden"][0]["topk_ids"][:2]
    free = [i for i in range(len(bits)) if i not in manifest["golden"][0]["topk_ids"]]
    ids = {"low": free[0], "near": free[len(free) // 2], "high": free[-1], "best": best, "second": second}
    bits[ids["low"]] = bits[ids["high"]] = bits[best]
    emb = BundleReader.open(bundle).read_array(manifest["golden"][0]["embedding"])
    j = int(np.argmin(np.abs(emb)))
    bits[ids["near"]] = bits[second]
    bits[ids["near"], j] += 1  # one float16 step away from zero: a score that differs in the last bits
    raw = bits.astype("<u2").tobytes()
    (bundle / entry["path"]).write_bytes(raw)
    entry["sha256"] = hashlib.sha256(raw).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return bundle, bits, ids


def test_index_scan_wasm_keeps_ties_exact_and_js_fallback(pipeline, tmp_path):
    """The WebAssembly SIMD scan (the default), the JS scan asked for (?scan=js) and the JS scan a
    browser without WebAssembly SIMD falls back to give the same top-k, ids and scores, on an
    index with exact ties and a near-tie at the top, equal to the JS scan's arithmetic in NumPy and
    to the Python runtime's ids."""
    _need_browser()
    from ammkd.mobile_runtime.retriever import Retriever

    bundle, bits, ids = _with_ties(pipeline, tmp_path / "ties")
    r = Retriever.open(bundle)
    with serving(bundle) as url:
        runs = {
            "wasm": drive(url + "/", "--golden", "0", "--golden", "1"),
            "js": drive(url + "/?scan=js", "--golden", "0", "--golden", "1"),
            "no-simd": drive(url + "/", "--no-wasm-simd", "--golden", "0", "--golden", "1"),
        }
    assert runs["wasm"]["state"]["scan"] == "wasm-simd" and runs["wasm"]["state"]["scanNote"] == ""
    assert runs["js"]["state"]["scan"] == "js" and runs["js"]["state"]["scanNote"] == "JS asked for (?scan=js)"
    assert runs["no-simd"]["state"]["scan"] == "js"
    assert runs["no-simd"]["state"]["scanNote"] == "this browser has no WebAssembly SIMD"
    assert runs["no-simd"]["state"]["ep"] == "wasm" and runs["no-simd"]["state"]["ready"]  # the encoder still runs
    assert runs["wasm"]["bundleInfo"].endswith(" · search: WASM SIMD")  # the page says which scan runs
    assert runs["no-simd"]["bundleInfo"].endswith(" · search: JS (this browser has no WebAssembly SIMD)")
    for name, report in runs.items():
        want_path = "wasm-simd" if name == "wasm" else "js"
        for i, page in enumerate(report["golden"]):
            assert page["scan"] == want_path, (name, i)
            got = [h["id"] for h in page["topk"]]
            assert got == _exact_topk(bits, page["embedding"], 5), (name, i)
            assert got == [h.id for h in r.search_embedding(np.asarray(page["embedding"], np.float32), k=5)], (name, i)
            assert page["topk"] == runs["wasm"]["golden"][i]["topk"], (name, i)  # ids, scores, texts: bit for bit
    # golden 0: the three copies of its best row tie, in id order, and the near-copy sits by its twin
    top = [h["id"] for h in runs["wasm"]["golden"][0]["topk"]]
    assert top[:3] == sorted([ids["low"], ids["best"], ids["high"]])
    assert {ids["second"], ids["near"]} == set(top[3:5])


def test_index_scan_wasm_matches_js_scan_in_node():
    """search.js's WebAssembly SIMD scan against its JS scan on random float16 indexes with ties,
    near-ties one float16 step apart, subnormals and odd dimensions (web_demo/tests/scan_check.mjs)."""
    if shutil.which("node") is None:
        pytest.skip(f"node is not installed; install Node 20, then {ENABLE}")
    v8 = subprocess.run(["node", "--v8-options"], capture_output=True, text=True, timeout=60).stdout
    relaxed = ["--experimental-wasm-relaxed-simd"] if "experimental-wasm-relaxed-simd" in v8 else []
    proc = subprocess.run(
        ["node", *relaxed, str(WEB_DEMO / "tests" / "scan_check.mjs"), "--queries", "60"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=WEB_DEMO,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [c["path"] for c in report["cases"]] == ["wasm-simd"] * 6, report["cases"]
    kernels = {c["kernel"] for c in report["cases"]}
    assert kernels == ({"mul-add", "relaxed-madd"} if report["relaxedSimd"] else {"mul-add"}), report["cases"]
    assert report["mismatches"] == []
    # float32 sums alone would have ordered some of these differently: the rescoring is what keeps them exact
    assert report["rawOrderDiffers"] > 0
    assert report["bigQuery"] == {"lastPath": "js", "same": True}  # a query the scaled scan refuses
    assert report["nonFinite"] == {"path": "js", "note": "the index has a non-finite value (row 5)"}


def test_page_modules_pass_the_language_neutral_fixtures():
    """top-k ties, float16 decoding, text lookup, nearest texts and the tokenizer kit
    (tests/fixtures/*.json): the page's own modules in Node give what Python and the Kotlin core
    give (web_demo/tests/fixtures_check.mjs)."""
    from ammkd.distill.text_towers import MINILM_ALIAS, resolve_hf_dir

    if shutil.which("node") is None:
        pytest.skip(f"node is not installed; install Node 20, then {ENABLE}")
    fixtures_dir = WEB_DEMO.parent / "tests" / "fixtures"
    vocab = resolve_hf_dir(MINILM_ALIAS) / "vocab.txt"
    proc = subprocess.run(
        ["node", str(WEB_DEMO / "tests" / "fixtures_check.mjs"), str(fixtures_dir), str(vocab)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["mismatches"] == [] and proc.returncode == 0, proc.stdout + proc.stderr
    fixtures = {n: json.loads((fixtures_dir / f"{n}.json").read_text()) for n in ("topk", "fp16", "tokenizer_kit")}
    texts = json.loads((fixtures_dir / "nearest_texts.json").read_text())
    assert report["counts"] == {
        "topk": len(fixtures["topk"]["cases"]),
        "fp16": len(fixtures["fp16"]["cases"]),
        "texts": len(texts["cases"]) + len(texts["normal_forms"]),
        "resize_plans": len(json.loads((fixtures_dir / "resize_plans.json").read_text())["cases"]),
        "tokenizer": len(fixtures["tokenizer_kit"]["cases"]),
    }


def test_page_runs_webgpu_and_falls_back_to_wasm(pipeline):
    """Headless Chromium with WebGPU enabled offers SwiftShader's software adapter: a real WebGPU
    device (Vulkan on the CPU), so the WebGPU execution provider runs here for real."""
    _need_browser()
    from ammkd.mobile_runtime.retriever import Retriever

    r = Retriever.open(pipeline["bundle"])
    with serving(pipeline["bundle"]) as url:
        gpu = drive(url + "/?ep=webgpu", "--webgpu", "--golden", "0", "--golden", "1")
        auto_on_software = drive(url + "/", "--webgpu")
        no_adapter = drive(url + "/?ep=webgpu")
        unknown = drive(url + "/?ep=cuda")
    note = gpu["state"]["epNote"]
    if gpu["state"]["ep"] == "wasm" and ("no adapter" in note or "no WebGPU" in note):
        pytest.skip(f"this Chromium offers no WebGPU adapter even with --enable-unsafe-webgpu ({note})")
    assert gpu["state"]["ready"] and gpu["state"]["ep"] == "webgpu", gpu["state"]  # not a failed WebGPU session
    _check_golden(gpu, r)
    # auto takes WebGPU only on a hardware adapter; without an adapter WebGPU falls back to WASM
    assert auto_on_software["state"]["ready"] and auto_on_software["state"]["ep"] == "wasm"
    assert "software" in auto_on_software["state"]["epNote"]
    assert no_adapter["state"]["ready"] and no_adapter["state"]["ep"] == "wasm"
    assert "no adapter" in no_adapter["state"]["epNote"] or "no WebGPU" in no_adapter["state"]["epNote"]
    assert not unknown["state"]["ready"] and "?ep=cuda: use auto, webgpu or wasm" in unknown["state"]["error"]


def _big_photo(path: Path, width: int = 6000, height: int = 4000) -> Path:
    """A 24-megapixel JPEG (smooth, so the file stays small)."""
    from PIL import Image

    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)), (x + y) % 256], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(path, quality=80)
    return path


def test_page_refuses_bad_bundles_and_non_images(pipeline, tmp_path):
    _need_browser()
    bad = shutil.copytree(pipeline["bundle"], tmp_path / "bad")
    manifest = json.loads((bad / "manifest.json").read_text())
    model = next(t for t in manifest["targets"] if t["format"] == "onnx")["file"]["path"]

    def refused(mutate) -> dict:
        """The page's report on the bundle after `mutate(folder)` (the server started on the good one)."""
        shutil.rmtree(bad)
        shutil.copytree(pipeline["bundle"], bad)
        mutate(bad)
        report = drive(url + "/")
        assert not report["state"]["ready"]
        assert report["statusText"] == "refused: " + report["state"]["error"]  # shown on the page
        return report["state"]

    def flip_byte(folder: Path) -> None:
        vectors = folder / "index" / "class_vectors.f16.bin"
        data = bytearray(vectors.read_bytes())
        data[len(data) // 2] ^= 0x01
        vectors.write_bytes(bytes(data))

    def without_onnx_target(folder: Path) -> None:
        m = dict(manifest, targets=[t for t in manifest["targets"] if t["format"] != "onnx"])
        (folder / "manifest.json").write_text(json.dumps(m))

    with serving(bad) as url:
        state = refused(flip_byte)
        assert "index/class_vectors.f16.bin: SHA-256 does not match" in state["error"]
        state = refused(lambda f: (f / "index" / "texts.json").unlink())
        assert "index/texts.json: missing from the bundle (HTTP 404)" in state["error"]
        state = refused(lambda f: (f / model).unlink())
        assert f"{model}: missing from the bundle (HTTP 404)" in state["error"]
        state = refused(without_onnx_target)
        assert "no image_encoder target in format onnx" in state["error"] and "has: " in state["error"]
        state = refused(lambda f: (f / "manifest.json").unlink())
        assert "manifest.json: missing from the bundle (HTTP 404)" in state["error"]
        state = refused(lambda f: (f / "manifest.json").write_text(json.dumps(manifest)[:200]))
        assert "manifest.json: not valid JSON" in state["error"]

    # the server itself refuses a bundle the page cannot run, naming what it has
    without_onnx_target(bad)
    with pytest.raises(ConfigError, match=r"no image_encoder target in format onnx \(has: .*--target onnx"):
        make_server(bad, port=0)

    big = _big_photo(tmp_path / "big.jpg")
    with serving(pipeline["bundle"]) as url:
        report = drive(url + "/", "--upload", str(WEB_DEMO / "package.json"), "--upload", str(big))
    not_image, huge = report["uploads"]
    assert not_image["message"].startswith("package.json: not an image") and not_image["results"] == []
    # downscaled once by the browser before the crop: results, no freeze, the original size reported
    assert huge["message"] == "" and len(huge["results"]) == 5, huge
    assert "preprocess" in huge["timings"]
    assert huge["caption"] == "big.jpg (6000x4000)"


def test_server_is_read_only_and_confined(pipeline):
    _need_ort()
    bundle = pipeline["bundle"]
    with serving(bundle) as url:
        status, headers, body = http_get(url, "/bundle/manifest.json")
        assert status == 200 and json.loads(body)["format"] == "ammkd-bundle"
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["cross-origin-embedder-policy"] == "require-corp"
        assert headers["cross-origin-resource-policy"] == "same-origin"
        status, headers, body = http_get(url, "/")
        assert status == 200 and headers["content-type"].startswith("text/html") and b"app.js" in body
        assert http_get(url, "/app.js")[1]["content-type"].startswith("text/javascript")
        assert http_get(url, "/ort/ort.wasm.min.mjs")[1]["content-type"].startswith("text/javascript")
        status, headers, body = http_get(url, "/ort/ort-wasm-simd-threaded.wasm", "HEAD")
        assert status == 200 and headers["content-type"] == "application/wasm" and body == b""
        assert int(headers["content-length"]) > 0
        for path in (
            "/../",
            "/..%2f..%2fetc/passwd",
            "/bundle/../manifest.json",
            "/bundle/../../../etc/passwd",
            "/bundle/%2e%2e/manifest.json",
            "/bundle/%2E%2E/%2e%2e/pyproject.toml",
            "/bundle/index/%2e%2e/manifest.json",
            "/bundle/./manifest.json",
            "/bundle//manifest.json",
            "/%2e%2e/tools/serve.py",
            "/bundle/",  # directories: never listed
            "/bundle/index/",
            "/bundle/index",
            "/ort/",
            "/tests/drive.mjs",  # only the page's own top-level files
            "/package.json",
            "/node_modules/onnxruntime-web/package.json",
            "/bundle/manifest.json%00",
            "/bundle/..\\manifest.json",
        ):
            status, _, body = http_get(url, path)
            assert status == 404, path
            assert b"manifest" not in body and b"<a href" not in body, path
        assert http_get(url, "/bundle/manifest.json", "POST")[0] == 405
        assert http_get(url, "/bundle/manifest.json", "PUT")[0] == 405
        assert http_get(url, "/bundle/manifest.json", "DELETE")[0] == 405


def test_server_checks_bundle_and_page_runtime(pipeline, tmp_path):
    with pytest.raises(ConfigError, match="npm ci --prefix web_demo"):
        page = tmp_path / "page"
        page.mkdir()
        (page / "index.html").write_text("<!doctype html>")
        make_server(pipeline["bundle"], port=0, web_root=page)
    assert BundleReader.open(pipeline["bundle"])  # the good bundle itself is accepted


def test_cli_serve_refuses_missing_bundle(tmp_path):
    proc = run_cli("serve", "--bundle", str(tmp_path / "nope"), "--port", "0")
    assert_user_error(proc, "nope", "not a bundle folder")
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli("serve", "--bundle", str(tmp_path / "empty"), "--port", "0"), "manifest.json", "missing")


def _with_gallery(pipeline, folder: Path, photos: int, caption_of: int):
    """A copy of the test bundle at `folder` with a gallery of `photos` val images embedded by the
    Python runtime -> (bundle, Retriever, gallery, a caption, Python's top-5 photo names for it)."""
    from conftest import TINY_DATA

    from ammkd.bundle.texts import find_text
    from ammkd.distill.data import load_split
    from ammkd.mobile_runtime.gallery import update_gallery
    from ammkd.mobile_runtime.retriever import Retriever

    bundle = shutil.copytree(pipeline["bundle"], folder)
    source = folder.parent / f"{folder.name}-photos"
    source.mkdir()
    data = load_split(TINY_DATA, "val")
    for i in range(photos):
        data.image(i).save(source / f"{i:02d}.png")
    r = Retriever.open(bundle)
    gallery = update_gallery(r, source).gallery
    caption = data.captions[caption_of][0]
    want = [Path(p).name for p, _ in gallery.search(r.index[find_text(r.texts, caption)], 5)]
    return bundle, r, gallery, caption, want


def test_gallery_text_search_in_the_page_matches_python(pipeline, tmp_path):
    _need_browser()
    bundle, _, gallery, caption, want = _with_gallery(pipeline, tmp_path / "bundle", photos=12, caption_of=3)
    photos = tmp_path / "bundle-photos"
    with serving(bundle) as url:
        report = drive(url + "/", "--gallery-text", caption, "--gallery-text", "zzz qqq")
        conn = http.client.HTTPConnection(url.removeprefix("http://"))
        conn.request("GET", "/photos/0")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == (photos / gallery.images[0]).read_bytes()
        conn.request("GET", f"/photos/{len(gallery.images)}")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 404
    found, unknown = report["gallery"]
    assert found["text"] == caption and [h["image"] for h in found["hits"]] == want
    assert "not one of the bundle's texts" in unknown["error"] and len(unknown["suggestions"]) == 5


def test_screenshot_of_the_page_with_results(pipeline, tmp_path):
    """The README's screenshot, made by this harness. By default of the test bundle and its golden
    image, into a temporary folder; the committed one (web_demo/README.md says how) sets
    AMMKD_WEB_SCREENSHOT (where to write), AMMKD_WEB_SCREENSHOT_BUNDLE and AMMKD_WEB_SCREENSHOT_PHOTO."""
    _need_browser()
    from PIL import Image

    bundle = Path(os.environ.get("AMMKD_WEB_SCREENSHOT_BUNDLE") or pipeline["bundle"])
    golden = json.loads((bundle / "manifest.json").read_text())["golden"][0]["image"]["path"]
    photo = Path(os.environ.get("AMMKD_WEB_SCREENSHOT_PHOTO") or bundle / golden)
    out = Path(os.environ.get("AMMKD_WEB_SCREENSHOT") or tmp_path / "screenshot.png")
    with serving(bundle) as url:
        report = drive(url + "/", "--upload", str(photo), "--screenshot", str(out))
    (upload,) = report["uploads"]
    assert upload["message"] == "" and len(upload["results"]) == 5
    with Image.open(out) as shot:
        assert shot.format == "PNG" and shot.width == 900 and shot.height >= 600
    assert out.stat().st_size < 300_000, f"{out}: {out.stat().st_size} bytes; the README's screenshot must stay small"


def test_page_opens_a_bundle_folder_from_disk(pipeline, tmp_path):
    """A bundle folder picked in the page (no server-side bundle needed): checked as a served one,
    refused when tampered or not a bundle, and run like a served one; its gallery has no photos."""
    _need_browser()
    good, r, _, caption, want = _with_gallery(pipeline, tmp_path / "my-bundle", photos=8, caption_of=2)
    photos = tmp_path / "my-bundle-photos"
    tampered = shutil.copytree(pipeline["bundle"], tmp_path / "tampered")
    model = tampered / r.target["file"]["path"]
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 3] ^= 0x10
    model.write_bytes(bytes(raw))

    with serving(pipeline["bundle"]) as url:
        report = drive(
            url + "/",
            *("--open-folder", str(tampered), "--open-folder", str(photos), "--open-folder", str(good)),
            *("--golden", "0", "--golden", "1", "--gallery-text", caption),
        )
    refused_model, not_a_bundle, opened = report["folders"]
    assert not refused_model["state"]["ready"]
    assert f"{r.target['file']['path']}: SHA-256 does not match" in refused_model["state"]["error"]
    assert refused_model["statusText"].startswith("refused: ")
    assert "manifest.json: missing from the folder you opened" in not_a_bundle["state"]["error"]
    assert opened["state"]["ready"] and opened["state"]["source"] == "my-bundle/ (your folder)"
    _check_golden(report, r)
    (found,) = report["gallery"]
    assert [h["image"] for h in found["hits"]] == want and all(h["url"] is None for h in found["hits"])


def test_page_limits_are_the_schemas():
    """The page's bounds (LIMITS in bundle.js) are the manifest schema's maxima: they cannot drift apart."""
    from reader_limits import js_limits, schema_maxima

    want = schema_maxima()
    have = js_limits()
    assert {k: have.get(k) for k in want} == want


def test_page_refuses_sizes_that_would_exhaust_memory(pipeline, tmp_path):
    """A manifest whose numbers would size a huge allocation (input size, index count, dims, shape
    extents and rank, batch), a file bigger than the manifest says (served or in a folder), one too
    big to hold, or a gallery.json asking for more bytes than its photos need, is refused with a
    message naming the file and the bound, before anything is allocated or the body is read."""
    _need_browser()
    bad = shutil.copytree(pipeline["bundle"], tmp_path / "bad")
    manifest = json.loads((bad / "manifest.json").read_text())
    dim = manifest["output"]["dim"]

    def edited(edit):
        def mutate(folder: Path) -> None:
            m = json.loads(json.dumps(manifest))
            edit(m)
            (folder / "manifest.json").write_text(json.dumps(m))

        return mutate

    def grown(folder: Path, extra: int = 1 << 30) -> None:
        with open(folder / "index" / "texts.json", "r+b") as f:
            f.truncate(f.seek(0, 2) + extra)  # sparse: costs nothing unless it is read

    def too_big(folder: Path) -> None:
        size = 3 << 30
        with open(folder / "index" / "texts.json", "r+b") as f:
            f.truncate(size)
        edited(lambda m: m["index"]["texts"].update(bytes=size))(folder)

    def gallery_asking_too_much(folder: Path) -> None:
        (folder / "gallery").mkdir()
        (folder / "gallery" / "embeddings.f32.bin").write_bytes(bytes(4 * dim))
        entry = {"path": "gallery/embeddings.f32.bin", "dtype": "float32", "shape": [1, dim], "bytes": 1 << 40}
        g = {"format": "ammkd-gallery", "format_version": 1, "source_dir": "/photos", "dim": dim, "images": ["a.png"]}
        (folder / "gallery" / "gallery.json").write_text(json.dumps(g | {"embeddings": entry | {"sha256": "0" * 64}}))

    def index_count(m: dict) -> None:
        m["index"]["count"] = 10**9
        m["index"]["vectors"]["shape"][0] = 10**9

    max_i32 = 2**31 - 1

    def over(key: str, value: int, maximum: int) -> str:
        return f"manifest.json: invalid manifest at {key}: {value} is greater than the maximum of {maximum}"

    cases = [
        (edited(lambda m: m["input"].update(size=100_000)), over("input/size", 100_000, 4096)),
        (edited(index_count), over("index/count", 10**9, 50_000_000)),
        (edited(lambda m: m["output"].update(dim=10**7)), over("output/dim", 10**7, 65536)),
        (
            edited(lambda m: m["golden"][0]["input"].update(shape=[2**40, 2**40])),
            over("golden/0/input/shape/0", 2**40, max_i32),
        ),
        (
            edited(lambda m: m["index"]["vectors"].update(shape=[1] * 9)),
            "index/vectors/shape: 9 dimensions, more than the maximum",
        ),
        (edited(lambda m: m["targets"][0].update(batch=100_000)), over("targets/0/batch", 100_000, 4096)),
        (grown, "index/texts.json: size {} bytes, manifest says {} (truncated or replaced)"),
        (too_big, f"index/texts.json: {3 << 30} bytes, more than this page can hold in memory"),
        (
            gallery_asking_too_much,
            f"gallery/gallery.json: 1 images of dim {dim} need {4 * dim} bytes, embeddings say {2**40}",
        ),
    ]
    texts_bytes = manifest["index"]["texts"]["bytes"]
    with serving(bad) as url:  # started on the good bundle: `ammkd serve` itself refuses these manifests
        for mutate, message in cases:
            shutil.rmtree(bad)
            shutil.copytree(pipeline["bundle"], bad)
            mutate(bad)
            report = drive(url + "/")
            state = report["state"]
            want = message.format(texts_bytes + (1 << 30), texts_bytes)
            assert not state["ready"] and want in (state["error"] or ""), (want, state)
            assert report["statusText"] == "refused: " + state["error"]  # shown on the page
            assert report["loadMs"] < 60_000, report["loadMs"]  # refused at once, nothing big was read

    # a bundle folder opened in the page: a file bigger than the manifest says is refused by its size
    folder = shutil.copytree(pipeline["bundle"], tmp_path / "folder")
    grown(folder, extra=1 << 20)
    with serving(pipeline["bundle"]) as url:
        report = drive(url + "/", "--open-folder", str(folder))
    (opened,) = report["folders"]
    want = (
        f"index/texts.json: size {texts_bytes + (1 << 20)} bytes, manifest says {texts_bytes} (truncated or replaced)"
    )
    assert not opened["state"]["ready"] and want in opened["state"]["error"], opened["state"]


def test_page_counts_a_body_without_content_length():
    """A body without Content-Length (a compressing server) is refused once it passes the manifest's
    size, after a few KiB of a 1 GiB stream, and accepted when exact (web_demo/tests/bundle_check.mjs)."""
    if shutil.which("node") is None:
        pytest.skip(f"node is not installed; install Node 20, then {ENABLE}")
    proc = subprocess.run(
        ["node", str(WEB_DEMO / "tests" / "bundle_check.mjs")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["bigger"] == "index/texts.json: size more than 4096 bytes, manifest says 4096 (truncated or replaced)"
    assert report["chunksPulled"] < 16  # of 1,048,576: the rest was never read
    assert report["exact"] == 4096
    assert report["shorter"] == "index/texts.json: size 3072 bytes, manifest says 4096 (truncated or replaced)"


# Free text typed into the page's text box: index texts are added by the test. Non-ASCII (accents
# stripped, CJK spaced out, Greek, Cyrillic, Arabic), emoji (unknown to MiniLM's vocabulary: [UNK]),
# odd whitespace, punctuation, literal special tokens and a text past max_length (truncated).
FREE_TEXTS = [
    "a dog running on the beach",
    "two children playing football in a park",
    "A SMALL RED CIRCLE!!!",
    "  a purple   diamond\tat the bottom\n",
    "café crème brûlée, naïve résumé",
    "Ein großer Hund läuft über die Wiese",
    "日本の桜と富士山",
    "ΣΊΣΥΦΟΣ and Москва and مرحبا",
    "🐶🏖️ dog at the beach 🎉👍🏽",
    "[CLS] a blue square [SEP] [MASK]",
    "striped background, noisy background; and a green triangle?",
    " ".join(["a large green triangle at the top left on a striped background"] * 8),
]
# The latency set: short to long typed queries (no index text: the encoder's cost, not a lookup).
BENCH_TEXTS = [
    "a dog",
    "a dog running on the beach",
    "two children playing football in a park on a sunny afternoon",
    "café crème brûlée, naïve résumé",
    "🐶🏖️ dog at the beach 🎉",
    "a small purple diamond at the bottom on a noisy background next to a large green triangle",
]
QUERY_ERRORS = ["", " \t\u3000 ", "a" * 10_001]
SCORE_SWAP = 1e-5  # docs/design.md 5.4: ranks may swap across readers only where scores are this close


def _same_ranking(page_ids: list[int], scores: np.ndarray, k: int) -> bool:
    """Whether the page's top-k ids are Python's ranking of `scores` (all rows): equal ids, or ids
    whose Python scores are within SCORE_SWAP of the score at that rank (a near-tie swapped)."""
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))[:k]
    if len(page_ids) != len(order):
        return False
    return all(abs(float(scores[p]) - float(scores[o])) <= SCORE_SWAP for p, o in zip(page_ids, order))


def _with_text_gallery(bundle: Path, folder: Path, photos: int = 16):
    """A copy of the text bundle with a gallery of `photos` val images embedded by the Python runtime."""
    from conftest import TINY_DATA

    from ammkd.distill.data import load_split
    from ammkd.mobile_runtime.gallery import update_gallery
    from ammkd.mobile_runtime.retriever import Retriever

    copy = shutil.copytree(bundle, folder)
    source = folder.parent / f"{folder.name}-photos"
    source.mkdir()
    data = load_split(TINY_DATA, "val")
    for i in range(photos):
        data.image(i).save(source / f"{i:02d}.png")
    return copy, update_gallery(Retriever.open(copy), source).gallery


def _quantiles(values: list[float]) -> tuple[float, float]:
    """(median, p90) in ms."""
    return float(np.median(values)), float(np.percentile(values, 90))


def test_page_free_text_search_agrees_with_python(text_pipeline, tmp_path):
    """The page's free-text box (a bundle with a text side, docs/design.md 5.10) against the Python
    runtime (Retriever.embed_text, search_embedding, the gallery's search): the same token ids for
    index texts and free texts (non-ASCII, emoji), the fp32 text encoder's embedding (onnxruntime-
    web WASM vs onnxruntime) at cosine >= 0.9999 with the same top-10 texts and photos, int8-dynamic's
    agreement reported; the empty, blank and too-long query messages are Python's; and the text-encode
    latency in the page (tokenize + run, after warm-up) per variant, printed for the benchmark."""
    _need_browser()
    from ammkd.bundle.text_encoder import read_tokenizer
    from ammkd.common.errors import ConfigError
    from ammkd.mobile_runtime.retriever import Retriever

    bundle, gallery = _with_text_gallery(text_pipeline["bundle"], tmp_path / "bundle")
    py = {}
    for q in ("none", "int8-dynamic"):
        py[q] = Retriever.open(bundle)
        py[q].text_quantization = q
    tokenizer = read_tokenizer(py["none"].bundle)
    texts = py["none"].texts
    vectors = py["none"].bundle.manifest["index"]["vectors"]
    bits = py["none"].bundle.read_array(vectors).view(np.uint16)  # the fp16 index as search.js scans it
    queries = [texts[0], texts[len(texts) // 2], texts[-1], *FREE_TEXTS]
    k = 10
    (tmp_path / "queries.json").write_text(json.dumps({"queries": queries + QUERY_ERRORS, "k": k}))
    (tmp_path / "bench.json").write_text(json.dumps({"queries": BENCH_TEXTS, "runs": 10, "warmup": 3}))
    page_args = ["--text-queries", str(tmp_path / "queries.json"), "--text-bench", str(tmp_path / "bench.json")]
    with serving(bundle) as url:
        runs = {
            # fp32 picked in the page's select (the page starts on int8-dynamic, the smallest)
            "none": drive(url + "/?ep=wasm", "--text-variant", "none", *page_args),
            "int8-dynamic": drive(url + "/?ep=wasm&text=int8-dynamic", *page_args),
        }
    python_errors = []
    for q in QUERY_ERRORS:
        with pytest.raises(ConfigError) as e:
            py["none"].embed_text(q)
        python_errors.append(str(e.value))

    figures = {}
    for variant, report in runs.items():
        st = report["text"]["state"]
        assert report["state"]["ready"] and st["status"] == "ready", st
        assert st["quantization"] == variant and st["ep"] == "wasm" and st["vocab"] == len(tokenizer.vocab)
        assert st["kit"]["idsMatch"] == st["kit"]["cases"] > 0, st["kit"]  # the bundle's kit, tokenized in the page
        assert st["kit"]["cosine"] >= st["kit"]["bound"], st["kit"]
        assert report["text"]["galleryHidden"]  # the gallery is searched from the free-text box
        assert {v["quantization"] for v in st["variants"]} >= {"none", "int8-dynamic"}
        r = py[variant]
        done = report["textQueries"]
        assert [d["query"] for d in done] == queries + QUERY_ERRORS
        cosines, overlaps, same_texts, same_photos = [], [], 0, 0
        for d in done[: len(queries)]:
            q, page = d["query"], d["result"]
            assert "error" not in page and d["message"] == "", (q, page.get("error"))
            assert page["quantization"] == variant
            assert page["ids"] == tokenizer.encode(q), q  # identical token ids, every variant
            emb = r.embed_text(q)
            cosines.append(_cosine(page["embedding"], emb))
            want = r.search_embedding(emb, k)
            got = [h["id"] for h in page["hits"]]
            overlaps.append(len(set(got) & {h.id for h in want}) / k)
            same_texts += got == [h.id for h in want]
            page_emb = np.asarray(page["embedding"], np.float32)
            py_scores = r.index @ emb
            gallery_scores = gallery.embeddings @ emb
            py_photos = [Path(p).name for p, _ in gallery.search(emb, k)]
            same_photos += [h["image"] for h in page["photos"]] == py_photos
            # what the page shows is what it returned
            assert d["results"] == [f"{h['score']:.4f}{h['text']}" for h in page["hits"]], q
            assert len(d["photos"]) == len(page["photos"]) == min(k, len(gallery.images))
            if variant == "none":
                assert cosines[-1] >= 0.9999, (q, cosines[-1])
                assert _same_ranking(got, py_scores, k), (q, got, [h.id for h in want])
                photo_ids = [h["id"] for h in page["photos"]]
                assert _same_ranking(photo_ids, gallery_scores, k), (q, [h["image"] for h in page["photos"]], py_photos)
                np.testing.assert_allclose([h["score"] for h in page["hits"]], [h.score for h in want], atol=1e-4)
            # the page's own ranking of its own embedding is exact (the fp16 index scan of search.js)
            assert got == _exact_topk(bits, page_emb, k), q
        # index texts: the fp32 encoder finds each text itself first (its class vector, up to rounding)
        for d in done[:3]:
            if variant == "none":
                assert d["result"]["hits"][0]["text"] == d["query"]
        # the refusals: shown in the page, Python's messages, nothing searched
        for d, want_msg in zip(done[len(queries) :], python_errors):
            assert d["result"]["error"] == want_msg == d["message"], (d["message"], want_msg)
            assert d["results"] == [] and d["photos"] == []
        assert "text query is empty: type a few words" in python_errors[0]
        assert "text query has 10001 characters; at most 10000 are accepted" in python_errors[2]

        (bench,) = report["textBench"]
        assert bench["quantization"] == variant and bench["ep"] == "wasm"
        rows = bench["rows"]
        assert len(rows) == 10 * len(BENCH_TEXTS) and all(row["total"] > 0 for row in rows)
        assert [row["tokens"] for row in rows[: len(BENCH_TEXTS)]] == [len(tokenizer.encode(t)) for t in BENCH_TEXTS]
        # the Python runtime's cost on the same texts, for scale (onnxruntime, 1 thread, after warm-up)
        side = r._text
        for t in BENCH_TEXTS * 3:
            side.embed(t)
        py_ms = []
        for _ in range(10):
            for t in BENCH_TEXTS:
                t0 = time.perf_counter()
                side.embed(t)
                py_ms.append((time.perf_counter() - t0) * 1e3)
        figures[variant] = {
            "python": _quantiles(py_ms),
            "threads": bench["threads"],
            "total": _quantiles([row["total"] for row in rows]),
            "encode": _quantiles([row["encode"] for row in rows]),
            "tokenize": _quantiles([row["tokenize"] for row in rows]),
            "cosine_min": min(cosines),
            "top10_overlap_mean": float(np.mean(overlaps)),
            "top10_overlap_min": min(overlaps),
            "same_top10_texts": f"{same_texts}/{len(queries)}",
            "same_top10_photos": f"{same_photos}/{len(queries)}",
            "bytes": st["bytes"],
            "load_ms": st["loadMs"],
        }
    save_figures("web_text_search", figures)
    print("\npage free-text search (headless Chromium, onnxruntime-web WASM) vs Python (onnxruntime):")
    print(
        "variant | MB | page threads | page tokenize+run median / p90 ms | page run median ms | "
        "page tokenize median ms | Python (1 thread) median / p90 ms | 1 - min cosine (page vs Python) | "
        "same top-10 texts | same top-10 photos | top-10 overlap mean (min)"
    )
    for variant, f in figures.items():
        print(
            f"{variant} | {f['bytes'] / 1e6:.1f} | {f['threads']} | {f['total'][0]:.2f} / {f['total'][1]:.2f} | "
            f"{f['encode'][0]:.2f} | {f['tokenize'][0]:.3f} | {f['python'][0]:.2f} / {f['python'][1]:.2f} | "
            f"{1 - f['cosine_min']:.2e} | {f['same_top10_texts']} | {f['same_top10_photos']} | "
            f"{f['top10_overlap_mean']:.3f} ({f['top10_overlap_min']:.1f})"
        )
    # int8-dynamic: the same quantized graph in both runtimes; activations are quantized at run time
    assert figures["int8-dynamic"]["cosine_min"] >= 0.99, figures["int8-dynamic"]
    assert figures["int8-dynamic"]["top10_overlap_mean"] >= 0.8, figures["int8-dynamic"]


def _narrow_text_encoder(path: Path, vocab_size: int, width: int = 8) -> bytes:
    """A tiny ONNX text encoder of the bundle's interface (input_ids (B, L) int64 -> text_embedding
    (B, width)) whose width is not the index's: mean of `width`-wide token embeddings."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((vocab_size, width)).astype(np.float32), "table"
    )
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),
            helper.make_node("ReduceMean", ["tokens"], ["text_embedding"], axes=[1], keepdims=0),
        ],
        "narrow",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"])],
        [helper.make_tensor_value_info("text_embedding", TensorProto.FLOAT, ["batch", width])],
        [table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path.read_bytes()


def test_page_free_text_refusals_and_kit_gate(text_pipeline, tmp_path):
    """A text side the page cannot trust is refused in the page, naming the file, while the photo
    side keeps working: a vocab.txt changed after export (SHA-256), and a text encoder whose output
    width is not the index's (Python's open_text_side refuses both too). And the kit gates the
    execution provider: a text encoder on WebGPU (headless: SwiftShader) whose kit embeddings miss
    the bound runs on WASM instead, saying why."""
    _need_browser()
    from ammkd.bundle.text_encoder import open_text_side
    from ammkd.common.errors import BundleError

    good = text_pipeline["bundle"]
    manifest = json.loads((good / "manifest.json").read_text())
    vocab_path = manifest["text_encoder"]["tokenizer"]["vocab"]["path"]

    tampered = shutil.copytree(good, tmp_path / "tampered")
    raw = (tampered / vocab_path).read_bytes()
    (tampered / vocab_path).write_bytes(raw.replace(b"\ndog\n", b"\ndoh\n", 1))  # same size, one token changed
    assert (tampered / vocab_path).read_bytes() != raw

    narrow = shutil.copytree(good, tmp_path / "narrow")
    m = json.loads(json.dumps(manifest))
    entry = next(t for t in m["text_encoder"]["targets"] if t["quantization"] == "int8-dynamic")
    data = _narrow_text_encoder(narrow / entry["file"]["path"], raw.count(b"\n") + 1)
    entry["file"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    entry["bytes"] = len(data)
    (narrow / "manifest.json").write_text(json.dumps(m, indent=2))

    (tmp_path / "q.json").write_text(json.dumps({"queries": ["a dog on the beach"], "k": 5}))
    with serving(tampered) as url:
        refused_vocab = drive(url + "/", "--text-queries", str(tmp_path / "q.json"), "--golden", "0")
    with serving(narrow) as url:
        refused_width = drive(url + "/", "--golden", "0")
    with serving(good) as url:
        gpu = drive(url + "/?ep=webgpu", "--webgpu", "--text-queries", str(tmp_path / "q.json"))

    want = f"{vocab_path}: SHA-256 does not match the manifest (file was modified)"
    st = refused_vocab["text"]["state"]
    assert st["status"] == "refused" and st["error"] == want, st
    assert st["quantization"] == "int8-dynamic"  # the default: the smallest text encoder
    assert refused_vocab["text"]["message"] == f"text search refused: {want}"
    assert not refused_vocab["text"]["hidden"]  # the section stays, with the refusal
    (typed,) = refused_vocab["textQueries"]
    assert typed["disabled"] and typed["message"] == f"text search refused: {want}"  # the box is off
    assert refused_vocab["state"]["ready"] and len(refused_vocab["golden"][0]["topk"]) == 5  # photos still work
    with pytest.raises(BundleError, match="SHA-256 does not match"):
        open_text_side(BundleReader.open(tampered))

    path = entry["file"]["path"]
    want = f"{path}: text encoder output width 8 does not match the index's {manifest['index']['dim']}"
    st = refused_width["text"]["state"]
    assert st["status"] == "refused" and st["error"] == want, st
    assert refused_width["text"]["message"] == f"text search refused: {want}"
    assert refused_width["state"]["ready"] and len(refused_width["golden"][0]["topk"]) == 5
    with pytest.raises(BundleError, match="output width 8 does not match"):
        open_text_side(BundleReader.open(narrow), "int8-dynamic")

    note = gpu["state"]["epNote"]
    if gpu["state"]["ep"] == "wasm" and ("no adapter" in note or "no WebGPU" in note):
        pytest.skip(f"this Chromium offers no WebGPU adapter even with --enable-unsafe-webgpu ({note})")
    st = gpu["text"]["state"]
    assert gpu["state"]["ep"] == "webgpu" and st["status"] == "ready", (gpu["state"], st)
    assert st["kit"]["cosine"] >= st["kit"]["bound"], st  # whichever provider runs it, it agrees with the kit
    if st["ep"] == "wasm":  # onnxruntime-web 1.22's WebGPU on SwiftShader: wrong text embeddings, caught by the kit
        assert st["epNote"].startswith("on WebGPU its kit cosine was ") and st["epNote"].endswith("running on WASM")
        assert st["epNote"] in gpu["text"]["info"]
    print(f"text encoder on ?ep=webgpu (SwiftShader): runs on {st['ep']} ({st['epNote'] or 'kit agrees'})")
    (typed,) = gpu["textQueries"]
    assert "error" not in typed["result"] and len(typed["results"]) == 5
