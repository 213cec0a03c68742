"""Where ammkd keeps its caches."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$AMMKD_CACHE_DIR`, else `~/.cache/ammkd`: derived data that is safe to delete."""
    return Path(os.environ.get("AMMKD_CACHE_DIR") or Path.home() / ".cache" / "ammkd")
