"""`ammkd export --target all`: every target and quantization, each through the parity gate,
described by the manifest with hashes, dtypes, sizes and the model's MACs."""

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from ammkd.bundle.format import BundleReader, validate_manifest
from ammkd.common.errors import ConfigError, ExportError
from ammkd.export.exporter import ExportConfig, export_bundle


def test_every_target_and_quantization_is_in_the_manifest(full_bundle):
    bundle = BundleReader.open(full_bundle)
    m = bundle.manifest
    validate_manifest(m)
    got = {(t["format"], t["quantization"]): t for t in m["targets"]}
    for fmt in ("onnx", "ort", "executorch", "coreml"):
        assert {(fmt, "none"), (fmt, "int8")} <= set(got), fmt
    for t in m["targets"]:
        files = t["package"]["files"] if "package" in t else [t["file"]]
        for entry in files:
            bundle.path(entry)  # present, size and SHA-256 as recorded
        assert t["bytes"] == sum(f["bytes"] for f in files) > 0
        p = t["parity"]
        assert p["images"] >= 8 and "i2t_recall_delta" in p and -1 <= p["cosine_min"] <= p["cosine_mean"] <= 1
        missed = any(f"{t['format']}/{t['quantization']} " in miss for miss in m["parity_misses"])
        bound = {"float32": 0.999, "float16": 0.995, "int8": 0.98}[t["dtype"]]
        assert missed == (p["cosine_min"] < bound or p["top1_agreement"] < 0.95), (t["format"], t["quantization"], p)
        if t["dtype"] == "float32":
            assert p["cosine_min"] >= 0.999 and p["top1_agreement"] >= 0.95
    assert got[("coreml", "none")]["parity"]["evaluator"].startswith("mil-reference")
    assert got[("coreml", "none")]["parity"]["cosine_min"] >= 0.995  # fp16 compute
    assert got[("onnx", "int8")]["bytes"] < 0.4 * got[("onnx", "none")]["bytes"]
    assert got[("executorch", "none")]["details"]["delegated_ops"] > 0
    assert got[("onnx", "none")]["details"]["mobile_usability"]["as_is"]  # the checker ran and gave verdicts
    assert m["model"]["params"] > 0 and m["model"]["macs_per_image"] > m["model"]["params"]
    # the training choices travel with the model: student.json's weighting options, in the manifest
    assert m["model"]["weighting"] == "adaptive" and m["model"]["weighting_options"]["tolerance"] == 0.6
    assert bundle.target(fmt="onnx")["quantization"] == "none"  # the unquantized model comes first


def test_a_bundle_of_another_model_is_kept_unless_overwrite(pipeline, tmp_path):
    bundle = shutil.copytree(pipeline["bundle"], tmp_path / "bundle")
    other = tmp_path / "other_student"
    other.mkdir()
    for f in pipeline["student"].iterdir():
        if f.is_file():
            (other / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(other / "student.safetensors"))
    nudged = {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}
    save_file(nudged, str(other / "student.safetensors"))
    before = (bundle / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match="another model.*--overwrite"):
        export_bundle(other, bundle, ExportConfig(parity_images=4))
    assert (bundle / "manifest.json").read_bytes() == before  # untouched
    export_bundle(other, bundle, ExportConfig(parity_images=4, overwrite=True))
    assert (
        json.loads((bundle / "manifest.json").read_text())["model"]["source"] != json.loads(before)["model"]["source"]
    )


