"""The Kotlin core of the Android app (android_demo/core), run on the JVM by Maven against a
freshly exported bundle and checked against the Python runtime on the same inputs.

This test writes what the Python runtime says (top-k ids and scores of the golden images, its
ONNX Runtime embeddings, preprocessed tensors of extra images of many sizes, modes and
interpolations, gallery rankings for some texts) to a JSON file, runs the Kotlin JUnit tests
with `-Dammkd.bundle=... -Dammkd.expected=...`, and reads back the figures they measured.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_DATA, save_figures
from geometry_cases import geometry_plans
from PIL import Image
from reader_limits import kotlin_limits, schema_maxima

from ammkd.bundle.preprocess import preprocess
from ammkd.bundle.search import topk
from ammkd.distill.data import load_split
from ammkd.distill.text_towers import MINILM_ALIAS, resolve_hf_dir
from ammkd.mobile_runtime.gallery import open_gallery, update_gallery
from ammkd.mobile_runtime.retriever import Retriever

ROOT = Path(__file__).resolve().parents[2]
POM = ROOT / "android_demo" / "core" / "pom.xml"
K = 5
EXTRA = 10  # Python's ranking is written K + EXTRA deep, so the Kotlin side can tell near-ties apart
GALLERY_PHOTOS = 12
MAVEN_TIMEOUT_S = 1800  # the first run downloads Kotlin, ONNX Runtime and JUnit (about 100 MB)

# Bounds the Kotlin tests assert (and that are checked again here from their report).
PREPROCESS_BOUND = 1 / 255 + 1e-6
COSINE_BOUND = 0.999


def _require_jdk_and_maven() -> None:
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"Kotlin core tests skipped: {' and '.join(missing)} not on PATH. To run them, install a JDK 17 "
            "and Maven (e.g. `apt-get install openjdk-17-jdk-headless maven`); .ci/run installs both."
        )


def _photo(rng: np.random.Generator, width: int, height: int, alpha: bool = False) -> Image.Image:
    """A photo-like test image: smooth gradients and blobs, sharp edges and some pixel noise, so
    every resampling tap and every rounding step of the resize shows."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    chans = []
    for c in range(3):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        blob = 255 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (0.3 * max(width, height)) ** 2))
        stripes = 60 * (np.sin(x * rng.uniform(0.05, 0.9) + c) > 0)
        chans.append(blob * 0.7 + stripes + (x / max(width - 1, 1)) * 40 + rng.normal(0, 12, size=x.shape))
    img = np.clip(np.stack(chans, -1), 0, 255).round().astype(np.uint8)
    if alpha:
        a = np.clip(255 * x / max(width - 1, 1) + rng.normal(0, 20, size=x.shape), 0, 255).astype(np.uint8)
        a[: height // 4] = 0  # fully transparent band
        a[-height // 4 :] = 255  # fully opaque band
        return Image.fromarray(np.dstack([img, a]), "RGBA")
    return Image.fromarray(img, "RGB")


def _preprocess_cases(folder: Path, spec) -> list[dict]:
    """Images of many sizes (down- and upscaling, one side only, tiny, RGBA, grey) with the
    Python runtime's input tensor for each, under the bundle's spec and variants of it."""
    rng = np.random.default_rng(9)
    s = spec.size
    variants = [
        ("down-bicubic", (203, 151), {}),
        ("down-large-bicubic", (1021, 767), {"size": 224}),
        ("portrait-bicubic", (97, 260), {}),  # height shrinks > 2x the width's pixels: vertical pass first
        ("tall-bilinear", (90, 300), {"interpolation": "bilinear"}),
        ("up-bicubic", (37, 29), {}),
        ("height-only", (s, s + 37), {}),
        ("width-only", (s + 41, s), {}),
        ("one-pixel", (1, 1), {}),
        ("thin", (3, 200), {}),
        ("down-bilinear", (301, 173), {"interpolation": "bilinear"}),
        ("up-bilinear", (45, 50), {"interpolation": "bilinear"}),
        ("down-nearest", (301, 173), {"interpolation": "nearest"}),
        ("up-nearest", (31, 47), {"interpolation": "nearest"}),
        ("rgba-bicubic", (120, 80), {"alpha": True}),
        ("grey-bicubic", (150, 90), {"grey": True}),
        (
            "normalised-outside-graph",
            (130, 110),
            {
                "normalization_in_graph": False,
                "value_range": (-1.0, 1.0),
                "mean": (0.5, 0.4, 0.3),
                "std": (0.2, 0.25, 0.3),
            },
        ),
    ]
    cases = []
    for name, (w, h), opts in variants:
        opts = dict(opts)
        alpha, grey = opts.pop("alpha", False), opts.pop("grey", False)
        case_spec = replace(spec, **opts)
        img = _photo(rng, w, h, alpha=alpha)
        if grey:
            img = img.convert("L")
        png = folder / f"{name}.png"
        img.save(png)
        x = preprocess(png, case_spec)
        assert x.shape == (1, 3, case_spec.size, case_spec.size)
        raw = folder / f"{name}.f32.bin"
        raw.write_bytes(np.ascontiguousarray(x, "<f4").tobytes())
        cases.append({"name": name, "png": str(png), "input": str(raw), "spec": case_spec.to_dict()})
    return cases


def _device_gallery(bundle: Path, work: Path) -> dict:
    """A photo folder with unreadable and ignored files among the photos, a copy of the bundle
    (without a gallery) for the Kotlin core to embed it into, and the gallery the Python runtime
    makes from the same folder (in another copy) to compare with."""
    photos = work / "device_photos"
    (photos / "trip").mkdir(parents=True)
    data = load_split(TINY_DATA, "val")
    for i in range(5):
        data.image(GALLERY_PHOTOS + i).save(photos / f"p{i}.png")
    data.image(GALLERY_PHOTOS + 5).save(photos / "trip" / "nested.png")
    data.image(GALLERY_PHOTOS + 6).save(photos / ".hidden.png")  # hidden: not a gallery photo
    (photos / "notes.txt").write_text("not a photo")  # no image suffix: not listed
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG" * 10)
    (photos / "empty.png").write_bytes(b"")
    device_bundle = shutil.copytree(bundle, work / "device_bundle", ignore=shutil.ignore_patterns("gallery"))
    py_bundle = shutil.copytree(device_bundle, work / "python_gallery_bundle")
    update = update_gallery(Retriever.open(py_bundle, backend="onnx", threads=1, search="exact"), photos)
    rows = work / "python_gallery_rows.f32.bin"
    rows.write_bytes(np.ascontiguousarray(update.gallery.embeddings, "<f4").tobytes())
    return {
        "bundle": str(device_bundle),
        "photos": str(photos),
        "python_images": update.gallery.images,
        "python_skipped": [s["path"] for s in update.skipped],
        "python_embeddings": str(rows),
    }


def _expectations(bundle: Path, work: Path) -> dict:
    device_gallery = _device_gallery(bundle, work)
    r = Retriever.open(bundle, backend="onnx", threads=1, search="exact")
    golden = []
    for g in r.bundle.manifest["golden"]:
        png = bundle / g["image"]["path"]
        hits = r.top_texts(png, k=K + EXTRA)
        golden.append(
            {
                "image": g["image"]["path"],
                "python_topk_ids": [h.id for h in hits],
                "python_topk_scores": [h.score for h in hits],
                "python_embedding": r.embed(png).astype(float).tolist(),
            }
        )

    # a gallery of val photos, embedded by the Python runtime, searched by a few of the bundle's texts
    photos = _val_photos(work / "photos", GALLERY_PHOTOS)
    gallery = update_gallery(r, photos).gallery
    text_ids = sorted({g["python_topk_ids"][0] for g in golden} | {0, len(r.texts) - 1})
    queries = []
    for tid in text_ids:
        ids, scores = topk(r.index[tid], gallery.embeddings, GALLERY_PHOTOS)
        queries.append(
            {
                "text_id": tid,
                "text": r.texts[tid],
                "python_ids": ids.tolist(),
                "python_images": [gallery.images[i] for i in ids],
                "python_scores": scores.astype(float).tolist(),
            }
        )
    known = r.texts[text_ids[0]]
    cases_dir = work / "cases"
    cases_dir.mkdir()
    return {
        "k": K,
        "golden": golden,
        "preprocess_cases": _preprocess_cases(cases_dir, r.bundle.input_spec),
        "preprocess_bound": PREPROCESS_BOUND,
        "geometry_plans": geometry_plans(),  # [w, h, s, nw, nh, left, top]: Preprocessor.plan must agree
        "cosine_bound": COSINE_BOUND,
        "device_gallery": device_gallery,
        "gallery": {
            "count": len(gallery.images),
            "queries": queries,
            # the device has no text encoder: a text outside the bundle gets the nearest known ones
            "misspelt_text": known[:-2] + "zq" if len(known) > 3 else known + " zq",
            "misspelt_of": known,
            "respaced_text": "  " + known.upper().replace(" ", "   ") + ".",
        },
    }


def test_kotlin_core_agrees_with_the_python_runtime(pipeline, tmp_path):
    _require_jdk_and_maven()
    bundle = shutil.copytree(pipeline["bundle"], tmp_path / "bundle")  # the gallery is added to a copy
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps(_expectations(bundle, tmp_path)))
    report = tmp_path / "kotlin_report.json"
    vocab = resolve_hf_dir(MINILM_ALIAS) / "vocab.txt"  # the vocabulary tests/fixtures/tokenizer_kit.json was made with

    cmd = [
        "mvn", "-q", "-B", "-f", str(POM), "test",
        f"-Dammkd.bundle={bundle}", f"-Dammkd.expected={expected}", f"-Dammkd.report={report}",
        f"-Dammkd.fixtures={ROOT / 'tests' / 'fixtures'}", f"-Dammkd.vocab={vocab}",
    ]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, cwd=ROOT)
    took = time.time() - t0
    output = (proc.stdout + proc.stderr)[-20000:]
    assert proc.returncode == 0, f"Maven/JUnit failed (exit {proc.returncode}) after {took:.0f} s:\n{output}"

    figures = json.loads(report.read_text())
    print(f"Kotlin core, Maven test run {took:.0f} s:\n" + json.dumps(figures, indent=2))
    written = json.loads(expected.read_text())
    assert figures["preprocess_golden_max_abs_diff"] <= PREPROCESS_BOUND
    assert figures["preprocess_cases"] == len(written["preprocess_cases"])
    assert figures["preprocess_cases_max_abs_diff"] <= PREPROCESS_BOUND
    assert figures["geometry_plans"] == len(written["geometry_plans"])
    assert figures["encoder_cosine_min_vs_golden"] >= COSINE_BOUND
    assert figures["topk_golden_images"] == len(written["golden"]) > 0
    assert figures["topk_agreement_exact"] + figures["topk_agreement_near_tie_swaps"] == figures["topk_positions"]
    assert figures["tamper_cases_refused"] == 17  # 7 damaged files, 10 sizes past the bounds (TamperTest.kt)
    assert figures["gallery_queries"] == len(written["gallery"]["queries"])
    fixtures = {n: json.loads((ROOT / "tests" / "fixtures" / f"{n}.json").read_text()) for n in ("topk", "fp16")}
    texts = json.loads((ROOT / "tests" / "fixtures" / "nearest_texts.json").read_text())
    assert figures["fixture_topk_cases"] == len(fixtures["topk"]["cases"])  # FixturesTest.kt ran every case
    assert figures["fixture_fp16_cases"] == len(fixtures["fp16"]["cases"])
    assert figures["fixture_text_cases"] == len(texts["cases"]) + len(texts["normal_forms"])
    plans = json.loads((ROOT / "tests" / "fixtures" / "resize_plans.json").read_text())
    assert figures["fixture_resize_plans"] == len(plans["cases"])
    kit = json.loads((ROOT / "tests" / "fixtures" / "tokenizer_kit.json").read_text())
    assert figures["fixture_tokenizer_cases"] == len(kit["cases"])  # WordPieceTokenizer.kt gave every case's ids
    _check_device_gallery(written["device_gallery"], figures)


