import json

import numpy as np
import pytest
import torch
from conftest import TINY_DATA, chance_mean_recall

from ammkd.common.errors import ConfigError
from ammkd.distill.fusion import FusionNetwork, fuse_class_vectors, train_fusion
from ammkd.distill.student_folder import INDEX_VECTORS
from ammkd.distill.train import DistillConfig, distill
from ammkd.tools.evaluate import evaluate


def test_untrained_network_is_the_concat_fusion():
    rng = np.random.default_rng(0)
    vecs = [rng.normal(size=(5, d)).astype(np.float32) for d in (8, 12)]
    vecs = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in vecs]
    net = FusionNetwork([8, 12], 20)
    with torch.no_grad():
        fused = net.texts([torch.from_numpy(v) for v in vecs]).numpy()
    assert np.allclose(fused, fuse_class_vectors(vecs), atol=1e-6)


def test_fusion_training_aligns_images_with_their_captions():
    """Two noisy 'teachers' of a hidden shared space: the fitted fusion ranks each image's own
    caption first far more often than the untrained one does."""
    gen = torch.Generator().manual_seed(0)
    unit = torch.nn.functional.normalize
    latent = unit(torch.randn(300, 16, generator=gen), dim=1)
    mix = [torch.randn(16, d, generator=gen) for d in (24, 32)]

    def noisy_view(m):
        return unit(latent @ m + 2.0 * torch.randn(300, m.shape[1], generator=gen), dim=1)

    feats = [noisy_view(m) for m in mix]
    vecs = [noisy_view(m) for m in mix]
    per_image = [[i] for i in range(300)]

    def top1(net):
        with torch.no_grad():
            sim = net.images(feats) @ net.texts(vecs).T
        return (sim.argmax(1) == torch.arange(300)).float().mean().item()

    net, losses = train_fusion(
        [f.numpy().astype(np.float16) for f in feats], vecs, per_image, 16, steps=200, batch_size=100
    )
    assert losses[-1] < losses[0]
    assert top1(net) > top1(FusionNetwork([24, 32], 16)) + 0.1
    assert net.texts(vecs).shape == (300, 16)


def test_student_with_fusion_network_and_fused_teacher(pipeline, tmp_path):
    cfg = DistillConfig(
        teachers=[str(pipeline["vit"]), str(pipeline["rn"])],
        data=TINY_DATA,
        student="ammkd-mnv3-small-050",
        fusion="network+teacher",
        fusion_steps=100,
        epochs=10,
        batch_size=32,
    )
    out = distill(cfg, tmp_path / "fused")
    meta = json.loads((out / "student.json").read_text())
    assert meta["arch"]["embed_dim"] == 256 and (out / "fusion.safetensors").is_file()
    index = np.load(out / INDEX_VECTORS)
    assert index.shape[1] == 256 and np.allclose(np.linalg.norm(index, axis=1), 1, atol=1e-5)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(len(r["alpha"]) == 3 and abs(sum(r["alpha"]) - 1) < 1e-3 for r in log)  # two teachers + fused
    # learned through the fused path: well above chance on the 240 training images (30 val images
    # are too few for a stable bound after 10 tiny epochs)
    assert evaluate(str(out), TINY_DATA, split="train")["mean_recall"] > 5 * chance_mean_recall(240)


def test_fused_teacher_counts_in_weight_lengths():
    cfg = DistillConfig(teachers=["a", "b"], fusion="network+teacher", weighting="fixed", fixed_weights=[1.0, 1.0])
    with pytest.raises(ConfigError, match="3 non-negative fixed_weights"):
        cfg.validate()
