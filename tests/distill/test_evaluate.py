import numpy as np
import pytest

from ammkd.distill.evaluate import recall_at_k


def _reference(img, txt, texts_of_image, ks):
    """Recall by text identity, written the slow obvious way: sort (-score, id) per query."""
    img, txt = np.asarray(img, np.float64), np.asarray(txt, np.float64)
    sim = (img.astype(np.float32) @ txt.astype(np.float32).T).astype(np.float64)

    def rank(scores, positives):
        order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
        return next((r for r, j in enumerate(order) if j in positives), len(scores))

    images_of = {}
    for i, ids in enumerate(texts_of_image):
        for u in ids:
            images_of.setdefault(u, set()).add(i)
    i2t = [rank(sim[i], set(ids)) for i, ids in enumerate(texts_of_image)]
    t2i = [rank(sim[:, u], images_of[u]) for ids in texts_of_image for u in ids]
    out = {f"i2t_R@{k}": 100 * np.mean([r < k for r in i2t]) for k in ks}
    out |= {f"t2i_R@{k}": 100 * np.mean([r < k for r in t2i]) for k in ks}
    return out


def test_recall_on_a_hand_made_case():
    img = np.eye(3, dtype=np.float32)
    # texts 0,1 belong to image 0; text 2 to image 1; text 3 to image 2 but points at image 1
    txt = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1]], np.float32)
    r = recall_at_k(img, txt, [[0, 1], [2], [3]], ks=(1, 2))
    assert r["t2i_R@1"] == pytest.approx(75.0)  # text 3 misses at 1
    assert r["t2i_R@2"] == pytest.approx(100.0)
    assert r["i2t_R@1"] == pytest.approx(100.0)  # image 2 still ranks its own text 3 first (0.1 > 0)
    assert r["i2t_R@2"] == pytest.approx(100.0)


def test_a_caption_shared_by_two_images_is_a_hit_for_both():
    """Issue 20 item 11: the same text on two images is one index row, and a hit for either."""
    img = np.array([[1, 0], [1, 0], [0, 1]], np.float32)  # images 0 and 1 embed identically
    txt = np.array([[1, 0], [0, 1]], np.float32)
    r = recall_at_k(img, txt, [[0], [0], [1]], ks=(1,))
    assert r["i2t_R@1"] == 100.0
    assert r["t2i_R@1"] == 100.0  # text 0's query hits for both of its occurrences


def test_exact_ties_break_towards_the_lower_id_every_time():
    """Two distinct texts with one vector: the lower id ranks first, so image 1 (owner of the
    higher id) misses at 1 and hits at 2, on every call."""
    img = np.array([[1, 0], [1, 0]], np.float32)
    txt = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    runs = [recall_at_k(img, txt, [[0], [1]], ks=(1, 2)) for _ in range(3)]
    assert all(r == runs[0] for r in runs)
    assert runs[0]["i2t_R@1"] == 50.0 and runs[0]["i2t_R@2"] == 100.0
    assert runs[0]["t2i_R@1"] == 50.0  # both texts rank image 0 first; text 1 belongs to image 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_a_brute_force_reference_with_many_ties(seed):
    """Quantized embeddings make many exact ties; shared captions across images too."""
    rng = np.random.default_rng(seed)
    img = np.round(rng.normal(size=(40, 3))).astype(np.float32)
    txt = np.round(rng.normal(size=(60, 3))).astype(np.float32)
    texts_of_image = [list(rng.choice(60, size=rng.integers(1, 6))) for _ in range(40)]
    got = recall_at_k(img, txt, texts_of_image, ks=(1, 5, 10))
    want = _reference(img, txt, texts_of_image, ks=(1, 5, 10))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=0.01), key


def test_random_embeddings_score_near_chance():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(200, 16)).astype(np.float32)
    txt = rng.normal(size=(1000, 16)).astype(np.float32)
    r = recall_at_k(img, txt, [list(range(5 * i, 5 * i + 5)) for i in range(200)])
    assert r["t2i_R@1"] < 3 and r["t2i_R@10"] < 12
