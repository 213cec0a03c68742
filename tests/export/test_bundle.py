import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_DATA

from ammkd.bundle.format import BundleReader, InputSpec, validate_manifest
from ammkd.bundle.preprocess import uint8_to_input
from ammkd.bundle.search import topk
from ammkd.common.errors import ConfigError, ExportError
from ammkd.distill.data import load_split
from ammkd.distill.image_tensors import image_tensor
from ammkd.distill.student_folder import load_student
from ammkd.export.exporter import ExportConfig, export_bundle
from ammkd.mobile_runtime.retriever import Retriever


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


def test_golden_images_are_odd_non_square_photos_whose_preprocessing_is_the_golden_input(pipeline):
    """Issue 20 item 15: each golden PNG goes through the resize and the crop (odd sides, not
    square, one landscape and one portrait), its Python preprocessing is the stored input
    tensor exactly, and the manifest states the geometry."""
    from PIL import Image

    from ammkd.bundle.preprocess import preprocess, resize_plan

    bundle = BundleReader.open(pipeline["bundle"])
    spec, s = bundle.input_spec, bundle.input_spec.size
    assert bundle.manifest["input"]["resize_rounding"] == "half_even"
    assert bundle.manifest["input"]["crop_offset"] == "floor"
    sizes = []
    for g in bundle.manifest["golden"]:
        with Image.open(bundle.path(g["image"])) as im:
            w, h = im.size
        sizes.append((w, h))
        assert w % 2 == 1 and h % 2 == 1 and w != h and max(w, h) <= 320, (g["image"]["path"], w, h)
        nw, nh, _, _ = resize_plan(w, h, spec)
        assert (nw, nh) != (w, h) and (nw, nh) != (s, s)  # resized, and cropped
        assert np.array_equal(preprocess(bundle.path(g["image"]), spec), bundle.read_array(g["input"]))
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)


def test_golden_images_tell_the_manifest_geometry_from_torchvision_style_roundings(pipeline):
    """Issue 20 item 15: resizing and cropping a golden PNG by any other reading of "shorter side
    to S, centre crop" (torchvision's int() truncation and round() offset, a half-up offset...)
    gives other pixels than its golden input: the golden pairs test the rule."""
    from geometry_cases import alternative_plans

    from ammkd.bundle.preprocess import _INTERPOLATION, load_rgb, resize_plan, uint8_to_input

    bundle = BundleReader.open(pipeline["bundle"])
    spec, s = bundle.input_spec, bundle.input_spec.size
    for g in bundle.manifest["golden"]:
        img = load_rgb(bundle.path(g["image"]))
        want = bundle.read_array(g["input"])

        def through(plan, img=img):
            nw, nh, left, top = plan
            crop = img.resize((nw, nh), _INTERPOLATION[spec.interpolation]).crop((left, top, left + s, top + s))
            return uint8_to_input(np.asarray(crop, np.uint8).transpose(2, 0, 1), spec)[None]

        assert np.array_equal(through(resize_plan(img.width, img.height, spec)), want)
        for name, plan in alternative_plans(img.width, img.height, s).items():
            assert not np.array_equal(through(plan), want), (g["image"]["path"], name, plan)


def test_a_manifest_without_the_geometry_fields_still_loads_and_verifies(pipeline, tmp_path):
    """Bundles exported before resize_rounding / crop_offset existed mean the same rule."""
    import shutil

    from ammkd.common.errors import BundleError
    from ammkd.mobile_runtime.verify import verify_bundle

    old = shutil.copytree(pipeline["bundle"], tmp_path / "old", ignore=shutil.ignore_patterns("gallery"))
    manifest = json.loads((old / "manifest.json").read_text())
    for key in ("resize_rounding", "crop_offset"):
        del manifest["input"][key]
    (old / "manifest.json").write_text(json.dumps(manifest))
    bundle = BundleReader.open(old)
    assert (bundle.input_spec.resize_rounding, bundle.input_spec.crop_offset) == ("half_even", "floor")
    report = verify_bundle(old)
    assert report["ok"] and all(r["ok"] for r in report["preprocess"])
    manifest["input"]["crop_offset"] = "round"
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="input/crop_offset"):
        BundleReader.open(old)


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
    from ammkd.export.exporter import _apply_gate

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


@pytest.mark.parametrize("size", [64, 224, 384])
def test_golden_sizes_are_odd_capped_and_decided_by_the_geometry(size):
    """Issue 20 item 15, without a bundle: photos of any size and orientation (square synthetic
    images, phone photos, panoramas) give golden sizes with odd sides, the longer at most 320 px,
    landscape for golden 0 and portrait for golden 1, on which every torchvision-style reading of
    the geometry gives another resize or crop than the manifest's."""
    from geometry_cases import alternative_plans
    from PIL import Image

    from ammkd.bundle.preprocess import resize_plan
    from ammkd.export.exporter import GOLDEN_MAX_SIDE, golden_picks, golden_size

    for w, h in [(64, 64), (300, 300), (640, 480), (480, 640), (4032, 3024), (3024, 4032), (5000, 900), (90, 60)]:
        for g in (0, 1, 2, 3):
            gw, gh = golden_size(w, h, g, size)
            assert gw % 2 == 1 and gh % 2 == 1 and max(gw, gh) <= GOLDEN_MAX_SIDE, (w, h, g, gw, gh)
            assert (gw > gh) if g % 2 == 0 else (gh > gw), (w, h, g, gw, gh)
            ours = resize_plan(gw, gh, InputSpec(size=size))
            assert all(plan != ours for plan in alternative_plans(gw, gh, size).values()), (w, h, g, gw, gh)
    photos = [Image.new("RGB", wh) for wh in [(100, 100), (80, 120), (120, 80), (130, 90)]]
    assert golden_picks(photos, 2) == [2, 1] and golden_picks(photos[:1], 2) == [0]
    assert golden_picks(photos, 4) == [2, 1, 3, 0]


def test_parity_and_probe_images_are_held_out_when_the_student_data_names_train(pipeline, tmp_path, monkeypatch):
    """A student trained on `DATA:train` (the Flickr8k benchmark's) is checked on the dataset's
    val split: parity, golden pairs and the int8 search's probes come from val, calibration
    from train. (The gate once measured the training images, calibration images among them.)"""
    import shutil

    import ammkd.export.exporter as bundle_mod

    student = tmp_path / "student"
    shutil.copytree(pipeline["student"], student)
    meta = json.loads((student / "student.json").read_text())
    (student / "student.json").write_text(json.dumps(meta | {"data": f"{TINY_DATA}:train"}))
    calls = []
    real = bundle_mod._images

    def spy(data_spec, split, n, *args, **kw):
        data = load_split(data_spec, split)
        calls.append((data.split, n))
        return real(data_spec, split, n, *args, **kw)

    monkeypatch.setattr(bundle_mod, "_images", spy)
    cfg = ExportConfig(quantize="int8", parity_images=8, calibration_images=8, probe_images=16, allow_degraded=True)
    export_bundle(student, tmp_path / "bundle", cfg)
    assert ("val", 8) in calls and ("val", 8 + 16) in calls and ("train", 8 + 16) in calls
    assert all(split in ("val", "train") for split, _ in calls)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    prefix = next(t for t in manifest["targets"] if t["quantization"] == "int8")["details"]["float_prefix"]
    assert prefix["chosen_by"] == "search on held-out images 8..24"
