"""ExecuTorch target: a tiny random-init student lowered to XNNPACK (fp32 and int8), run by the ExecuTorch runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cosine, smooth_images

from ammkd.bundle.backends import ExecuTorchImageEncoder
from ammkd.common.errors import BundleError, ConfigError, ExportError
from ammkd.distill.student import create_student
from ammkd.export.executorch_export import EXECUTORCH_QUANTIZATIONS, export_executorch

SIZE = 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    student = create_student("ammkd-mnv3-small-050", 64, image_size=SIZE).eval()
    root = tmp_path_factory.mktemp("executorch")
    fp32 = export_executorch(student, SIZE, root / "fp32.pte")
    int8 = export_executorch(student, SIZE, root / "int8.pte", "int8", calibration=smooth_images(16, SIZE, seed=1))
    return {"student": student, "root": root, "fp32": fp32, "int8": int8}


def reference(student, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return student(torch.from_numpy(x)).numpy()


def test_fp32_program_matches_pytorch(exported):
    x = smooth_images(8, SIZE, seed=2)
    enc = ExecuTorchImageEncoder(exported["root"] / "fp32.pte")
    got = enc.embed(x)
    assert got.shape == (8, 64) and got.dtype == np.float32
    assert cosine(reference(exported["student"], x), got).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(enc.embed(x[3:4])[0], got[3], atol=1e-6)  # batch-1 program: batching is a loop
    info = exported["fp32"]
    assert info["backend"] == "xnnpack" and info["delegates"] == ["XnnpackBackend"]
    assert info["delegated_ops"] > 50 and info["delegated_ops"] > 10 * info["portable_ops"]
    assert info["portable_ops"] == sum(info["ops_outside_delegate"].values())


def test_int8_program_is_close_and_about_a_quarter_of_fp32(exported):
    x = smooth_images(8, SIZE, seed=3)
    got = ExecuTorchImageEncoder(exported["root"] / "int8.pte").embed(x)
    assert cosine(reference(exported["student"], x), got).min() >= 0.99  # measured 0.99998 (seed 0)
    fp32_bytes = (exported["root"] / "fp32.pte").stat().st_size
    int8_bytes = (exported["root"] / "int8.pte").stat().st_size
    assert int8_bytes < 0.4 * fp32_bytes
    assert exported["int8"]["delegated_ops"] > 0


def test_program_loads_from_bytes_and_leaves_no_temp_files(exported):
    data = (exported["root"] / "fp32.pte").read_bytes()
    x = smooth_images(2, SIZE, seed=4)
    got = ExecuTorchImageEncoder(data, name="bundle/image_encoder.pte").embed(x)
    assert cosine(reference(exported["student"], x), got).min() >= 0.999
    assert sorted(p.name for p in exported["root"].iterdir()) == ["fp32.pte", "int8.pte"]


def test_bad_quantization_options_are_config_errors(exported, tmp_path):
    with pytest.raises(ConfigError, match="none, int8"):
        export_executorch(exported["student"], SIZE, tmp_path / "m.pte", quantize="int4")
    with pytest.raises(ConfigError, match="calibration images"):
        export_executorch(exported["student"], SIZE, tmp_path / "m.pte", quantize="int8")
    with pytest.raises(ConfigError, match=r"\(N, 3, 64, 64\)"):
        export_executorch(
            exported["student"], SIZE, tmp_path / "m.pte", "int8", calibration=smooth_images(2, SIZE, 0)[:, :1]
        )
    assert EXECUTORCH_QUANTIZATIONS == ("none", "int8")
    assert not list(tmp_path.iterdir())


def test_export_failure_is_a_quiet_export_error_and_writes_nothing(tmp_path, capfd):
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # control flow on a value: torch.export cannot trace it

    with pytest.raises(ExportError, match="ExecuTorch export"):
        export_executorch(DataDependent(), 8, tmp_path / "m.pte")
    assert not list(tmp_path.iterdir())
    assert capfd.readouterr().err == ""  # torch.export's partial-graph dump is not for users


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:30], "truncated"),
        (lambda data: np.random.default_rng(0).bytes(len(data)), "not an ExecuTorch program"),
        (lambda data: data[:4] + b"ET99" + data[8:], "format ET99"),
        (lambda data: data[:40] + np.random.default_rng(0).bytes(len(data) - 40), "cannot load"),
    ],
    ids=["half", "header-only", "garbage", "other-version", "corrupt-body"],
)
def test_damaged_program_is_a_bundle_error_naming_the_file(exported, tmp_path, damage, message):
    bad = tmp_path / "image_encoder.pte"
    bad.write_bytes(damage((exported["root"] / "fp32.pte").read_bytes()))
    with pytest.raises(BundleError, match=message) as e:
        ExecuTorchImageEncoder(bad)
    assert str(bad) in str(e.value)


def test_missing_program_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="missing.pte"):
        ExecuTorchImageEncoder(tmp_path / "missing.pte")


def test_wrong_input_shape_is_a_clear_error(exported):
    enc = ExecuTorchImageEncoder(exported["root"] / "fp32.pte")
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        enc.embed(np.zeros((1, 3, 32, 32), np.float32))


def test_thread_pool_cannot_be_resized_under_a_loaded_program(exported):
    import executorch.extension.pybindings.portable_lib as et_lib

    ExecuTorchImageEncoder(exported["root"] / "fp32.pte")
    with pytest.raises(ConfigError, match="process-wide"):
        ExecuTorchImageEncoder(exported["root"] / "fp32.pte", threads=et_lib._threadpool_get_thread_count() + 1)


def test_core_ml_delegate_is_lowered_and_described(pipeline, tmp_path):
    import sys

    from ammkd.bundle.backends import open_image_encoder
    from ammkd.bundle.format import BundleReader
    from ammkd.common.errors import BundleError
    from ammkd.export.exporter import ExportConfig, export_bundle
    from ammkd.mobile_runtime.verify import verify_bundle

    cfg = ExportConfig(target="onnx,executorch", executorch_delegate="coreml", parity_images=4)
    bundle = BundleReader.open(export_bundle(pipeline["student"], tmp_path / "b", cfg))
    et = bundle.target("image_encoder", "executorch")
    assert et["details"]["backend"] == "coreml" and et["details"]["delegates"] == ["CoreMLBackend"]
    assert et["details"]["delegated_ops"] > 20 and et["dtype"] == "float16"
    assert bundle.read_bytes(et["file"])[4:8] == b"ET12"
    if sys.platform != "darwin":
        assert "macOS" in et["parity"]["skipped"]
        with pytest.raises(BundleError, match="Core ML delegate runs only on macOS"):
            open_image_encoder(bundle, "executorch")
        assert open_image_encoder(bundle)[1]["format"] == "onnx"  # auto: what this host runs
        rows = {r["target"]: r for r in verify_bundle(bundle.root)["targets"]}
        assert rows["executorch/none"]["status"] == "skipped" and rows["onnx/none"]["status"] == "ok"
    with pytest.raises(ConfigError, match="not offered"):
        ExportConfig(target="executorch", quantize="int8", executorch_delegate="coreml").plan()
    with pytest.raises(ConfigError, match="unknown ExecuTorch delegate"):
        ExportConfig(target="executorch", executorch_delegate="vulkan").plan()
