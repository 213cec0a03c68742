"""Core ML target: a tiny random-init student converted by the real coremltools (no mocks).

Linux cannot run Core ML, so the packages are checked by reading their specs and by evaluating
the saved MIL programs with the PyTorch reference evaluator; the Core ML parity test runs on macOS.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import smooth_images

from ammkd.bundle.coreml_package import describe_coreml, predict_coreml
from ammkd.common.errors import BundleError, ConfigError, ExportError
from ammkd.distill.student import create_student
from ammkd.export.coreml_export import COREML_QUANTIZATIONS, COREML_TARGETS, export_coreml
from ammkd.export.mil_reference import coreml_numeric_check, mil_reference_predict

SIZE = 64
DIM = 64


def smooth_images_u8(n: int, seed: int) -> np.ndarray:
    """(n, 3, SIZE, SIZE) uint8: random 8x8 colour fields upsampled, closer to photos than noise."""
    return (smooth_images(n, SIZE, seed) * 255).round().astype(np.uint8)


def make_student(seed: int):
    torch.manual_seed(seed)
    student = create_student("ammkd-mnv3-small-050", DIM, image_size=SIZE).eval()
    with torch.no_grad():  # at random init the head bias dominates and every image embeds alike
        student.head.bias.zero_()
    return student


def reference(student, images_u8: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return student(torch.from_numpy(images_u8.astype(np.float32) / 255.0)).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One conversion per variant: fp16/iOS16, fp32, int8/iOS18, palettize4/iOS17."""
    student = make_student(0)
    spec = student.arch.input_spec
    root = tmp_path_factory.mktemp("coreml")
    variants = {
        "fp16": ("none", "fp16", "iOS16"),
        "fp32": ("none", "fp32", "iOS16"),
        "int8": ("int8", "fp16", "iOS18"),
        "palettize4": ("palettize4", "fp16", "iOS17"),
    }
    infos = {
        name: export_coreml(student, spec, root / f"{name}.mlpackage", quantize=q, precision=p, min_target=t)
        for name, (q, p, t) in variants.items()
    }
    return {"student": student, "spec": spec, "root": root, "info": infos}


def test_fp16_package_spec(exported):
    info = exported["info"]["fp16"]
    described = describe_coreml(exported["root"] / "fp16.mlpackage")
    assert info == {**described, "quantization": "none", "precision": "fp16", "min_target": "iOS16"}
    assert info["model_type"] == "mlProgram" and info["spec_version"] == 7
    assert info["min_target"] == "iOS16" and info["metadata"]["ammkd.min_target"] == "iOS16"
    assert info["inputs"] == [{"name": "image", "type": "image", "shape": [1, 3, SIZE, SIZE], "color_layout": "RGB"}]
    assert info["outputs"] == [{"name": "embedding", "shape": [1, DIM], "dtype": "float32"}]
    ops = info["ops"]
    assert ops["conv"] >= 10 and ops["linear"] == 1
    assert ops["sub"] >= 1 and ops["mul"] >= 1  # /255 scale and mean/std inside the graph
    assert ops["reduce_sum"] == 1 and ops["rsqrt"] == 1  # the L2 norm
    assert set(info["weight_dtypes"]) == {"float16"} and info["weight_dtypes"]["float16"] > 50
    assert info["metadata"]["ammkd.embed_dim"] == str(DIM)


def test_packages_hold_only_what_their_manifest_lists(exported):
    """Issue 20 item 16: no stray `executorch_debug_handle_mapping.json` beside the package."""
    for name in exported["info"]:
        package = exported["root"] / f"{name}.mlpackage"
        listed = json.loads((package / "Manifest.json").read_text())["itemInfoEntries"].values()
        roots = {package / "Data" / item["path"] for item in listed}
        for f in package.rglob("*"):
            if f.is_file() and f.name != "Manifest.json" or f.parent == package and f.name != "Data":
                assert f.name == "Manifest.json" or any(f == r or r in f.parents for r in roots), f


