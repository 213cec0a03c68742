import numpy as np
import pytest

from ammkd.distill.evaluate import recall_at_k


def test_recall_on_a_hand_made_case():
    img = np.eye(3, dtype=np.float32)
    # texts 0,1 belong to image 0; text 2 to image 1; text 3 to image 2 but points at image 1
    txt = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1]], np.float32)
    owner = np.array([0, 0, 1, 2])
    r = recall_at_k(img, txt, owner, ks=(1, 2))
    assert r["t2i_R@1"] == pytest.approx(75.0)  # text 3 misses at 1
    assert r["t2i_R@2"] == pytest.approx(100.0)
    assert r["i2t_R@1"] == pytest.approx(100.0)  # image 2 still ranks its own text 3 first (0.1 > 0)
    assert r["i2t_R@2"] == pytest.approx(100.0)


def test_random_embeddings_score_near_chance():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(200, 16)).astype(np.float32)
    txt = rng.normal(size=(1000, 16)).astype(np.float32)
    r = recall_at_k(img, txt, np.repeat(np.arange(200), 5))
    assert r["t2i_R@1"] < 3 and r["t2i_R@10"] < 12
