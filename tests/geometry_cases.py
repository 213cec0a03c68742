"""The resize-and-crop geometry of the manifest's input spec (resize_rounding "half_even",
crop_offset "floor"), as the Python runtime computes it, for the other readers' tests to compare
with (Kotlin: Preprocessor.plan; JavaScript: preprocess.js resizePlan), and the torchvision-style
rules it must not be confused with (issue 20 item 15)."""

from __future__ import annotations

import math

from ammkd.bundle.format import InputSpec
from ammkd.bundle.preprocess import resize_plan

# sizes beyond the small grid: photos, extreme aspects, the golden images' kind of size
LARGE = [(1021, 767, 224), (97, 260, 64), (3000, 2000, 384), (4032, 3024, 224), (16000, 9, 224), (91, 59, 64)]


def geometry_plans() -> list[list[int]]:
    """[w, h, s, nw, nh, left, top] for every w, h in 1..32 and a few sides s, plus LARGE."""
    cases = [(w, h, s) for s in (1, 2, 3, 5, 7, 16, 64) for w in range(1, 33) for h in range(1, 33)]
    cases += LARGE + [(h, w, s) for w, h, s in LARGE]
    return [[w, h, s, *resize_plan(w, h, InputSpec(size=s))] for w, h, s in cases]


def is_tie(w: int, h: int, s: int) -> bool:
    """Whether the rule's product W * (S / min(W, H)) or H * ... lands exactly on a half."""
    scale = s / min(w, h)
    return (w, h) != (s, s) and any(math.modf(v * scale)[0] == 0.5 for v in (w, h))


def _torchvision_resize(w: int, h: int, s: int) -> tuple[int, int]:
    """torchvision.transforms.functional.resize(img, s): shorter side s, longer int(s * long / short)."""
    if w <= h:
        return s, int(s * h / w)
    return int(s * w / h), s


def alternative_plans(w: int, h: int, s: int) -> dict[str, tuple[int, int, int, int]]:
    """(nw, nh, left, top) of readings of "shorter side to S, centre crop" other than the manifest's."""
    ours = resize_plan(w, h, InputSpec(size=s))
    tv = _torchvision_resize(w, h, s)

    def half_up(v: float) -> int:
        return math.floor(v + 0.5)

    return {
        # torchvision: Resize(S) truncates the long side, CenterCrop(S) rounds half the margin (Python round)
        "torchvision": (*tv, int(round((tv[0] - s) / 2.0)), int(round((tv[1] - s) / 2.0))),
        "truncated-size": (*tv, (tv[0] - s) // 2, (tv[1] - s) // 2),
        "offset-round-half-even": (*ours[:2], round((ours[0] - s) / 2), round((ours[1] - s) / 2)),
        "offset-round-half-up": (*ours[:2], half_up((ours[0] - s) / 2), half_up((ours[1] - s) / 2)),
    }
