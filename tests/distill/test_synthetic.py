import numpy as np

from ammkd.distill import synthetic
from ammkd.distill.data import load_split


def test_render_is_deterministic_and_captions_do_not_depend_on_size():
    a, caps_a, cls_a = synthetic.render(0, 7, size=64)
    b, caps_b, cls_b = synthetic.render(0, 7, size=64)
    _, caps_small, _ = synthetic.render(0, 7, size=16)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert caps_a == caps_b == caps_small and cls_a == cls_b
    assert a.size == (64, 64) and a.mode == "RGB"


def test_images_differ_and_captions_vary():
    imgs = [np.asarray(synthetic.render(0, i)[0]) for i in range(20)]
    assert len({im.tobytes() for im in imgs}) == 20
    caps = [synthetic.render(0, i)[1] for i in range(50)]
    assert all(len(c) == 5 and len(set(c)) >= 4 for c in caps)  # several phrasings per image
    words = " ".join(" ".join(c) for c in caps)
    for needle in ("left of", "above", "two", "background", "corner"):
        assert needle in words  # relations, counts, backgrounds and positions all occur


def test_splits_are_disjoint_and_sized():
    train, val, test = (set(load_split("synthetic:100", s).sources) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert not (train & val or train & test or val & test)


def test_class_prompts_cover_every_colour_shape_pair():
    prompts = synthetic.class_prompts()
    assert len(prompts) == len(synthetic.COLORS) * len(synthetic.SHAPES) == len(set(prompts))
    _, _, cls = synthetic.render(0, 3)
    assert 0 <= cls < len(prompts)
