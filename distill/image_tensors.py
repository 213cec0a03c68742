"""Decoded image tensors of a dataset (data.py): every image resized and centre-cropped once to
uint8 (N, 3, S, S), decoded on every core and cached on disk, keyed by the images and the
decode spec. Unreadable images fail with the file named, or are skipped with `skip_bad`."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from ammkd.bundle.format import InputSpec
from ammkd.bundle.preprocess import load_rgb, to_uint8_chw
from ammkd.common.errors import DataError
from ammkd.common.files import atomic_save_npy, atomic_write_json
from ammkd.common.paths import cache_dir
from ammkd.common.progress import progress
from ammkd.distill import synthetic
from ammkd.distill.data import SYNTHETIC_NATIVE_SIZE, SYNTHETIC_SEED, ImageTextData


def _render_chunk(job: tuple[int, list[int], InputSpec]) -> np.ndarray:
    """Worker: synthetic images `indices` -> uint8 (n, 3, S, S). Module-level so it pickles."""
    seed, indices, spec = job
    return np.stack([to_uint8_chw(synthetic.render(seed, i, SYNTHETIC_NATIVE_SIZE)[0], spec) for i in indices])


def _render_synthetic(data: ImageTextData, spec: InputSpec) -> np.ndarray:
    """Render a synthetic split on every core (rendering is pure CPU, ~3 ms an image)."""
    indices = [int(s.rsplit("/", 1)[1]) for s in data.sources]
    chunks = [indices[i : i + 500] for i in range(0, len(indices), 500)]
    jobs = [(SYNTHETIC_SEED, c, spec) for c in chunks]
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        return np.concatenate([_render_chunk(j) for j in jobs])
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        parts = list(progress(pool.map(_render_chunk, jobs), f"rendering {data.name}", total=len(jobs)))
    return np.concatenate(parts)


def _decode_files(job: tuple[list[str], InputSpec]) -> list[np.ndarray | str]:
    """Worker: image files -> uint8 (3, S, S) each, or the DataError message of an unreadable one."""
    paths, spec = job
    out: list[np.ndarray | str] = []
    for p in paths:
        try:
            out.append(to_uint8_chw(load_rgb(p), spec))
        except DataError as e:
            out.append(str(e))
    return out


def _decode_all(data: ImageTextData, spec: InputSpec) -> list[np.ndarray | str]:
    """Every image decoded (files: on every core), or the reason it is unreadable.

    A worker that dies (killed, out of memory) raises BrokenProcessPool in the parent: the run
    fails with a message instead of hanging on a lost result.
    """
    label = f"decoding {data.name} at {spec.size}px"
    if not data.from_files or len(data) < 64 or (os.cpu_count() or 1) < 2:
        results = []
        for i in progress(range(len(data)), label):
            try:
                results.append(to_uint8_chw(data.image(i), spec))
            except DataError as e:
                results.append(str(e))
        return results
    chunks = [data.sources[i : i + 64] for i in range(0, len(data), 64)]
    workers = min(len(chunks), os.cpu_count() or 1)
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(progress(pool.map(_decode_files, [(c, spec) for c in chunks]), label, total=len(chunks)))
    except BrokenProcessPool as e:
        raise DataError(f"{data.name}: an image-decoding worker died ({e}); no image was lost, re-run") from None
    return [r for part in parts for r in part]


def _readable(results: list[np.ndarray | str], name: str) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode results -> (stacked readable images, their indices, the reasons for the others)."""
    kept = [i for i, r in enumerate(results) if not isinstance(r, str)]
    skipped = [r for r in results if isinstance(r, str)]
    if not kept:
        raise DataError(f"{name}: no readable image ({skipped[0] if skipped else 'empty'})")
    return np.stack([results[i] for i in kept]), kept, skipped


def _files_cache_path(data: ImageTextData, spec: InputSpec) -> Path:
    """Decoded files are cached by path, size and mtime of every image, and the decode spec."""
    h = hashlib.sha256(f"{spec.size}|{spec.interpolation}|{spec.resize}|{spec.crop}".encode())
    for src in data.sources:
        st = os.stat(src) if os.path.exists(src) else None
        h.update(f"{src}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return cache_dir() / "images" / f"files-{h.hexdigest()[:32]}.npy"


def _decoded_files(data: ImageTextData, spec: InputSpec) -> tuple[np.ndarray, list[int], list[str]]:
    """(array of the readable images, their indices, reasons for the others), cached on disk."""
    path = _files_cache_path(data, spec)
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        return np.load(path), info["kept"], info["skipped"]
    arr, kept, skipped = _readable(_decode_all(data, spec), data.name)
    atomic_save_npy(path, arr)
    atomic_write_json(meta, {"kept": kept, "skipped": skipped})
    return arr, kept, skipped


def image_tensor(
    data: ImageTextData, spec: InputSpec, skip_bad: bool = False
) -> tuple[np.ndarray, ImageTextData, list[str]]:
    """Decode, resize and crop every image once: uint8 (N, 3, S, S).

    Returns the array, the data restricted to the images kept, and the skip reasons (only
    non-empty with `skip_bad`; without it the first unreadable image raises DataError naming
    the file). Decoded tensors are cached on disk, keyed by the images and the decode spec.
    """
    if data.cache_key:  # synthetic: rendered in parallel, never unreadable
        cache = cache_dir() / "images" / f"{data.cache_key}-{spec.size}-{spec.interpolation}.npy"
        if cache.is_file():
            return np.load(cache), data, []
        arr = _render_synthetic(data, spec)
        atomic_save_npy(cache, arr)
        return arr, data, []
    if data.from_files:
        arr, kept, skipped = _decoded_files(data, spec)
    else:
        arr, kept, skipped = _readable(_decode_all(data, spec), data.name)
    if skipped and not skip_bad:
        raise DataError(f"{skipped[0]} (use --skip-bad to skip unreadable images; {len(skipped)} in {data.name})")
    if len(kept) != len(data):
        data = ImageTextData(
            data.name,
            [data.captions[i] for i in kept],
            [data.sources[i] for i in kept],
            lambda j, f=data.loader, k=kept: f(k[j]),
            data.class_prompts,
            from_files=data.from_files,
        )
    return np.asarray(arr), data, skipped
