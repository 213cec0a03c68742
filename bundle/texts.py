"""Finding a text among a bundle's texts, and the nearest ones when it is not there.

One algorithm in three languages (Python here, `TextLookup.kt`, `web_demo/gallery.js`), pinned by
`tests/fixtures/nearest_texts.json` (docs/design.md §5.9):

- normalise: lower-case (Unicode full lower-case mapping, no locale), split on runs of ASCII
  whitespace (space, \\t, \\n, \\v, \\f, \\r), join the pieces with one space, strip trailing full stops;
- find: the first text equal to the query, else the first whose normal form equals the query's;
- nearest: every text ranked by d / L, ascending, where d is the Levenshtein distance (insert,
  delete, substitute: cost 1) between the normal forms counted in Unicode code points and L the
  longer one's length in code points (0 / 0 counts as 0), as a float64 division (which orders
  the fractions exactly), ties towards the lower id.
"""

from __future__ import annotations

import re

import numpy as np

from ammkd.common.errors import DataError

_ASCII_SPACE = re.compile(r"[ \t\n\v\f\r]+")


def normalise(s: str) -> str:
    """Lower-cased, ASCII whitespace runs collapsed to one space, trailing full stops removed."""
    return " ".join(p for p in _ASCII_SPACE.split(s.lower()) if p).rstrip(".")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings, in code points."""
    return int(edit_distances(a, [b])[0])


def edit_distances(query: str, texts: list[str], chunk: int = 2048) -> np.ndarray:
    """(M,) int64 Levenshtein distances, in code points, from `query` to each of `texts`: the
    dynamic programme run for many texts at once (texts grouped by length, one numpy step per
    cell of a group's longest text)."""
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    out = np.zeros(len(texts), dtype=np.int64)
    q = [ord(c) for c in query]
    by_length = np.argsort(lengths, kind="stable")
    for start in range(0, len(texts), chunk):
        ids = by_length[start : start + chunk]
        width = int(lengths[ids].max()) if len(ids) else 0
        chars = np.full((len(ids), width), -1, dtype=np.int32)
        for row, m in enumerate(ids):
            chars[row, : lengths[m]] = [ord(c) for c in texts[m]]
        prev = np.tile(np.arange(width + 1, dtype=np.int32), (len(ids), 1))
        for i, c in enumerate(q, 1):
            cur = np.empty_like(prev)
            cur[:, 0] = i
            cost = prev[:, :-1] + (chars != c)  # substitution (or match) from the diagonal
            np.minimum(cost, prev[:, 1:] + 1, out=cost)  # deletion from above
            for j in range(1, width + 1):  # insertion from the left: the one sequential part
                cur[:, j] = np.minimum(cost[:, j - 1], cur[:, j - 1] + 1)
            prev = cur
        out[ids] = prev[np.arange(len(ids)), lengths[ids]]
    return out


def nearest_texts(texts: list[str], query: str, n: int = 5) -> list[int]:
    """Ids of the `n` texts nearest to `query` by normalised edit distance d / L, best first.

    d / L in float64 orders exactly: division is correctly rounded, so equal fractions give equal
    doubles, and distinct ones (L below 2^26) differ by far more than the rounding."""
    if n <= 0 or not texts:
        return []
    q = normalise(query)
    forms = [normalise(t) for t in texts]
    d = edit_distances(q, forms).astype(np.float64)
    longer = np.maximum(len(q), np.array([len(t) for t in forms])).astype(np.float64)
    ratio = np.where(longer > 0, d / np.maximum(longer, 1), 0.0)
    order = np.lexsort((np.arange(len(texts)), ratio))
    return order[:n].tolist()


def find_text(texts: list[str], query: str, suggestions: int = 5) -> int:
    """The id of `query` in the bundle's texts (exact, else by normal form); otherwise DataError
    listing the nearest known texts."""
    try:
        return texts.index(query)
    except ValueError:
        pass
    q = normalise(query)
    for i, t in enumerate(texts):
        if normalise(t) == q:
            return i
    listed = "\n".join(f"  {texts[i]}" for i in nearest_texts(texts, query, suggestions))
    raise DataError(
        f"text {query!r} is not in the bundle's text set ({len(texts)} texts; the device has no text encoder, "
        f"so only these can be searched). Nearest known texts:\n{listed}"
    )
