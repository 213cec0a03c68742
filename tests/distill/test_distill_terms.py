"""The optional distillation terms (CLIP-KD feature and relation, SDKD-style spectral): each one,
alone in the loss, is what trains the student, so dropping it from the loss fails these tests."""

import json

import pytest
from conftest import TINY_DATA

from ammkd.distill.train import DistillConfig, distill


@pytest.mark.parametrize(
    "term,options",
    [
        ("feature", {"feature_weight": 1.0}),
        ("relation", {"relation_weight": 1.0}),
        ("spectral", {"spectral_weight": 1.0, "teacher_outputs": "online"}),
    ],
)
def test_each_term_alone_trains_the_student(pipeline, tmp_path, term, options):
    cfg = DistillConfig(
        teachers=[str(pipeline["vit"]), str(pipeline["rn"])],
        data=TINY_DATA,
        student="ammkd-mnv3-small-050",
        kd_weight=0.0,
        task_weight=0.0,
        epochs=4,
        batch_size=32,
        lr=3e-3,
        checkpoint_every=0,
        **options,
    )
    out = distill(cfg, tmp_path / term)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    values = [r[term] for r in log]
    assert all(name not in log[0] for name in {"feature", "relation", "spectral"} - {term})  # off: not computed
    assert min(values[-2:]) < 0.85 * values[0], values  # dropped from the loss: no trend
    assert log[-1]["loss"] == pytest.approx(log[-1][term], rel=1e-4)  # the term is the whole loss