def _check_device_gallery(spec: dict, figures: dict) -> None:
    """The gallery the Kotlin core embedded: its figures, then read and extended by the Python tool."""
    assert figures["device_gallery_photos"] == len(spec["python_images"]) == 6
    assert figures["device_gallery_min_cosine_vs_python"] >= COSINE_BOUND
    assert figures["device_gallery_resumed"] is True
    assert sorted(spec["python_skipped"]) == ["broken.jpg", "empty.png"]
    r = Retriever.open(spec["bundle"], backend="onnx", threads=1, search="exact")
    gallery = open_gallery(spec["bundle"])  # format, size and SHA-256 as the Kotlin core wrote them
    assert gallery.images == spec["python_images"]
    assert [s["path"] for s in gallery.manifest["skipped"]] == spec["python_skipped"]
    python_rows = np.frombuffer(Path(spec["python_embeddings"]).read_bytes(), "<f4").reshape(gallery.embeddings.shape)
    cos = (gallery.embeddings * python_rows).sum(1)
    assert cos.min() >= COSINE_BOUND, cos
    # same source, same encoder: the Python tool appends to the Kotlin core's gallery, it does not start afresh
    (Path(spec["photos"]) / "late.png").write_bytes((Path(spec["photos"]) / "p0.png").read_bytes())
    update = update_gallery(r, spec["photos"])
    assert update.added == 1 and update.gallery.images[-1] == "late.png"
    assert np.allclose(update.gallery.embeddings[:-1], gallery.embeddings)


