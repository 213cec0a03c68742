import json

import numpy as np
import pytest
import torch
from conftest import TINY_DATA

from ammkd.common.errors import ExportError
from ammkd.distill.data import image_tensor, load_split
from ammkd.distill.train import load_student
from ammkd.export.bundle import ExportConfig, export_bundle
from ammkd.export.bundle_format import BundleReader, validate_manifest
from ammkd.mobile_runtime.preprocess import uint8_to_input
from ammkd.mobile_runtime.retriever import Retriever
from ammkd.mobile_runtime.search import topk


def test_manifest_is_complete_and_valid(pipeline):
    bundle = BundleReader.open(pipeline["bundle"])
    m = bundle.manifest
    validate_manifest(m)
    target = bundle.target("image_encoder", "onnx")
    assert target["parity"]["cosine_min"] >= 0.999 and target["parity"]["top1_agreement"] >= 0.95
    assert m["input"]["normalization_in_graph"] and m["output"]["normalized"]
    assert m["index"]["vectors"]["dtype"] == "float16"
    assert m["index"]["vectors"]["shape"] == [m["index"]["count"], m["output"]["dim"]]
    for entry in [target["file"], m["index"]["vectors"], m["index"]["texts"], m["index"]["faiss"]]:
        bundle.path(entry)  # exists, size and SHA-256 match
    assert not any(p.suffix in (".pkl", ".npz") for p in pipeline["bundle"].rglob("*"))


def test_onnx_top1_matches_pytorch_on_heldout_images(pipeline):
    """Every held-out image retrieves the same top-1 text through the bundle as through PyTorch."""
    student, _ = load_student(pipeline["student"])
    r = Retriever.open(pipeline["bundle"])
    data = load_split(TINY_DATA, "val")
    u8, data, _ = image_tensor(data, r.bundle.input_spec)
    x = uint8_to_input(u8, r.bundle.input_spec)
    with torch.no_grad():
        ref = student(torch.from_numpy(x)).numpy()
    got = r.encoder.embed(x)
    cos = (ref * got).sum(1)
    assert cos.min() > 0.999
    agree = [topk(a, r.index, 1)[0][0] == topk(b, r.index, 1)[0][0] for a, b in zip(ref, got)]
    assert np.mean(agree) >= 0.95


def test_golden_pairs_reproduce_through_the_runtime(pipeline):
    r = Retriever.open(pipeline["bundle"])
    for g in r.bundle.manifest["golden"]:
        x = r.bundle.read_array(g["input"])
        emb = r.encoder.embed(x)[0]
        expected = r.bundle.read_array(g["embedding"])
        assert float(emb @ expected) > 0.9999
        from_png = r.embed(r.bundle.path(g["image"]))  # preprocessing from the PNG gives the same tensor
        assert float(from_png @ expected) > 0.9999
        assert [h.id for h in r.search_embedding(emb, len(g["topk_ids"]))] == g["topk_ids"]


def test_parity_gate_failure_leaves_no_bundle(pipeline, tmp_path):
    out = tmp_path / "strict"
    with pytest.raises(ExportError, match="parity gate failed"):
        export_bundle(pipeline["student"], out, ExportConfig(min_cosine=1.5, parity_images=4))
    assert not out.exists() and not list(tmp_path.glob(".strict*"))
    export_bundle(pipeline["student"], out, ExportConfig(min_cosine=1.5, parity_images=4, allow_degraded=True))
    assert json.loads((out / "manifest.json").read_text())["targets"][0]["parity"]["images"] == 4


def test_export_never_destroys_what_is_not_a_bundle(pipeline, tmp_path):
    with pytest.raises(ExportError, match="may not be the student folder"):
        export_bundle(pipeline["student"], pipeline["student"])
    with pytest.raises(ExportError, match="may not be the student folder"):
        export_bundle(pipeline["student"], pipeline["student"].parent)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a bundle"):
        export_bundle(pipeline["student"], precious)
    assert (precious / "notes.txt").read_text() == "keep me"
