import numpy as np
import pytest
from geometry_cases import alternative_plans, geometry_plans, is_tie
from PIL import Image

from ammkd.bundle.format import InputSpec
from ammkd.bundle.preprocess import preprocess
from ammkd.bundle.search import topk
from ammkd.common.errors import DataError


@pytest.mark.parametrize("k", [1, 5, 100])
def test_topk_equals_full_sort(k):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(100, 8)).astype(np.float16)
    q = rng.normal(size=8).astype(np.float32)
    ids, scores = topk(q, m.astype(np.float32), k)
    full = np.argsort(-(m.astype(np.float32) @ q), kind="stable")[:k]
    assert ids.tolist() == full.tolist() and np.all(np.diff(scores) <= 0)


def test_ties_break_towards_lower_id():
    m = np.ones((6, 2), np.float32)
    assert topk(np.ones(2, np.float32), m, 3)[0].tolist() == [0, 1, 2]


def test_preprocess_resizes_shorter_side_then_centre_crops():
    spec = InputSpec(size=32)
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # the centre 40 columns are white: after resize to 32x64 and crop, all white
    x = preprocess(img, spec)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    assert x.min() > 0.95 and x.max() <= 1.0
    assert np.allclose(preprocess(Image.fromarray(img), spec), x)


def test_normalisation_outside_the_graph_when_asked():
    spec = InputSpec(size=8, normalization_in_graph=False, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = preprocess(np.full((8, 8, 3), 255, np.uint8), spec)
    assert np.allclose(x, 2.0)


def test_bad_buffer_is_refused():
    with pytest.raises(DataError, match="uint8 buffer"):
        preprocess(np.zeros((8, 8), np.float32), InputSpec(size=8))


def test_ties_at_the_cut_resolve_by_id():
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1, 0.5], np.float32)
    m = np.diag(scores)  # query of ones: score of row i is scores[i]
    ids, _ = topk(np.ones(6, np.float32), m, 3)
    assert ids.tolist() == [1, 0, 2]


def test_rgba_buffer_is_composited_and_matches_rgb_when_opaque():
    spec = InputSpec(size=16)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    opaque = np.concatenate([rgb, np.full((20, 30, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(preprocess(opaque, spec), preprocess(rgb, spec))
    clear = np.concatenate([rgb, np.zeros((20, 30, 1), np.uint8)], axis=2)
    assert np.allclose(preprocess(clear, spec), 1.0)  # fully transparent pixels are composited over white


def test_geometry_rounds_half_to_even_and_floors_the_crop_offset():
    """Issue 20 item 15: the manifest's rule, at exact halves (S = 3, the shorter side 2: scale 1.5)."""
    from ammkd.bundle.preprocess import resize_plan

    spec = InputSpec(size=3)
    assert resize_plan(3, 2, spec) == (4, 3, 0, 0)  # 3 * 1.5 = 4.5 -> 4 (half-up would give 5)
    assert resize_plan(5, 2, spec) == (8, 3, 2, 0)  # 7.5 -> 8; margin 5 -> left floor(2.5) = 2
    assert resize_plan(2, 7, spec) == (3, 10, 0, 3)  # 10.5 -> 10; margin 7 -> top 3 (round() gives 4)
    assert resize_plan(3, 3, spec) == (3, 3, 0, 0)
    assert resize_plan(91, 59, InputSpec(size=64)) == (99, 64, 17, 0)  # 98.71 -> 99 (torchvision: 98)


def test_geometry_fields_default_to_the_old_rule_and_other_values_are_refused():
    spec = InputSpec.from_dict({"size": 16})  # a manifest written before the fields existed
    assert (spec.resize_rounding, spec.crop_offset) == ("half_even", "floor")
    assert spec.to_dict()["resize_rounding"] == "half_even" and spec.to_dict()["crop_offset"] == "floor"
    img = np.zeros((20, 30, 3), np.uint8)
    for bad in ({"resize_rounding": "half_up"}, {"crop_offset": "round"}):
        with pytest.raises(DataError, match="unsupported input spec"):
            preprocess(img, InputSpec.from_dict({"size": 16} | bad))


def test_the_plans_given_to_the_other_readers_hold_exact_halves():
    plans = geometry_plans()
    assert sum(is_tie(*p[:3]) for p in plans) > 100  # ties to even are tested, not just claimed
    odd = [p for p in plans if (p[3] - p[2]) % 4 == 3 and p[3] != p[2]]
    assert odd and all(alternative_plans(*p[:3])["offset-round-half-even"][2] == p[5] + 1 for p in odd)