def test_kotlin_limits_are_the_schemas():
    """The Kotlin reader's bounds (Limits.kt) are the manifest schema's maxima: they cannot drift apart."""
    want = schema_maxima()
    have = kotlin_limits()
    assert {k: have.get(k) for k in want} == want


# --- free-text search (the bundle's text side, docs/design.md §5.10) ---------------------------

TEXT_K = 10  # the top-k compared
TEXT_EXTRA = 5  # Python's rankings are written this much deeper, so near-ties can be told apart
TEXT_GALLERY_PHOTOS = 24
TEXT_COSINE_BOUND = 0.9999  # Kotlin (ONNX Runtime Java) vs Python (ONNX Runtime) embedding of one query
NARROW_WIDTH = 8  # the width of a text encoder that does not match the index (refused by the core)
FREE_TEXTS = [
    "a dog running on the beach",
    "two red circles and a blue square",
    "Ein großer Hund läuft über die Wiese",
    "café crème brûlée, naïve façade",
    "我的狗在海滩上 (my dog on the beach)",
    "🐶🏖️ dog on the beach, summer 2023!",
    "  MIXED   case\tand\u3000odd\u00a0spacing  ",
    "Ωμέγα ΣΊΣΥΦΟΣ, ﬁsh ½ and Ⅻ",
    "[CLS] literal [SEP] tokens [PAD] are text",
    " ".join(["a purple square next to a red circle"] * 12),  # far past max_length: truncated
]


