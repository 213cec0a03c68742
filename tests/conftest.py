"""Shared fixtures: a tiny but real pipeline (two teachers, a student, a bundle) built once."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("AMMKD_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may wait on a model hub

TINY_DATA = "synthetic:300"
AMMKD = [sys.executable, "-m", "ammkd.cli.main"]


def save_figures(name: str, figures: dict) -> None:
    """Figures a test measured, also written to $AMMKD_FIGURES_DIR/name.json when it is set (a
    benchmark script collects them)."""
    folder = os.environ.get("AMMKD_FIGURES_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(json.dumps(figures, indent=1))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*AMMKD, *args], capture_output=True, text=True, timeout=300, env=os.environ.copy())


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    text = " ".join(lines)
    assert lines and text.startswith("error:"), proc.stderr
    for n in needles:
        assert n in text, proc.stderr


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test session gets its own cache folder (class vectors, decoded images)."""
    os.environ["AMMKD_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session", autouse=True)
def _executorch_one_thread():
    """ExecuTorch's thread pool is process-wide and fixed once a program loads; the runtime's
    default (threads=1, as on the command line) must match it in every test of this process."""
    import executorch.extension.pybindings.portable_lib as et_lib

    if et_lib._threadpool_get_thread_count() != 1:
        et_lib._unsafe_reset_threadpool(1)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    """Two teachers trained a few steps, an adaptive student, and its ONNX bundle."""
    from ammkd.distill.teacher_training import TeacherConfig, train_teacher
    from ammkd.distill.train import DistillConfig, distill
    from ammkd.export.exporter import ExportConfig, export_bundle

    root = tmp_path_factory.mktemp("pipeline")
    teachers = []
    for short, preset in (("vit", "ammkd-tiny-vit"), ("rn", "ammkd-tiny-rn")):
        teachers.append(
            train_teacher(TeacherConfig(model=preset, data=TINY_DATA, epochs=12, batch_size=32, lr=5e-4), root / short)
        )
    student = distill(
        DistillConfig(
            teachers=[str(t) for t in teachers],
            data=TINY_DATA,
            student="ammkd-mnv3-small-050",
            fusion="concat",  # the bounds of the export, page and Kotlin tests were set on this student
            epochs=40,
            batch_size=32,
        ),
        root / "student",
    )
    bundle = export_bundle(student, root / "bundle", ExportConfig(parity_images=16))
    return {"root": root, "vit": teachers[0], "rn": teachers[1], "student": student, "bundle": bundle}


@pytest.fixture(scope="session")
def text_pipeline(tmp_path_factory) -> dict[str, Path]:
    """Two teachers sharing the pretrained MiniLM text tower (frozen, own projections), a network-
    fusion student, and its bundle with a text encoder (fp32 and int8-dynamic). With
    AMMKD_TEXT_BUNDLE set, that bundle instead (benchmarks/text_search.py --apps: the Kotlin and
    page tests on a real one)."""
    if os.environ.get("AMMKD_TEXT_BUNDLE"):
        return {"bundle": Path(os.environ["AMMKD_TEXT_BUNDLE"])}
    from ammkd.distill.teacher_training import TeacherConfig, train_teacher
    from ammkd.distill.train import DistillConfig, distill
    from ammkd.export.exporter import ExportConfig, export_bundle

    root = tmp_path_factory.mktemp("text_pipeline")
    teachers = [
        train_teacher(
            TeacherConfig(model=f"{preset}+hf:all-MiniLM-L6-v2", data=TINY_DATA, epochs=3, batch_size=32), root / preset
        )
        for preset in ("ammkd-tiny-rn", "ammkd-tiny-vit")
    ]
    student = distill(
        DistillConfig(
            teachers=[str(t) for t in teachers],
            data=TINY_DATA,
            student="ammkd-mnv3-small-050",
            fusion="network",
            epochs=5,
            batch_size=32,
        ),
        root / "student",
    )
    bundle = export_bundle(
        student, root / "bundle", ExportConfig(parity_images=8, text_encoder="on"), notify=lambda s: None
    )
    return {"root": root, "teachers": teachers, "student": student, "bundle": bundle}


@pytest.fixture(scope="session")
def full_bundle(pipeline, tmp_path_factory) -> Path:
    """The pipeline's student exported to every target, unquantized and int8."""
    from ammkd.export.exporter import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("targets") / "bundle"
    # int8 of this tiny student misses its bounds (see the parity test), so keep what it gives
    cfg = ExportConfig(target="all", quantize="none,int8", parity_images=8, calibration_images=16, allow_degraded=True)
    return export_bundle(pipeline["student"], out, cfg)


@contextmanager
def serving(bundle: Path, **kw):
    """A server for `bundle` (make_server's options) in a thread -> its base URL."""
    from ammkd.tools.serve import make_server

    server = make_server(bundle, port=0, **kw)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def http_get(url: str, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    """(status, lower-cased headers, body) of one request; the path is sent exactly as given."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)  # the path is sent as is
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def smooth_images(n: int, size: int, seed: int, cells: int = 8) -> np.ndarray:
    """(n, 3, size, size) float32 in [0, 1]: random cells x cells colour fields upsampled, closer to
    photos than noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, cells, cells, generator=g)
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (N, D) arrays."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def chance_mean_recall(n_images: int, captions_per_image: int = 5, ks=(1, 5, 10)) -> float:
    """Expected mean recall (%) of random embeddings: t2i R@K = K/I; i2t R@K = 1 - C(T-c, K)/C(T, K)."""
    from math import comb

    t = n_images * captions_per_image
    t2i = [min(1.0, k / n_images) for k in ks]
    i2t = [1 - comb(t - captions_per_image, k) / comb(t, k) for k in ks]
    return 100 * (sum(t2i) + sum(i2t)) / (2 * len(ks))


def run_interrupted_then_resumed(monkeypatch, train, out: Path, crash_after: int) -> None:
    """`train(out, resume)` killed (KeyboardInterrupt) right after step `crash_after`, which
    must leave a checkpoint behind, then resumed to the end."""
    from ammkd.distill import schedule

    original = schedule.Checkpointer.step_done

    def crash(self, step, total):
        original(self, step, total)
        if step == crash_after:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(schedule.Checkpointer, "step_done", crash)
        with pytest.raises(KeyboardInterrupt):
            train(out, False)
    assert (out / "checkpoint.pt").is_file()  # the last periodic checkpoint, written atomically
    train(out, True)
