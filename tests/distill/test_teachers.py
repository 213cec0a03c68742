import json

import numpy as np
import open_clip
import pytest
import torch
from conftest import TINY_DATA, chance_mean_recall

from ammkd.common.errors import ConfigError
from ammkd.distill.class_vectors import class_vectors
from ammkd.distill.teachers import load_teacher
from ammkd.tools.evaluate import evaluate


def test_registry_name_without_tag_is_random_init():
    t = load_teacher("ammkd-tiny-rn")  # an open_clip registry name: the NAME[:PRETRAINED] code path
    assert t.fingerprint.endswith(":random-init") and t.dim == 128 and t.spec.size == 64
    emb = t.encode_texts(["a red circle", "two blue squares"])
    assert emb.shape == (2, 128) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("no-such-model", "unknown teacher"),
        ("ViT-B-32:no-such-tag", "unknown pretrained tag"),
        ("ViT-B-32:openai", "internet"),  # offline here: the download fails fast with a clear message
    ],
)
def test_bad_teacher_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_teacher(spec)


def test_saved_teacher_is_open_clip_compatible(pipeline):
    tdir = pipeline["vit"]
    ours = load_teacher(str(tdir))
    theirs = open_clip.create_model(f"local-dir:{tdir}").eval()
    tok = open_clip.get_tokenizer(f"local-dir:{tdir}")
    with torch.no_grad():
        a = ours.encode_texts(["a red circle"])
        b = torch.nn.functional.normalize(theirs.encode_text(tok(["a red circle"])), dim=-1)
    assert torch.allclose(a, b, atol=1e-6)
    meta = json.loads((tdir / "teacher.json").read_text())
    assert meta["source"] == "ammkd-tiny-vit" and len(meta["weights_sha256"]) == 64
    log = [json.loads(line) for line in (tdir / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]  # contrastive training made progress


def test_trained_teacher_beats_chance_on_heldout_images(pipeline):
    m = evaluate(str(pipeline["rn"]), TINY_DATA)  # 30 val images, 150 captions
    assert m["mean_recall"] > 2 * chance_mean_recall(30)


def test_class_vectors_are_cached_by_teacher_and_texts(pipeline, monkeypatch):
    t = load_teacher(str(pipeline["rn"]))
    first = class_vectors(t, ["a red circle", "a blue square"])
    assert first.shape == (2, 128) and np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    monkeypatch.setattr(t, "encode_texts", lambda texts: pytest.fail("cache miss on a known text set"))
    assert np.array_equal(class_vectors(t, ["a red circle", "a blue square"]), first)
    with pytest.raises(pytest.fail.Exception):
        class_vectors(t, ["a blue square", "a red circle"])  # another text set: another key


def test_local_checkpoint_with_registry_name_or_config_file(tmp_path):
    src = load_teacher("ammkd-tiny-rn")
    torch.save({"state_dict": src.model.state_dict()}, tmp_path / "epoch_3.pt")  # open_clip training layout
    (tmp_path / "cfg.json").write_text(json.dumps(open_clip.get_model_config("ammkd-tiny-rn")))
    expected = src.encode_texts(["a red circle"])
    for spec in (f"ammkd-tiny-rn:{tmp_path / 'epoch_3.pt'}", f"{tmp_path / 'cfg.json'}:{tmp_path / 'epoch_3.pt'}"):
        t = load_teacher(spec)
        assert torch.allclose(t.encode_texts(["a red circle"]), expected, atol=1e-6)
        assert len(t.fingerprint) == 64  # keyed by the checkpoint's hash: its class vectors are cached
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="bad.pt: does not load"):
        load_teacher(f"ammkd-tiny-rn:{tmp_path / 'bad.pt'}")
