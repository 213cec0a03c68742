"""Pretrained starts end to end: CLIP teachers on an ImageNet tower + MiniLM, fine-tuned above a
frozen, cached prefix; students from a pretrained mobile backbone, distilled the same way."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ammkd.common.errors import ConfigError
from ammkd.distill.data import load_split
from ammkd.distill.frozen_prefix import prefix_forward
from ammkd.distill.image_tensors import image_tensor
from ammkd.distill.pretrained import create_timm
from ammkd.distill.student import create_student
from ammkd.distill.student_folder import load_student
from ammkd.distill.teacher_training import TeacherConfig, train_teacher
from ammkd.distill.teachers import load_teacher
from ammkd.distill.train import DistillConfig, distill

LITE0_TEACHER = "tf_efficientnet_lite0:imagenet+hf:all-MiniLM-L6-v2"
DATA = "synthetic:96"
FROZEN = 5  # stem + stages 0-4 frozen: only stage 5, 6 and the head train (cheap at test sizes)


def test_teacher_on_a_pretrained_tower_is_an_open_clip_model_with_the_wheel_weights():
    t = load_teacher(LITE0_TEACHER)
    reference = create_timm("tf_efficientnet_lite0", "tf_efficientnet_lite0:imagenet", num_classes=0)
    trunk = t.model.visual.trunk.state_dict()
    assert all(torch.equal(trunk[k], v) for k, v in reference.state_dict().items())
    assert t.spec.size == 224 and t.spec.mean == (0.5, 0.5, 0.5) and t.dim == 512
    assert t.frozen_stages is None


def test_unknown_or_missing_pretrained_towers_fail_before_building(tmp_path):
    with pytest.raises(ConfigError, match="unknown named weights 'tf_efficientnet_lite0:imagenet21k'"):
        load_teacher("tf_efficientnet_lite0:imagenet21k+hf:all-MiniLM-L6-v2")
    with pytest.raises(ConfigError, match="weights file not found"):
        load_teacher(f"tf_efficientnet_lite0:{tmp_path}/w.pth+hf:all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "lite0"
    cfg = TeacherConfig(
        model=LITE0_TEACHER,
        data=DATA,
        epochs=2,
        batch_size=32,
        lr=1e-3,
        image_frozen_stages=FROZEN,
        image_lr_scale=0.1,
        checkpoint_every=0,
    )
    train_teacher(cfg, out)
    return out


def test_fine_tuning_trains_only_above_the_frozen_prefix(fine_tuned):
    teacher = load_teacher(str(fine_tuned))
    assert teacher.frozen_stages == FROZEN
    assert json.loads((fine_tuned / "teacher.json").read_text())["image_frozen_stages"] == FROZEN
    before = create_timm("tf_efficientnet_lite0", "tf_efficientnet_lite0:imagenet", num_classes=0).state_dict()
    after = teacher.model.visual.trunk.state_dict()
    frozen = [k for k in before if k.startswith(("conv_stem", "bn1")) or k.split(".")[:2] < ["blocks", str(FROZEN)]]
    top = [k for k in before if k.startswith(f"blocks.{FROZEN + 1}.") and k.endswith("weight")]
    assert frozen and top
    assert all(torch.equal(before[k], after[k]) for k in frozen), "a frozen weight moved"
    assert any(not torch.equal(before[k], after[k]) for k in top), "the trainable top did not train"
    # BatchNorm statistics of the pretrained tower stay put: small CLIP batches would blur them
    assert torch.equal(
        before[f"blocks.{FROZEN + 1}.0.bn1.running_mean"], after[f"blocks.{FROZEN + 1}.0.bn1.running_mean"]
    )


def test_cached_prefix_path_equals_the_full_tower(fine_tuned):
    teacher = load_teacher(str(fine_tuned))
    val = load_split(DATA, "val")
    images, val, _ = image_tensor(val, teacher.spec)
    full = teacher.encode_images(images)  # the whole tower, fp32
    cached = teacher.encode_images(images, key_parts=tuple(val.sources))  # fp16 prefix from the cache
    again = teacher.encode_images(images, key_parts=tuple(val.sources))  # read back from disk
    cos = F.cosine_similarity(full, cached, dim=-1)
    assert cos.min() > 0.999, cos.min()
    assert torch.equal(cached, again)


def test_frozen_prefix_needs_the_evaluation_pixels_and_a_timm_tower(tmp_path):
    with pytest.raises(ConfigError, match="needs aug_scale"):
        TeacherConfig(model=LITE0_TEACHER, image_frozen_stages=2, aug_scale=[0.6, 1.0]).validate()
    cfg = TeacherConfig(model="ammkd-tiny-rn", data=DATA, epochs=1, batch_size=16, image_frozen_stages=2)
    with pytest.raises(ConfigError, match="needs a timm image tower"):
        train_teacher(cfg, tmp_path / "t")
    with pytest.raises(ConfigError, match=r"frozen_stages must be in \[0, 6\]"):
        train_teacher(
            TeacherConfig(model=LITE0_TEACHER, data=DATA, epochs=1, batch_size=16, image_frozen_stages=7),
            tmp_path / "t7",
        )


def test_pretrained_student_preset_and_spec():
    s = create_student("ammkd-lite0", 64)
    assert s.arch.image_size == 160 and s.arch.mean == (0.5, 0.5, 0.5)
    ref = create_timm("tf_efficientnet_lite0", "tf_efficientnet_lite0:imagenet", num_classes=0).state_dict()
    assert all(torch.equal(s.backbone.state_dict()[k], v) for k, v in ref.items())
    s2 = create_student("tf_efficientnet_lite0:imagenet", 64, image_size=128)
    assert s2.arch.image_size == 128
    x = torch.rand(2, 3, 128, 128)
    s2.eval()
    with torch.no_grad():
        h = prefix_forward(s2.backbone, (x - s2.mean) / s2.std, 3)
        assert torch.allclose(s2(x), s2(h, from_stage=3), atol=1e-5)


def test_distilling_a_pretrained_student_above_a_frozen_prefix(fine_tuned, tmp_path):
    cfg = DistillConfig(
        teachers=[str(fine_tuned)],
        data=DATA,
        student="ammkd-lite0",
        image_size=96,
        frozen_stages=3,
        weighting="single",
        epochs=1,
        batch_size=32,
        checkpoint_every=0,
    )
    out = distill(cfg, tmp_path / "s")
    student, meta = load_student(out)
    assert meta["backbone_weights"] == "tf_efficientnet_lite0:imagenet" and meta["frozen_stages"] == 3
    ref = create_timm("tf_efficientnet_lite0", "tf_efficientnet_lite0:imagenet", num_classes=0).state_dict()
    got = student.backbone.state_dict()
    assert torch.equal(got["blocks.2.0.conv_pw.weight"], ref["blocks.2.0.conv_pw.weight"])  # frozen
    assert not torch.equal(got["blocks.5.0.conv_pw.weight"], ref["blocks.5.0.conv_pw.weight"])  # trained
    emb = student(torch.rand(3, 3, 96, 96))
    assert emb.shape == (3, 512) and np.allclose(emb.norm(dim=-1).detach().numpy(), 1, atol=1e-5)
    with pytest.raises(ConfigError, match="frozen_stages"):
        DistillConfig(teachers=["a"], frozen_stages=2, aug_scale=[0.5, 1.0]).validate()