def test_fp16_package_keeps_the_l2_norm_in_fp32(exported):
    """Small head outputs squared underflow fp16; the norm after the last linear layer runs in fp32."""
    import coremltools as ct
    from coremltools.proto import MIL_pb2

    spec = ct.utils.load_spec(str(exported["root"] / "fp16.mlpackage"))
    main = spec.mlProgram.functions["main"]
    dtypes = {}
    for op in main.block_specializations[main.opset].operations:
        dtypes.setdefault(op.type, set()).add(MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType))
    assert dtypes["rsqrt"] == dtypes["reduce_sum"] == {"FLOAT32"}
    assert dtypes["conv"] == dtypes["linear"] == {"FLOAT16"}


def test_fp32_precision_keeps_fp32_weights(exported):
    info = exported["info"]["fp32"]
    assert set(info["weight_dtypes"]) == {"float32"} and info["precision"] == "fp32"
    assert info["package_bytes"] > 1.7 * exported["info"]["fp16"]["package_bytes"]


def test_int8_and_palettized_packages_are_smaller(exported):
    fp16, int8, pal4 = (exported["info"][k] for k in ("fp16", "int8", "palettize4"))
    assert int8["spec_version"] == 9 and int8["min_target"] == "iOS18"
    assert int8["weight_dtypes"].get("int8", 0) >= 20 and int8["ops"]["constexpr_blockwise_shift_scale"] >= 20
    assert pal4["spec_version"] == 8 and pal4["ops"]["constexpr_lut_to_dense"] >= 20
    assert pal4["palette_bits"] == {4: pal4["ops"]["constexpr_lut_to_dense"]}
    assert int8["package_bytes"] < 0.7 * fp16["package_bytes"]
    assert pal4["package_bytes"] < 0.75 * int8["package_bytes"]


def test_reference_evaluation_matches_pytorch(exported):
    """The saved MIL programs, evaluated on Linux, embed images as PyTorch does (quantisation bounded)."""
    student, root = exported["student"], exported["root"]
    images = smooth_images_u8(6, seed=2)
    bounds = {"fp32": 0.99999, "fp16": 0.9995, "int8": 0.999, "palettize4": 0.9}
    for name, bound in bounds.items():
        check = coreml_numeric_check(student, root / f"{name}.mlpackage", images)
        assert check["n"] == 6 and check["cosine_min"] >= bound, (name, check)
    got = mil_reference_predict(root / "fp16.mlpackage", images)
    assert got.shape == (6, DIM) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # L2 norm kept in fp32
    ref = reference(student, images)
    assert (ref @ ref.T).min() < 0.95  # images embed differently, so the cosine bounds mean something
    other = coreml_numeric_check(make_student(1), root / "fp16.mlpackage", images)
    assert other["cosine_mean"] < 0.5  # a different model's package fails the check


def test_vit_student_converts_and_evaluates(tmp_path):
    """The transformer preset: layer_norm/matmul/softmax/gelu/split in the program and in the evaluator."""
    torch.manual_seed(0)
    student = create_student("ammkd-vit-tiny", DIM, image_size=SIZE).eval()
    with torch.no_grad():
        student.head.bias.zero_()
    info = export_coreml(student, student.arch.input_spec, tmp_path / "vit.mlpackage")
    assert {"layer_norm", "matmul", "softmax", "gelu"} <= set(info["ops"])
    check = coreml_numeric_check(student, tmp_path / "vit.mlpackage", smooth_images_u8(2, seed=5))
    assert check["cosine_min"] >= 0.9995, check


def test_efficientnet_lite_student_pads_like_tensorflow(tmp_path):
    """TF "same" padding (EfficientNet-Lite, pretrained students) becomes MIL `pad` ops: the
    evaluator must run them, or a pretrained student's Core ML parity cannot be measured."""
    torch.manual_seed(0)
    student = create_student("tf_efficientnet_lite0", DIM, image_size=SIZE).eval()
    info = export_coreml(student, student.arch.input_spec, tmp_path / "lite0.mlpackage")
    assert "pad" in info["ops"]
    check = coreml_numeric_check(student, tmp_path / "lite0.mlpackage", smooth_images_u8(2, seed=5))
    assert check["cosine_min"] >= 0.999, check


