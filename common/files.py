"""Atomic writes and hashing: every file ammkd writes appears whole or not at all."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ammkd.common.errors import write_failure

STALE_UNOWNED_S = 3600  # a temporary without an owner PID (older versions) counts as stale after this


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporaries for `name`: `.NAME.PID.` (remove_stale_temps reads it)."""
    return f".{name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temps(folder: Path, name: str) -> list[Path]:
    """Remove what killed writers of `name` left in `folder`: `.NAME.PID.*` temporaries and
    `.NAME.old-PID` folders whose process is gone (and owner-less `.NAME.*` ones over an hour
    old). A live writer's temporaries are kept. Returns what was removed."""
    removed = []
    for p in folder.glob(f".{glob.escape(name)}.*") if folder.is_dir() else []:
        rest = p.name[len(name) + 2 :]
        owner = rest.removeprefix("old-").split(".")[0]
        if owner.isdigit():
            stale = not _alive(int(owner))
        else:
            try:
                stale = time.time() - p.lstat().st_mtime > STALE_UNOWNED_S
            except OSError:
                continue
        if stale:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory handles: nothing more to do
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, fsync it, then rename tmp over `path` (and fsync the folder), so
    readers never see a partial file, even after a power cut. A killed writer's leftovers for
    `path` are removed first (remove_stale_temps)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    except OSError as e:
        raise write_failure(path, e) from None
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) or _is_io_failure(e):
            raise write_failure(path, e) from None
        raise
    return path


def _is_io_failure(e: BaseException) -> bool:
    """Writers that wrap the OS error in their own type (safetensors: SafetensorError)."""
    return type(e).__name__ == "SafetensorError" and ("I/O error" in str(e) or "os error" in str(e))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(*parts: str) -> str:
    """Hex SHA-256 over UTF-8 strings, each terminated by a NUL so boundaries count."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and flush it (metrics logs survive a crash up to the last step)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
    except OSError as e:
        raise write_failure(path, e) from None


def atomic_save_npy(path: str | Path, array) -> Path:
    """np.save, atomically (a cache file is either complete or absent)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return atomic_write(path, write)
