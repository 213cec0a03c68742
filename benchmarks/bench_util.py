"""Helpers the benchmark scripts share: repository-relative paths, the machine's CPU name and
the results tail (JSON + Markdown written atomically, the Markdown printed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ammkd.common.files import atomic_write, atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


def relative(path: str | Path) -> str:
    """A path as committed results name it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def cpu_model() -> str | None:
    """`lscpu`'s model name, or None where there is no lscpu."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), None)


def write_results(folder: Path, stem: str, results: dict, markdown: str | list[str], echo: bool = True) -> None:
    """`folder/stem.json` and `folder/stem.md` (lines joined), each atomically; print the Markdown."""
    md = markdown if isinstance(markdown, str) else "\n".join(markdown)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / f"{stem}.json", results)
    atomic_write(folder / f"{stem}.md", lambda tmp: tmp.write_text(md))
    if echo:
        print(md)