def test_reference_evaluation_accepts_an_mlmodel(exported):
    import coremltools as ct

    path = exported["root"] / "int8.mlpackage"
    images = smooth_images_u8(2, seed=3)
    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    np.testing.assert_array_equal(mil_reference_predict(mlmodel, images), mil_reference_predict(path, images))


def test_bad_options_raise_config_error(exported, tmp_path):
    student, spec = exported["student"], exported["spec"]
    path = tmp_path / "x.mlpackage"
    with pytest.raises(ConfigError, match="quantize 'int4'.*" + ", ".join(COREML_QUANTIZATIONS)):
        export_coreml(student, spec, path, quantize="int4")
    with pytest.raises(ConfigError, match="precision 'bf16'.*fp16, fp32"):
        export_coreml(student, spec, path, precision="bf16")
    with pytest.raises(ConfigError, match="min_target 'iOS15'.*" + ", ".join(COREML_TARGETS)):
        export_coreml(student, spec, path, min_target="iOS15")
    with pytest.raises(ConfigError, match="contradicts precision 'fp32'"):
        export_coreml(student, spec, path, quantize="fp16", precision="fp32")
    with pytest.raises(ConfigError, match="normalization_in_graph"):
        export_coreml(student, replace(spec, normalization_in_graph=False), path)
    with pytest.raises(ConfigError, match=r"must end in \.mlpackage"):
        export_coreml(student, spec, tmp_path / "x.mlmodel")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_existing_path_is_refused_and_no_temp_folders_remain(exported):
    root = exported["root"]
    with pytest.raises(ExportError, match="fp16.mlpackage: already exists"):
        export_coreml(exported["student"], exported["spec"], root / "fp16.mlpackage")
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{k}.mlpackage" for k in exported["info"])


def test_corrupt_packages_raise_bundle_error(exported, tmp_path):
    good = exported["root"] / "int8.mlpackage"

    truncated = tmp_path / "truncated.mlpackage"
    shutil.copytree(good, truncated)
    spec_file = truncated / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec_file.write_bytes(spec_file.read_bytes()[: spec_file.stat().st_size // 3])
    with pytest.raises(BundleError, match=f"{truncated}: (unreadable Core ML package|.*incomplete)"):
        describe_coreml(truncated)

    weights = tmp_path / "weights.mlpackage"
    shutil.copytree(good, weights)
    blob = weights / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    with pytest.raises(BundleError, match=f"{weights}: Data/com.apple.CoreML/weights/weight.bin is truncated"):
        describe_coreml(weights)

    random_dir = tmp_path / "random.mlpackage"
    random_dir.mkdir()
    (random_dir / "notes.txt").write_text("not a model")
    with pytest.raises(BundleError, match=f"{random_dir}: not a Core ML package"):
        describe_coreml(random_dir)
    with pytest.raises(BundleError, match="missing.mlpackage: not a Core ML package folder"):
        describe_coreml(tmp_path / "missing.mlpackage")
    with pytest.raises(BundleError, match="unreadable Core ML package"):
        mil_reference_predict(truncated, smooth_images_u8(1, seed=0))


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS error")
def test_predict_needs_macos(exported):
    with pytest.raises(ExportError, match="Core ML prediction needs macOS"):
        predict_coreml(exported["root"] / "fp16.mlpackage", smooth_images_u8(1, seed=0))


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML prediction needs macOS")
def test_coreml_prediction_matches_pytorch(exported):
    images = smooth_images_u8(8, seed=4)
    ref = reference(exported["student"], images)
    for name in ("fp16", "fp32", "int8"):
        got = predict_coreml(exported["root"] / f"{name}.mlpackage", images)
        assert got.shape == (8, DIM) and got.dtype == np.float32
        cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
        assert cos.min() >= 0.995, (name, cos)
