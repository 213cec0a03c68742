"""The embedded default data: seeded synthetic scenes of coloured shapes, with captions.

Each image is a function of (seed, index) alone, so any subset regenerates identically and the
splits never overlap. Scenes have one object (with a position), a count of identical objects, or
two objects in a spatial relation, on one of several background textures. Each image gets five
captions of varying completeness: a short caption ("a red circle") matches many images, which is
what keeps a tiny CLIP far from perfect retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLORS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 220),
    "yellow": (235, 205, 35),
    "purple": (135, 55, 175),
    "orange": (240, 135, 25),
    "white": (245, 245, 245),
    "black": (22, 22, 22),
}
SHAPES = ["circle", "square", "triangle", "diamond", "cross"]
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds", "cross": "crosses"}
BACKGROUNDS = ["plain", "striped", "checkered", "noisy", "gradient"]
# Muted background tones, chosen to stay distinguishable from every object colour.
BG_TONES = [(128, 128, 128), (170, 160, 140), (95, 110, 120), (150, 175, 165), (185, 170, 190), (110, 95, 85)]
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
GRID = [
    ["in the top left corner", "at the top", "in the top right corner"],
    ["on the left", "in the center", "on the right"],
    ["in the bottom left corner", "at the bottom", "in the bottom right corner"],
]
NUMBERS = {2: "two", 3: "three"}
VERSION = 2  # bump when rendering or captions change: keys the on-disk image cache
SPLITS = ("train", "val", "test")
HELDOUT_MAX = 500
SUPERSAMPLE = 4  # draw at 4x and downsample: antialiased edges


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str  # "small" | "large"
    cx: float  # centre, fraction of the image width
    cy: float
    r: float  # half-extent, fraction of the image width


def class_prompts() -> list[str]:
    """Zero-shot prompts, one per (colour, shape) class."""
    return [f"a photo of a {c} {s}" for c in COLORS for s in SHAPES]


def split_range(n_images: int, split: str) -> range:
    """Indices of `split` among n_images: val and test are 10% each but at most HELDOUT_MAX
    images (like Flickr's 1k test sets, retrieval difficulty should not grow with the train set);
    train is the rest. Order: train, val, test."""
    n_held = min(n_images // 10, HELDOUT_MAX)
    n_train = n_images - 2 * n_held
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_held), "test": (n_train + n_held, n_images)}
    return range(*bounds[split])


def _radius(rng: np.random.Generator, size: str) -> float:
    return float(rng.uniform(0.09, 0.12) if size == "small" else rng.uniform(0.17, 0.22))


def _scene(rng: np.random.Generator) -> tuple[list[Obj], dict]:
    """Sample the objects and the facts the captions describe."""
    kind = rng.choice(["single", "count", "pair"], p=[0.35, 0.25, 0.4])
    color = str(rng.choice(list(COLORS)))
    shape = str(rng.choice(SHAPES))
    size = str(rng.choice(["small", "large"]))
    if kind == "single":
        gx, gy = int(rng.integers(3)), int(rng.integers(3))
        r = _radius(rng, size)
        cx = (gx + 0.5) / 3 + rng.uniform(-0.05, 0.05)
        cy = (gy + 0.5) / 3 + rng.uniform(-0.05, 0.05)
        cx, cy = float(np.clip(cx, r, 1 - r)), float(np.clip(cy, r, 1 - r))
        return [Obj(shape, color, size, cx, cy, r)], {"kind": kind, "where": GRID[gy][gx]}
    if kind == "count":
        n = int(rng.integers(2, 4))
        size = "small"
        objs: list[Obj] = []
        while len(objs) < n:  # rejection-sample non-overlapping positions
            r = _radius(rng, size)
            cx, cy = float(rng.uniform(r, 1 - r)), float(rng.uniform(r, 1 - r))
            if all((cx - o.cx) ** 2 + (cy - o.cy) ** 2 > (r + o.r + 0.03) ** 2 for o in objs):
                objs.append(Obj(shape, color, size, cx, cy, r))
        return objs, {"kind": kind, "n": n}
    # pair: A <relation> B, with B a different colour or shape
    color2, shape2 = color, shape
    while (color2, shape2) == (color, shape):
        color2, shape2 = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
    size2 = str(rng.choice(["small", "large"]))
    rel = str(rng.choice(list(RELATIONS)))
    ra, rb = _radius(rng, size), _radius(rng, size2)
    along = (rng.uniform(0.25, 0.35), rng.uniform(0.65, 0.75))  # A first, B second along the axis
    across = (rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7))
    if rel in ("right", "below"):
        along = along[::-1]
    if rel in ("left", "right"):
        (ax, bx), (ay, by) = along, across
    else:
        (ay, by), (ax, bx) = along, across
    a = Obj(shape, color, size, float(ax), float(ay), ra)
    b = Obj(shape2, color2, size2, float(bx), float(by), rb)
    return [a, b], {"kind": kind, "rel": rel}


def _background(rng: np.random.Generator, kind: str, s: int) -> Image.Image:
    tone = np.array(BG_TONES[int(rng.integers(len(BG_TONES)))], np.float32) + rng.uniform(-15, 15, 3)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    if kind == "plain":
        arr = np.broadcast_to(tone, (s, s, 3)).copy()
    elif kind == "striped":
        period = rng.uniform(0.08, 0.2)
        stripes = (np.floor((xx if rng.random() < 0.5 else yy) / period) % 2)[..., None]
        arr = tone + (stripes - 0.5) * 50
    elif kind == "checkered":
        period = rng.uniform(0.1, 0.25)
        check = ((np.floor(xx / period) + np.floor(yy / period)) % 2)[..., None]
        arr = tone + (check - 0.5) * 45
    elif kind == "noisy":
        arr = tone + rng.normal(0, 22, (s, s, 3))
    else:  # gradient
        arr = tone + ((yy if rng.random() < 0.5 else xx)[..., None] - 0.5) * 90
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _draw(draw: ImageDraw.ImageDraw, o: Obj, s: int, fill) -> None:
    cx, cy, r = o.cx * s, o.cy * s, o.r * s
    if o.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif o.shape == "square":
        q = r * 0.85
        draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fill)
    elif o.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    elif o.shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)], fill=fill)
    else:  # cross
        t = r * 0.35
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)


def _captions(rng: np.random.Generator, objs: list[Obj], facts: dict, bg: str) -> list[str]:
    """Five captions, from complete to terse, in varied phrasings."""
    a = objs[0]
    lead = ["a", "a picture of a", "an image showing a", "there is a", "a drawing of a"]
    bg_phrase = f" on a {bg} background"
    if facts["kind"] == "single":
        full = f"a {a.size} {a.color} {a.shape} {facts['where']}"
        caps = [
            full + bg_phrase,
            full,
            f"{rng.choice(lead)} {a.color} {a.shape} {facts['where']}",
            f"{rng.choice(lead)} {a.size} {a.color} {a.shape}",
            f"a {a.color} {a.shape}",
        ]
    elif facts["kind"] == "count":
        n, plural = NUMBERS[facts["n"]], PLURAL[a.shape]
        caps = [
            f"{n} {a.color} {plural}{bg_phrase}",
            f"{n} small {a.color} {plural}",
            f"a group of {n} {a.color} {plural}",
            f"several {a.color} {plural}{bg_phrase}",
            f"{n} {plural}",
        ]
    else:
        b, rel = objs[1], facts["rel"]
        fwd = f"a {a.color} {a.shape} {RELATIONS[rel]} a {b.color} {b.shape}"
        inv = f"a {b.color} {b.shape} {RELATIONS[INVERSE[rel]]} a {a.color} {a.shape}"
        caps = [
            f"a {a.size} {a.color} {a.shape} {RELATIONS[rel]} a {b.size} {b.color} {b.shape}",
            fwd + bg_phrase,
            inv,
            f"a {a.color} {a.shape} and a {b.color} {b.shape}",
            f"a {(o := objs[int(rng.integers(2))]).color} {o.shape} next to a {objs[1 - objs.index(o)].shape}",
        ]
    return [" ".join(c.split()) for c in caps]


def describe(seed: int, index: int) -> tuple[list[Obj], str, list[str], int]:
    """The content of image `index` without pixels: (objects, background, 5 captions, class id)."""
    rng = np.random.default_rng([seed, index])
    objs, facts = _scene(rng)
    bg = str(rng.choice(BACKGROUNDS))
    captions = _captions(rng, objs, facts, bg)
    class_id = list(COLORS).index(objs[0].color) * len(SHAPES) + SHAPES.index(objs[0].shape)
    return objs, bg, captions, class_id


def render(seed: int, index: int, size: int = 64) -> tuple[Image.Image, list[str], int]:
    """Image `index` of the dataset with `seed`: (RGB image size x size, 5 captions, class id)."""
    objs, bg, captions, class_id = describe(seed, index)
    rng = np.random.default_rng([seed, index, 1])  # pixels only: captions never depend on size
    big = size * SUPERSAMPLE
    canvas = _background(rng, bg, big)
    draw = ImageDraw.Draw(canvas)
    for o in objs:
        jitter = rng.integers(-20, 21, 3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLORS[o.color], jitter))
        _draw(draw, o, big, fill)
    img = canvas.resize((size, size), Image.Resampling.LANCZOS)
    if rng.random() < 0.3:  # some camera-like blur
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return img, captions, class_id