def test_re_export_keeps_a_gallery_that_still_fits_and_moves_aside_one_that_does_not(pipeline, tmp_path):
    from conftest import TINY_DATA

    from ammkd.bundle.gallery_format import encoder_id
    from ammkd.distill.data import load_split
    from ammkd.mobile_runtime.gallery import update_gallery
    from ammkd.mobile_runtime.retriever import Retriever

    bundle = shutil.copytree(pipeline["bundle"], tmp_path / "bundle")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        load_split(TINY_DATA, "val").image(i).save(photos / f"{i}.png")
    update_gallery(Retriever.open(bundle), photos)
    embeddings = (bundle / "gallery" / "embeddings.f32.bin").read_bytes()
    recorded = json.loads((bundle / "gallery" / "gallery.json").read_text())["encoder"]

    notices = []
    export_bundle(pipeline["student"], bundle, ExportConfig(parity_images=4), notices.append)  # same target again
    fits = any(encoder_id(t) == recorded for t in BundleReader.open(bundle).manifest["targets"])
    if fits:  # the same encoder bytes: the gallery stays in the bundle
        assert (bundle / "gallery" / "embeddings.f32.bin").read_bytes() == embeddings and "kept" in notices[0]
    else:  # an exporter that is not byte-for-byte deterministic: the gallery must still be somewhere
        assert "moved aside" in notices[0]
        shutil.move(next(tmp_path.glob("bundle.gallery-*")), bundle / "gallery")

    notices.clear()
    export_bundle(pipeline["student"], bundle, ExportConfig(quantize="fp16", parity_images=4), notices.append)
    aside = list(tmp_path.glob("bundle.gallery-*"))
    assert not (bundle / "gallery").exists() and len(aside) == 1 and "moved aside" in notices[0]
    assert (aside[0] / "embeddings.f32.bin").read_bytes() == embeddings  # nothing lost


@pytest.mark.parametrize(
    "target,quantize,message",
    [
        ("tflite", "none", "unknown target"),
        ("onnx", "int4", "unknown quantization"),
        ("executorch", "fp16", "'fp16' is not offered by executorch"),
    ],
)
def test_bad_targets_and_quantizations(pipeline, tmp_path, target, quantize, message):
    with pytest.raises(ConfigError, match=message):
        export_bundle(pipeline["student"], tmp_path / "b", ExportConfig(target=target, quantize=quantize))
    assert not (tmp_path / "b").exists()


def test_all_targets_skip_a_quantization_one_of_them_lacks():
    plan = ExportConfig(target="all", quantize="fp16").plan()
    assert plan == [("onnx", "fp16"), ("coreml", "fp16")]


def test_a_student_folder_without_weights_is_refused(pipeline, tmp_path):
    broken = tmp_path / "no_weights"
    broken.mkdir()
    for f in pipeline["student"].iterdir():
        if f.is_file() and f.name != "student.safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ConfigError, match="student.safetensors: missing"):
        export_bundle(broken, tmp_path / "b")


def test_weight_only_int8_is_int8_sized_with_float_accuracy(pipeline, tmp_path):
    import onnx

    cfg = ExportConfig(quantize="none,int8-weights", parity_images=32, allow_degraded=True)
    bundle = BundleReader.open(export_bundle(pipeline["student"], tmp_path / "b", cfg))
    onnx_targets = {t["quantization"]: t for t in bundle.manifest["targets"] if t["format"] == "onnx"}
    fp32, w8 = onnx_targets["none"], onnx_targets["int8-weights"]
    assert w8["dtype"] == "int8" and w8["session_config"] == {"session.disable_quant_qdq": "1"}
    assert w8["bytes"] < 0.32 * fp32["bytes"], (w8["bytes"], fp32["bytes"])
    # near-float accuracy: the worst image within half the int8 gate's cosine error (0.98), the
    # mean within 0.003 of 1; top-1 among 30 near-tied captions of a tiny student
    parity = w8["parity"]
    assert parity["cosine_min"] >= 0.99 and parity["cosine_mean"] >= 0.997, parity
    assert parity["top1_agreement"] >= 0.8, parity
    graph = onnx.load(str(bundle.path(w8["file"]))).graph
    inits = {i.name: i for i in graph.initializer}
    weights = [n.input[1] for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    dequantized = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    stored_int8 = [w for w in weights if w in dequantized and inits[dequantized[w].input[0]].data_type == 3]
    assert len(stored_int8) >= 0.9 * len(weights)  # all but the smallest (< 64 values) weights are int8
    assert not any(
        w in inits and inits[w].data_type == 1 and len(inits[w].dims) > 1 and int(np.prod(inits[w].dims)) >= 64
        for w in weights
    )
