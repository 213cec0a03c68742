"""One way to silence third-party chatter (converter progress, deprecation notes) around a call."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(*loggers: str, stderr: bool = False) -> Iterator[None]:
    """Within the block: the named loggers at ERROR, warnings ignored, and with `stderr` also
    Python-level stderr swallowed (progress bars; partial graphs printed before an exception,
    whose message still says what failed)."""
    found = [logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in found]
    for lg in found:
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stderr(io.StringIO()) if stderr else contextlib.nullcontext(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(found, levels):
            lg.setLevel(level)
