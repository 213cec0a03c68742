import numpy as np
import pytest
import torch
from conftest import TINY_DATA

from ammkd.distill.augment import NO_AUGMENT, Augment
from ammkd.distill.data import load_split
from ammkd.distill.teacher_outputs import TeacherOutputs
from ammkd.distill.teachers import load_teacher
from ammkd.distill.weighting import smooth_weights


def test_cached_outputs_are_fp16_on_disk_and_reused(pipeline, monkeypatch):
    teacher = load_teacher(str(pipeline["rn"]))
    data = load_split(TINY_DATA, "train")
    texts = data.texts()[0]
    first = TeacherOutputs(teacher, data, texts, "cached", NO_AUGMENT)
    assert first.features.dtype == np.float16 and isinstance(first.features, np.memmap)
    monkeypatch.setattr(teacher, "encode_images", lambda *a, **k: pytest.fail("teacher ran again"))
    again = TeacherOutputs(teacher, data, texts, "cached", NO_AUGMENT)
    idx = torch.arange(8)
    logits = first.logits_of(first.embed(idx, 0, 0))
    assert torch.equal(logits, again.logits_of(again.embed(idx, 0, 0)))
    assert logits.shape == (8, len(texts))
    with pytest.raises(ValueError, match="online"):  # feature maps are never cached
        first.embed(idx, 0, 0, with_map=True)


def test_online_outputs_follow_the_students_crop(pipeline):
    teacher = load_teacher(str(pipeline["rn"]))
    teacher.model.eval()
    data = load_split(TINY_DATA, "train")
    texts = data.texts()[0][:50]
    idx = torch.arange(6)
    cached = TeacherOutputs(teacher, data, texts, "cached", NO_AUGMENT).embed(idx, 0, 0)
    plain = TeacherOutputs(teacher, data, texts, "online", NO_AUGMENT).embed(idx, 0, 0)
    assert torch.allclose(cached, plain, atol=2e-3)  # same pixels; fp16 storage is the only difference
    online = TeacherOutputs(teacher, data, texts, "online", Augment(scale=(0.3, 0.5)))
    a, b = online.embed(idx, 0, 3), online.embed(idx, 0, 4)
    assert torch.equal(a, online.embed(idx, 0, 3))  # a step's crop is a function of (seed, step)
    assert (a * b).sum(1).mean() < 0.999  # another step, another crop
    emb, fmap = online.embed(idx, 0, 3, with_map=True)  # the same crop's last feature map
    assert torch.allclose(emb, a, atol=1e-5) and fmap.ndim == 4 and fmap.shape[0] == 6


def test_alpha_ema_smooths_and_stays_on_the_simplex():
    state = torch.full((2,), float("nan"))
    assert smooth_weights(state, torch.tensor([0.6, 0.4]), 0.9).tolist() == pytest.approx([0.6, 0.4])
    out = smooth_weights(state, torch.tensor([0.4, 0.6]), 0.9)
    assert out.tolist() == pytest.approx([0.58, 0.42]) and out.sum().item() == pytest.approx(1.0)
    assert smooth_weights(state, torch.tensor([0.5, 0.5]), 0.0).tolist() == [0.5, 0.5]
