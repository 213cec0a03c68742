import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_DATA

from ammkd.common.errors import ConfigError, ExportError
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
    for cfg, why in (({}, "every artifact missed"), ({"strict": True}, "--strict")):
        with pytest.raises(ExportError, match=f"parity gate failed.*{why}"):
            export_bundle(pipeline["student"], out, ExportConfig(min_cosine=1.5, parity_images=4, **cfg))
        assert not out.exists() and not list(tmp_path.glob(".strict*"))
    export_bundle(pipeline["student"], out, ExportConfig(min_cosine=1.5, parity_images=4, allow_degraded=True))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["targets"][0]["parity"]["images"] == 4 and "cosine_min" in manifest["parity_misses"][0]
    with pytest.raises(ConfigError, match="pick one"):
        ExportConfig(allow_degraded=True, strict=True).plan()


def _target(tmp_path, fmt, quant, cosine):
    (tmp_path / f"{fmt}.{quant}").write_bytes(b"x")
    parity = {"cosine_min": cosine, "top1_agreement": 1.0}
    entry = {"format": fmt, "quantization": quant, "dtype": "int8", "file": {"path": f"{fmt}.{quant}"}}
    return entry | {"parity": parity}


def test_the_gate_leaves_out_what_misses_keeps_it_with_allow_degraded_and_fails_with_strict(tmp_path):
    """Issue 20 item 14: by default a miss is left out (its file removed, its figures listed)."""
    from ammkd.export.bundle import _apply_gate

    targets = [_target(tmp_path, "onnx", "none", 0.9999), _target(tmp_path, "onnx", "int8", 0.5)]
    results = {f"{t['format']}/{t['quantization']}": (t["dtype"], t["parity"]) for t in targets}
    kept, misses, left_out = _apply_gate(tmp_path, targets, results, ExportConfig())
    assert [t["quantization"] for t in kept] == ["none"] and misses == []
    assert left_out == [
        {
            "target": "onnx/int8",
            "path": "onnx.int8",
            "dtype": "int8",
            "misses": [left_out[0]["misses"][0]],
            "parity": targets[1]["parity"],
        }
    ]
    assert "cosine_min" in left_out[0]["misses"][0] and "0.98" in left_out[0]["misses"][0]
    assert (tmp_path / "onnx.none").exists() and not (tmp_path / "onnx.int8").exists()
    targets[1] = _target(tmp_path, "onnx", "int8", 0.5)
    kept, misses, left_out = _apply_gate(tmp_path, targets, results, ExportConfig(allow_degraded=True))
    assert kept == targets and left_out == [] and "onnx/int8" in misses[0]
    with pytest.raises(ExportError, match="--strict"):
        _apply_gate(tmp_path, targets, results, ExportConfig(strict=True))
    assert (tmp_path / "onnx.int8").exists()


def test_the_readme_export_command_runs_as_written(pipeline, tmp_path):
    """Issue 20 item 14: the README's export command, with only --model and --out pointed at
    the test's student, exits 0; what misses the gate (here a strict cosine bound, so int8
    misses) is left out and listed, and the bundle it leaves verifies."""
    import re
    import shlex

    from conftest import run_cli

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("uv run ammkd export --model runs/s "))
    args = [a for a in shlex.split(line.rstrip("\\"))[3:] if a != "\\"]
    args[args.index("--model") + 1] = str(pipeline["student"])
    args[args.index("--out") + 1] = str(tmp_path / "bundle")
    assert re.search(r"--target all --quantize none,int8", line), line
    config = tmp_path / "export.yaml"
    config.write_text("parity_images: 8\ncalibration_images: 16\nprobe_images: 16\nmin_cosine: 0.99999\n")
    proc = run_cli(*args, "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    shipped = {f"{t['format']}/{t['quantization']}" for t in manifest["targets"]}
    assert "onnx/none" in shipped and manifest["parity_misses"] == []
    for left in manifest["left_out"]:
        assert left["target"] not in shipped and left["misses"]
        said = " ".join(f"left out, missed its parity bound: {left['misses'][0]}".split())
        assert said in " ".join(proc.stdout.split()), proc.stdout
        assert not (tmp_path / "bundle" / left["path"]).exists()
    assert manifest["left_out"], "a cosine bound of 0.99999 leaves static int8 out"
    assert run_cli("verify", "--bundle", str(tmp_path / "bundle")).returncode == 0


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
