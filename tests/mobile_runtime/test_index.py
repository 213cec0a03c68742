import numpy as np
import pytest

from ammkd.bundle.search import topk
from ammkd.common.errors import ConfigError
from ammkd.mobile_runtime.index import APPROX_THRESHOLD, ExactIndex, FaissIndex, FaissParams, recall_at_k


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _random(n: int, d: int, seed: int) -> np.ndarray:
    """Gaussian directions: continuous scores, so no ties."""
    return _unit(np.random.default_rng(seed).normal(size=(n, d)))


@pytest.fixture(scope="module")
def clustered():
    """20k unit vectors in 64-d around 200 centres (spread comparable to the gaps), and 100 fresh queries."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 64))

    def draw(n):
        return _unit(centres[rng.integers(0, len(centres), n)] + 0.8 * rng.normal(size=(n, 64)))

    matrix, queries = draw(20_000), draw(100)
    return matrix, queries, ExactIndex(matrix).search(queries, 10)[0]


@pytest.mark.parametrize("k", [1, 10, 500])
def test_exact_index_equals_topk_and_full_sort(k):
    m, q = _random(300, 16, 0), _random(7, 16, 1)
    ids, scores = ExactIndex(m).search(q, k)
    assert ids.shape == scores.shape == (7, min(k, 300)) and ids.dtype == np.int64 and scores.dtype == np.float32
    for row, query in enumerate(q):
        ref_ids, ref_scores = topk(query, m, k)
        assert ids[row].tolist() == ref_ids.tolist()
        assert ids[row].tolist() == np.argsort(-(m @ query), kind="stable")[:k].tolist()
        assert np.allclose(scores[row], ref_scores, atol=1e-6)
    one_ids, one_scores = ExactIndex(m).search(q[0], k)  # a single (D,) query is Q = 1
    assert one_ids.shape == (1, min(k, 300)) and one_ids[0].tolist() == topk(q[0], m, k)[0].tolist()


def test_exact_index_decodes_float16_once():
    m = _random(50, 8, 0).astype(np.float16)
    index = ExactIndex(m)
    assert index.matrix.dtype == np.float32 and index.matrix.flags.c_contiguous
    assert index.search(m[3].astype(np.float32), 1)[0].tolist() == [[3]]


def test_faiss_flat_returns_the_exact_ids():
    m, q = _random(2_000, 32, 0), _random(20, 32, 1)
    exact_ids, exact_scores = ExactIndex(m).search(q, 10)
    index = FaissIndex(m, "flat")
    ids, scores = index.search(q, 10)
    assert index.kind == "flat" and ids.dtype == np.int64 and scores.dtype == np.float32
    assert ids.tolist() == exact_ids.tolist() and np.allclose(scores, exact_scores, atol=1e-5)
    assert index.search(q[0], 10)[0].tolist() == exact_ids[:1].tolist()


@pytest.mark.parametrize(
    "kind,params",
    [("hnsw", FaissParams(m=16, ef_construction=80, ef_search=64)), ("ivf", FaissParams(nprobe=16))],
)
def test_approximate_recall_on_clustered_data(clustered, kind, params):
    matrix, queries, exact_ids = clustered
    index = FaissIndex(matrix, kind, params)
    ids, _ = index.search(queries, 10)
    assert ids.shape == (100, 10)
    assert recall_at_k(ids, exact_ids) >= 0.9


def test_tune_trades_speed_for_recall(clustered):
    matrix, queries, exact_ids = clustered
    index = FaissIndex(matrix, "ivf", FaissParams(nlist=256, nprobe=1))
    low = recall_at_k(index.search(queries, 10)[0], exact_ids)
    index.tune(nprobe=10_000)  # capped at nlist: every list, so exact
    assert index.index.nprobe == 256 and low < recall_at_k(index.search(queries, 10)[0], exact_ids) == 1.0


def test_auto_is_flat_below_the_threshold_and_hnsw_above():
    m = _random(1_000, 16, 0)
    assert FaissIndex(m, "auto").kind == "flat"  # 1k << APPROX_THRESHOLD
    assert FaissIndex(m, "auto", threshold=1_001).kind == "flat"
    assert FaissIndex(m, "auto", threshold=1_000).kind == "hnsw"
    assert 10_000 < APPROX_THRESHOLD


def test_recall_at_k():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(np.array([[4, 3, 9, -1], [-1, -1, -1, -1]]), exact) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="same Q"):
        recall_at_k(exact[:1], exact)


def test_bad_inputs_raise_config_error():
    m = _random(100, 8, 0)
    with pytest.raises(ConfigError, match="unknown index kind 'pq'"):
        FaissIndex(m, "pq")
    for index in (ExactIndex(m), FaissIndex(m, "flat")):
        with pytest.raises(ConfigError, match="k must be"):
            index.search(m[0], 0)
        with pytest.raises(ConfigError, match="D = 8"):
            index.search(np.zeros((2, 9), np.float32), 3)
    with pytest.raises(ConfigError, match=r"\(N, D\)"):
        ExactIndex(m[0])
    with pytest.raises(ConfigError, match="floats"):
        ExactIndex(np.ones((3, 2), np.int32))
    with pytest.raises(ConfigError, match="m must be >= 2"):
        FaissParams(m=1)
    with pytest.raises(ConfigError, match="nprobe"):
        FaissIndex(m, "ivf", FaissParams(nlist=4)).tune(nprobe=0)
