"""Atomic writes clean up after killed writers, and never touch a live writer's temporaries."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ammkd.common.files import atomic_write_json, remove_stale_temps, temp_prefix


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temporaries_are_removed_on_the_next_write(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    stale_file = tmp_path / f".checkpoint.pt.{dead}.k2j3.tmp"
    stale_file.write_bytes(b"half a checkpoint")
    live_file = tmp_path / f".checkpoint.pt.{live}.a1b2.tmp"  # a writer still running: kept
    live_file.write_bytes(b"being written")
    old_unowned = tmp_path / ".checkpoint.pt.zz9x.tmp"  # an older version's name, hours old
    old_unowned.write_bytes(b"")
    os.utime(old_unowned, (time.time() - 7200, time.time() - 7200))
    other = tmp_path / f".student.json.{dead}.q.tmp"  # another file's leftovers: its own next write
    other.write_bytes(b"")

    atomic_write_json(tmp_path / "checkpoint.pt", {"step": 1})
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["checkpoint.pt", live_file.name, other.name])
    assert temp_prefix("x") == f".x.{live}."


def test_killed_exports_leave_nothing_for_the_next_one(tmp_path):
    dead = _dead_pid()
    (tmp_path / f".bundle.{dead}.abcd").mkdir()  # a half-built bundle
    (tmp_path / f".bundle.{dead}.abcd" / "image_encoder.onnx").write_bytes(b"partial")
    (tmp_path / f".bundle.old-{dead}").mkdir()  # an old bundle moved aside, never removed
    (tmp_path / f".bundle.{os.getpid()}.live").mkdir()
    (tmp_path / "bundle").mkdir()
    removed = remove_stale_temps(tmp_path, "bundle")
    assert sorted(p.name for p in removed) == sorted([f".bundle.{dead}.abcd", f".bundle.old-{dead}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bundle", f".bundle.{os.getpid()}.live"])


def test_a_full_disk_is_one_clear_error_and_keeps_the_old_file(tmp_path):
    """Issue 20 item 12: a write the disk refuses (here ENOSPC, also as safetensors wraps it)
    names the file and the reason, leaves no temporary, and the previous version stays."""
    import errno

    from ammkd.common.errors import OutputError
    from ammkd.common.files import atomic_write, atomic_write_bytes

    target = tmp_path / "weights.safetensors"
    atomic_write_bytes(target, b"good")

    def full(tmp):
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class SafetensorError(Exception):  # the type safetensors' Rust writer raises
        pass

    def wrapped(tmp):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    for write in (full, wrapped):
        with pytest.raises(OutputError, match=r"weights\.safetensors: cannot be written \(.*No space left on device"):
            atomic_write(target, write)
        assert target.read_bytes() == b"good" and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_an_output_where_a_folder_cannot_be_made_is_one_line(tmp_path):
    from conftest import assert_user_error, run_cli

    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "teacher"
    proc = run_cli("teachers", "train", "--preset", "ammkd-tiny-rn", "--data", "synthetic:300", "--out", str(out))
    assert_user_error(proc, str(out), "Not a directory")
