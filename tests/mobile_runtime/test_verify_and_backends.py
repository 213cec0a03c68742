"""`ammkd verify` and backend choice: the golden pairs through every runtime a bundle holds."""

import json
import shutil
import sys

import numpy as np
import pytest
from conftest import run_cli

from ammkd.bundle.backends import open_image_encoder
from ammkd.bundle.format import BundleReader, listed_files
from ammkd.common.errors import BundleError, ConfigError
from ammkd.common.files import sha256_file
from ammkd.export.mil_reference import mil_reference_predict
from ammkd.mobile_runtime.retriever import Retriever
from ammkd.mobile_runtime.verify import verify_bundle


def test_verify_runs_every_backend_present(full_bundle):
    report = verify_bundle(full_bundle, coreml_reference=mil_reference_predict)
    rows = {r["target"]: r for r in report["targets"]}
    manifest = BundleReader.open(full_bundle).manifest
    assert set(rows) == {f"{t['format']}/{t['quantization']}" for t in manifest["targets"]}
    assert all(p["ok"] and p["max_abs_diff"] <= 1e-6 for p in report["preprocess"])
    for name in ("onnx/none", "ort/none", "executorch/none"):
        assert rows[name]["status"] == "ok" and rows[name]["cosine_min"] >= 0.999, rows[name]
        assert rows[name]["top1_agreement"] == 1.0
    if sys.platform != "darwin":
        coreml = rows["coreml/none"]  # no Core ML runtime: its MIL program through the reference evaluator
        assert coreml["status"] == "ok" and coreml["evaluator"].startswith("mil-reference"), coreml
        assert coreml["cosine_min"] >= 0.995 and coreml["top1_agreement"] == 1.0
    for r in rows.values():  # int8 may miss on this tiny student: the status follows its bound
        if "cosine_min" in r:
            exact_top1 = not r["target"].endswith("/none") or r["top1_agreement"] == 1.0
            assert (r["status"] == "ok") == (r["cosine_min"] >= r["cosine_bound"] and exact_top1), r
    assert report["ok"] == all(r["status"] != "failed" for r in rows.values())
    assert len(report["files"]) == len(listed_files(manifest)) > 10 and all(f["ok"] for f in report["files"])


def _rewrite_golden_embedding(bundle, transform):
    m = json.loads((bundle / "manifest.json").read_text())
    entry = m["golden"][0]["embedding"]
    p = bundle / entry["path"]
    p.write_bytes(transform(np.frombuffer(p.read_bytes(), "<f4")).astype("<f4").tobytes())
    entry["sha256"] = sha256_file(p)
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_verify_fails_on_a_wrong_golden_output_and_the_command_exits_1(pipeline, tmp_path):
    bundle = shutil.copytree(pipeline["bundle"], tmp_path / "bundle")
    proc = run_cli("verify", "--bundle", str(bundle), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True
    _rewrite_golden_embedding(bundle, lambda e: np.roll(e, 1))  # hashes re-signed: only the numbers are wrong
    report = verify_bundle(bundle)
    assert not report["ok"]
    assert {r["target"]: r["status"] for r in report["targets"]} == {"onnx/none": "failed", "ort/none": "failed"}
    proc = run_cli("verify", "--bundle", str(bundle))
    assert proc.returncode == 1 and "verification failed" in proc.stdout


def _flip(p):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


def _into_directory(p):
    p.unlink()
    p.mkdir()


def _into_symlink(p):
    copy = p.with_name(p.name + ".copy")
    shutil.copyfile(p, copy)
    p.unlink()
    p.symlink_to(copy.name)  # same bytes, but a link


@pytest.mark.parametrize("rel", ["index/texts.json", "index/class_vectors.faiss"])
@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_flip, "SHA-256 does not match"),
        (lambda p: p.write_bytes(p.read_bytes()[:-5]), "truncated or replaced"),
        (lambda p: p.unlink(), "missing from the bundle"),
        (_into_directory, "missing from the bundle"),
        (_into_symlink, "a symbolic link"),
    ],
)
def test_verify_checks_every_listed_file(pipeline, tmp_path, rel, damage, reason):
    bundle = shutil.copytree(pipeline["bundle"], tmp_path / "bundle")
    damage(bundle / rel)
    report = verify_bundle(bundle)
    bad = [f for f in report["files"] if not f["ok"]]
    assert not report["ok"] and [f["path"] for f in bad] == [rel] and reason in bad[0]["reason"]
    if damage is _into_symlink and rel.endswith(".faiss"):  # the command, once: exit 1 and the reason
        proc = run_cli("verify", "--bundle", str(bundle))
        assert proc.returncode == 1 and "verification failed" in proc.stdout
        assert reason in " ".join(proc.stdout.split())


def test_backend_choice(full_bundle, pipeline):
    reader = BundleReader.open(full_bundle)
    for backend in ("onnx", "ort", "executorch"):
        encoder, target = open_image_encoder(reader, backend)
        assert target["format"] == backend and target["quantization"] == "none"
    _, target = open_image_encoder(reader, "executorch", "int8")
    assert target["quantization"] == "int8"
    assert open_image_encoder(reader)[1]["format"] == "onnx"  # auto: ONNX first
    golden = reader.manifest["golden"][0]
    image = reader.path(golden["image"])
    a = Retriever.open(full_bundle, backend="executorch").top_texts(image, 5)
    b = Retriever.open(full_bundle, backend="onnx").top_texts(image, 5)
    assert [h.id for h in a] == [h.id for h in b] == golden["topk_ids"]
    with pytest.raises(ConfigError, match="unknown backend 'tflite'"):
        open_image_encoder(reader, "tflite")
    only_onnx = BundleReader.open(pipeline["bundle"])
    with pytest.raises(BundleError, match=r"no executorch image encoder .*has: \['onnx/none', 'ort/none'\]"):
        open_image_encoder(only_onnx, "executorch")
    if sys.platform != "darwin":
        with pytest.raises(BundleError, match="Core ML runs only on macOS"):
            open_image_encoder(reader, "coreml")


def test_a_bundle_without_its_fp32_encoder_opens_the_most_precise_one_it_has(full_bundle, tmp_path):
    """The gate may leave the unquantized encoder out (left_out); readers then take what is left."""
    copy = tmp_path / "bundle"
    shutil.copytree(full_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["targets"] = [t for t in manifest["targets"] if t["quantization"] != "none"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    for backend in ("auto", "onnx", "executorch"):
        _, target = open_image_encoder(BundleReader.open(copy), backend)
        assert target["quantization"] == "int8", backend
    with pytest.raises(BundleError, match=r"no onnx image encoder with quantization none"):
        open_image_encoder(BundleReader.open(copy), "onnx", "none")


def test_retriever_search_kinds_agree_with_the_exact_scan(pipeline):
    reader = BundleReader.open(pipeline["bundle"])
    image = reader.path(reader.manifest["golden"][0]["image"])
    exact = [h.id for h in Retriever.open(pipeline["bundle"], search="exact").top_texts(image, 5)]
    assert exact == reader.manifest["golden"][0]["topk_ids"]
    for kind in ("auto", "flat", "hnsw"):
        assert [h.id for h in Retriever.open(pipeline["bundle"], search=kind).top_texts(image, 5)] == exact, kind
