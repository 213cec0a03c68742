"""The language-neutral fixtures (tests/fixtures/*.json) against the Python side of the contract.

The Kotlin core (android_demo/core FixturesTest.kt, run by tests/android) and the web page's
modules (web_demo/tests/fixtures_check.mjs, run by tests/web) read the same files.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ammkd.bundle.format import InputSpec
from ammkd.bundle.preprocess import resize_plan
from ammkd.bundle.search import topk
from ammkd.bundle.texts import find_text, nearest_texts, normalise
from ammkd.common.errors import DataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", load("topk")["cases"], ids=lambda c: c["name"])
def test_topk_fixture(case):
    scores = np.asarray(case["scores"], dtype=np.float32).reshape(-1, 1)
    ids, got = topk(np.ones(1, np.float32), scores, case["k"])
    assert ids.tolist() == case["ids"]
    assert got.tolist() == [float(scores[i, 0]) for i in case["ids"]]


def test_fp16_fixture():
    cases = load("fp16")["cases"]
    halves = np.array([int(c["half"], 16) for c in cases], dtype=np.uint16)
    decoded = halves.view("<f2").astype(np.float32)
    for c, f in zip(cases, decoded):
        if c["float32"] == "nan":
            assert math.isnan(f), c
        else:
            assert int(np.array([f]).view(np.uint32)[0]) == int(c["float32"], 16), c
            assert f == float(c["value"]), c
    assert int(np.float32(1.0).view(np.uint32)) == int(next(c for c in cases if c["half"] == "0x3c00")["float32"], 16)


def test_nearest_texts_fixture():
    doc = load("nearest_texts")
    texts = doc["texts"]
    for c in doc["normal_forms"]:
        assert normalise(c["text"]) == c["normal"], c
    for c in doc["cases"]:
        if c["id"] >= 0:
            assert find_text(texts, c["query"]) == c["id"], c
        else:
            with pytest.raises(DataError, match="not in the bundle's text set"):
                find_text(texts, c["query"])
            assert nearest_texts(texts, c["query"], 5) == c["nearest"], c


def test_nearest_texts_fixture_reads_as_specified():
    """A few cases checked by hand, so the fixture cannot drift from the rule it pins."""
    doc = load("nearest_texts")
    by_query = {c["query"]: c for c in doc["cases"]}
    assert by_query["A dog runs on the beach"]["id"] == 1  # exact beats the normal form of text 0
    assert by_query["  a DOG runs\ton the   beach.."]["id"] == 0  # case, ASCII spacing, final full stops
    assert by_query["a\u00a0dog runs on the beach"]["id"] == -1  # a no-break space is not ASCII whitespace
    # decomposed é (e + U+0301) is one insertion from "cafe" over 13 code points, precomposed é one
    # substitution over 12: 1/13 < 1/12, code points not graphemes, no Unicode normalisation
    assert by_query["cafe au lait"]["nearest"][:2] == [9, 8]
    assert by_query["two dog"]["nearest"][:2] == [14, 15]


def test_resize_plan_fixture():
    cases = load("resize_plans")["cases"]
    assert len(cases) > 400
    for w, h, s, *plan in cases:
        assert list(resize_plan(w, h, InputSpec(size=s))) == plan, (w, h, s)
    # by hand: 2x5 to 5 px scales by 2.5; 5 * 2.5 = 12.5 rounds half to even, 12 (half-up would give 13),
    # and the crop starts at floor((12 - 5) / 2) = 3
    assert [2, 5, 5, 5, 12, 0, 3] in cases
