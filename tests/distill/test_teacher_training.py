"""Teacher training at the scale of real data: HF text towers, accumulation, augmentation,
run folders and exact resume."""

import copy
import json

import numpy as np
import open_clip
import pytest
import torch
from conftest import run_interrupted_then_resumed
from safetensors.torch import load_file

from ammkd.common.errors import ConfigError
from ammkd.distill.augment import Augment
from ammkd.distill.class_vectors import class_vectors
from ammkd.distill.teacher_training import TeacherConfig, contrastive_step, train_teacher
from ammkd.distill.teachers import load_teacher

MINILM = "ammkd-tiny-rn+hf:all-MiniLM-L6-v2"
DATA = "synthetic:120"


def test_hf_text_tower_is_the_pretrained_minilm():
    t = load_teacher(MINILM)
    assert type(t.model).__name__ == "CustomTextCLIP" and t.dim == 128 and t.frozen_hf_text is False
    t.model.lock_text_tower()
    assert t.frozen_hf_text  # transformer frozen, projection trainable
    pooled = t._pooled_texts()(["a dog runs across the grass", "a puppy running in a field", "a red car on a street"])
    cos = torch.nn.functional.cosine_similarity
    # Real pretrained weights: a paraphrase is far closer than an unrelated sentence.
    assert cos(pooled[0], pooled[1], dim=0) > cos(pooled[0], pooled[2], dim=0) + 0.3


def test_frozen_text_path_matches_the_full_model():
    t = load_teacher(MINILM)
    texts = ["a man rides a bike", "two children play on the beach"]
    with torch.no_grad():
        full = torch.nn.functional.normalize(t.model.encode_text(t.tokenizer(texts)), dim=-1)
    t.model.lock_text_tower()
    with torch.no_grad():
        cached = t.text_features(texts)  # pooled once (padding trimmed), then the projection
    assert torch.allclose(full, cached, atol=1e-5)


def test_missing_hf_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not a Hugging Face model directory"):
        load_teacher(f"ammkd-tiny-rn+hf:{tmp_path}")
    with pytest.raises(ConfigError, match="unknown image tower"):
        load_teacher("no-such-tower+hf:all-MiniLM-L6-v2")


def test_gradient_accumulation_equals_the_global_batch():
    torch.manual_seed(0)
    a = load_teacher("ammkd-tiny-vit")  # LayerNorm only: accumulation is exact
    b = copy.deepcopy(a)
    images = torch.randint(0, 256, (8, 3, 64, 64)).float()
    texts = [f"a photo number {i}" for i in range(8)]
    loss_fn = open_clip.ClipLoss()
    la = contrastive_step(a, images, texts, 1, loss_fn)
    lb = contrastive_step(b, images, texts, 4, loss_fn)
    assert torch.allclose(la, lb, atol=1e-5)
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        if pa.grad is not None:
            assert torch.allclose(pa.grad, pb.grad, atol=1e-5, rtol=1e-4), name


def test_augment_is_reproducible_and_identity_without_scale():
    imgs = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    aug = Augment(scale=(0.5, 1.0), hflip=True)
    x = aug(imgs, 32, np.random.default_rng([0, 5]))
    assert x.shape == (4, 3, 32, 32) and torch.equal(x, aug(imgs, 32, np.random.default_rng([0, 5])))
    assert not torch.equal(x, aug(imgs, 32, np.random.default_rng([0, 6])))
    plain = Augment(scale=(1.0, 1.0))
    assert plain.storage_size(32) == 32 and torch.equal(
        plain(imgs[..., :32, :32], 32, None), imgs[..., :32, :32].float()
    )


def _cfg(**kw) -> TeacherConfig:
    base = dict(
        model=MINILM,
        data=DATA,
        epochs=2,
        batch_size=16,
        accum_steps=2,
        lr=5e-4,
        aug_scale=[0.7, 1.0],
        eval_every=4,
        checkpoint_every=3,
    )
    return TeacherConfig(**{**base, **kw})


def test_teacher_run_folder_and_exact_resume(tmp_path, monkeypatch):
    cfg = _cfg()
    straight = train_teacher(cfg, tmp_path / "straight")
    for name in ("config.json", "metrics.jsonl", "learning_curve.png", "open_clip_config.json", "hf_text/vocab.txt"):
        assert (straight / name).is_file(), name
    assert (straight / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val_mean_recall" in r] == [4, 8, 11]  # every 4 steps and the last
    assert not (straight / "checkpoint.pt").exists()  # removed once the teacher is written

    run_interrupted_then_resumed(monkeypatch, lambda o, r: train_teacher(cfg, o, resume=r), tmp_path / "resumed", 7)
    a = load_file(str(straight / "open_clip_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "open_clip_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    # The folder reloads anywhere (its HF description travels with it) and gives the same texts.
    moved = tmp_path / "moved"
    straight.rename(moved)
    t = load_teacher(str(moved))
    assert t.frozen_hf_text is False  # loaded for inference: nothing locked, same weights
    texts = ["a red circle", "two blue squares"]
    assert np.allclose(class_vectors(t, texts), t.encode_texts(texts).numpy(), atol=1e-5)


def test_skip_bad_writes_the_skip_list(tmp_path):
    import csv

    from PIL import Image

    rows = []
    for i in range(24):
        Image.new("RGB", (30 + i, 20), (10 * i, 50, 100)).save(tmp_path / f"{i}.png")
        rows.append((f"{i}.png", f"a photo with shade {i}"))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows.append(("broken.png", "a broken one"))
    with open(tmp_path / "data.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filepath", "title"), *rows])
    cfg = _cfg(model="ammkd-tiny-vit", data=f"csv:{tmp_path / 'data.csv'}:all", epochs=1, batch_size=8, accum_steps=1)
    with pytest.raises(Exception, match="broken.png"):
        train_teacher(cfg, tmp_path / "strict")
    cfg.skip_bad = True
    out = train_teacher(cfg, tmp_path / "lenient")
    skipped = json.loads((out / "skipped.json").read_text())
    assert skipped["count"] == 1 and "broken.png" in skipped["files"][0]
    assert json.loads((out / "teacher.json").read_text())["images"] == 24


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(batch_size=10, accum_steps=3), "equal micro-batches"),
        (dict(aug_scale=[0.5]), "aug_scale"),
        (dict(aug_scale=[0.9, 0.5]), "aug_scale"),
    ],
)
def test_bad_teacher_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(**kwargs).validate()


def test_a_ranks_share_of_a_batch_gets_the_whole_batch_crops():
    imgs = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    aug = Augment(scale=(0.4, 1.0), hflip=True)
    whole = aug(imgs, 24, np.random.default_rng([3, 9]))
    part = aug(imgs[4:], 24, np.random.default_rng([3, 9]), within=(4, 8))  # rank 1 of 2
    assert torch.equal(whole[4:], part)


def test_the_learning_curve_is_measured_on_held_out_images_when_the_data_names_train():
    """A DATA spec that names its train split (flickr8k:DIR:train) still gets its curve from
    the dataset's val split, never from the training images."""
    from ammkd.distill.teacher_training import _load_val

    teacher = load_teacher("ammkd-tiny-rn")
    val, arr = _load_val(TeacherConfig(model="ammkd-tiny-rn", data="synthetic:300:train"), teacher, [])
    assert val.split == "val" and len(arr) == len(val)