def _narrow_text_encoder(path: Path, width: int = NARROW_WIDTH) -> None:
    """An ONNX model with a text encoder's interface (input_ids (B, L) int64 -> text_embedding (B,
    width) unit rows) whose output is narrower than the index: the core must refuse it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, width, dtype=np.float32).reshape(1, width), "w")
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["m", "w"], ["y"]),
        helper.make_node("LpNormalization", ["y"], ["text_embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "narrow_text_encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"])],
        [helper.make_tensor_value_info("text_embedding", TensorProto.FLOAT, ["batch", width])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by older ONNX Runtime builds (the core's Java one too)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _val_photos(folder: Path, n: int) -> Path:
    """`folder` holding the first `n` photos of the tiny data's val split as PNGs."""
    folder.mkdir()
    data = load_split(TINY_DATA, "val")
    for i in range(n):
        data.image(i).save(folder / f"{i:03d}.png")
    return folder


def _text_expectations(bundle: Path, work: Path) -> dict:
    """What the Python runtime says for free-text queries on `bundle` (a copy: a gallery is added):
    per query its token ids, and per text encoder variant its embedding and its top texts of the
    index and top photos of the gallery, with scores (TEXT_K + TEXT_EXTRA deep)."""
    from ammkd.bundle.text_encoder import open_text_side

    r = Retriever.open(bundle, backend="onnx", threads=1, search="exact")
    photos = _val_photos(work / "text_photos", TEXT_GALLERY_PHOTOS)
    gallery = update_gallery(r, photos).gallery
    n = len(r.texts)
    index_texts = [r.texts[0], r.texts[n // 3], r.texts[n - 1]]
    queries = [*index_texts, "  " + r.texts[n // 2].upper() + ".  ", *FREE_TEXTS]
    depth = TEXT_K + TEXT_EXTRA
    side_spec = r.bundle.manifest["text_encoder"]
    variants = {}
    ids = None
    for t in side_spec["targets"]:
        q = t["quantization"]
        side = open_text_side(r.bundle, q)
        if ids is None:
            ids = [side.tokenizer.encode(text) for text in queries]
        rows = []
        for text in queries:
            emb = side.embed(text)
            hits = r.search_embedding(emb, depth)
            g_ids, g_scores = topk(emb, gallery.embeddings, depth)
            rows.append(
                {
                    "embedding": emb.astype(float).tolist(),
                    "index_ids": [h.id for h in hits],
                    "index_scores": [h.score for h in hits],
                    "gallery_ids": g_ids.tolist(),
                    "gallery_scores": g_scores.astype(float).tolist(),
                }
            )
        variants[q] = {"dtype": t["dtype"], "bytes": t["file"]["bytes"], "queries": rows}
    narrow = work / "narrow_text_encoder.onnx"
    _narrow_text_encoder(narrow)
    return {
        "k": TEXT_K,
        "cosine_bound": TEXT_COSINE_BOUND,
        "queries": [{"text": text, "ids": i, "in_index": text in index_texts} for text, i in zip(queries, ids)],
        "variants": variants,
        "gallery": {"count": len(gallery.images), "images": gallery.images},
        "narrow_text_encoder": {"path": str(narrow), "width": NARROW_WIDTH},
    }


def test_kotlin_free_text_search_agrees_with_python(text_pipeline, tmp_path):
    """Free-text search in the Kotlin core (TextSide.kt, OnnxTextEncoder.kt, Retriever.searchTexts /
    topImages) against the Python runtime on a bundle with a text side: identical token ids, fp32
    embeddings within TEXT_COSINE_BOUND, the same top-10 texts and photos, int8 variants close to
    Python's, the refusals, and the text-encode latency of each variant on the JVM."""
    _require_jdk_and_maven()
    bundle = shutil.copytree(text_pipeline["bundle"], tmp_path / "bundle")  # the gallery is added to a copy
    expected = tmp_path / "text_expected.json"
    written = _text_expectations(bundle, tmp_path)
    expected.write_text(json.dumps(written))
    report = tmp_path / "kotlin_text_report.json"
    cmd = [
        "mvn", "-q", "-B", "-f", str(POM), "test", "-Dtest=TextSearchTest", "-Dsurefire.failIfNoSpecifiedTests=false",
        f"-Dammkd.textBundle={bundle}", f"-Dammkd.textExpected={expected}", f"-Dammkd.report={report}",
    ]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, cwd=ROOT)
    took = time.time() - t0
    output = (proc.stdout + proc.stderr)[-20000:]
    assert proc.returncode == 0, f"Maven/JUnit failed (exit {proc.returncode}) after {took:.0f} s:\n{output}"
    assert "text_variants" in report.read_text(), f"TextSearchTest did not run (skipped?):\n{output}"

    figures = json.loads(report.read_text())
    save_figures("kotlin_text_search", figures)
    n, k = len(written["queries"]), TEXT_K
    assert figures["text_queries"] == n
    assert figures["text_token_ids_identical"] == f"{n}/{n}"
    assert figures["text_kit_cases"] > 0
    assert figures["text_fp32_cosine_min_vs_python"] >= TEXT_COSINE_BOUND
    for where in ("index", "gallery"):  # a rank may differ only at a near-tie of Python's scores
        exact = figures[f"text_fp32_{where}_topk_positions_identical"]
        swaps = figures[f"text_fp32_{where}_topk_near_tie_swaps"]
        assert int(exact.split("/")[0]) + swaps == n * k, (where, exact, swaps)
    # TextSearchTest.kt: 9 queries, 5 damaged tokenizer files, 4 models and widths, 1 bundle without a text side
    assert figures["text_cases_refused"] == 19
    variants = sorted(written["variants"])
    assert figures["text_variants"] == variants
    rows = []
    for q in variants:
        v = figures[f"text_variant_{q}"]
        assert v["runs"] == v["queries"] * 10 and v["queries"] == n
        assert 0 < v["min_ms"] <= v["median_ms"] <= v["p90_ms"] <= v["max_ms"], v
        assert 0 < v["tokenize_median_ms"] < v["median_ms"] and v["encode_median_ms"] > 0
        assert len(v["per_query_median_ms"]) == n and min(v["per_query_median_ms"]) > 0
        assert v["model_bytes"] == written["variants"][q]["bytes"]
        assert v["kit_cosine_min"] >= (0.999 if written["variants"][q]["dtype"] == "float32" else 0.95)
        rows.append(
            f"  {q:13s} {v['model_bytes'] / 1e6:6.1f} MB  open {v['open_ms']:6.1f} ms  "
            f"encode median {v['median_ms']:6.2f} ms  p90 {v['p90_ms']:6.2f} ms  "
            f"(tokenize {v['tokenize_median_ms']:.3f} ms)  "
            f"cosine to Python {v['cosine_min_vs_python']:.6f}  top-{k} overlap with Python: "
            f"index {v['index_topk_overlap_vs_python']}, gallery {v['gallery_topk_overlap_vs_python']}; "
            f"with fp32 {v['index_topk_overlap_vs_fp32']}"
        )
    print(
        f"Kotlin core free-text search, Maven test run {took:.0f} s, {n} queries "
        f"(mean {figures['text_variant_none']['mean_tokens']} tokens), 1 thread, {figures['text_latency_machine']}:\n"
        f"  token ids identical {figures['text_token_ids_identical']}; fp32 cosine min "
        f"{figures['text_fp32_cosine_min_vs_python']:.9f}; top-{k} identical: index "
        f"{figures['text_fp32_index_topk_positions_identical']} positions, gallery "
        f"{figures['text_fp32_gallery_topk_positions_identical']} positions\n" + "\n".join(rows)
    )
