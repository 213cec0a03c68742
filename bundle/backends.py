"""Image encoder backends: one interface, `embed(input (B, 3, S, S) float32) -> (B, D) float32`."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import numpy as np

from ammkd.bundle.format import BundleReader
from ammkd.common.errors import BundleError, ConfigError


class ImageEncoder:
    """The shared `embed`: a backend sets `batch` (the model's static batch size, None if dynamic) and
    `image_shape` ((3, S, S), None if unknown) and implements `_run` on one batch."""

    batch: int | None = None
    image_shape: tuple[int, int, int] | None = None

    def embed(self, x: np.ndarray) -> np.ndarray:
        """x (B, 3, S, S) float32 RGB in [0, 1] -> (B, D) float32 embeddings."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or (self.image_shape and x.shape[1:] != self.image_shape):
            want = f"(B, {', '.join(map(str, self.image_shape))})" if self.image_shape else "(B, 3, S, S)"
            raise ValueError(f"image encoder input must be {want} float32; got {x.shape}")
        if self.batch is None or len(x) == self.batch:
            return np.asarray(self._run(x), dtype=np.float32)
        out = []
        for i in range(0, len(x), self.batch):  # static batch: run it chunk by chunk, padding the last one
            chunk = x[i : i + self.batch]
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            out.append(np.asarray(self._run(chunk), dtype=np.float32)[: self.batch - pad])
        return np.concatenate(out)

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def onnx_session(model: str | Path | bytes, threads: int = 1, name: str = "model", session_config: dict | None = None):
    """An ONNX Runtime CPU session, `threads` intra-op threads; `model` a path or the model's bytes
    (as read and hash-checked from a bundle), `session_config` the target's config entries."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    for key, value in (session_config or {}).items():
        opts.add_session_config_entry(key, value)
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        source = model if isinstance(model, bytes) else str(model)
        session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad models
        where = name if isinstance(model, bytes) else model
        raise BundleError(f"{where}: ONNX Runtime cannot load this model ({e})") from None
    return session


class OnnxImageEncoder(ImageEncoder):
    """ONNX Runtime on the CPU, threads pinned (latency is measured per thread count)."""

    def __init__(
        self,
        model: str | Path | bytes,
        threads: int = 1,
        name: str = "image encoder",
        session_config: dict[str, str] | None = None,
    ):
        """`model`: a path, or the model's bytes (as read and hash-checked from a bundle);
        `session_config`: the target's ONNX Runtime config entries (manifest `session_config`)."""
        self.session = onnx_session(model, threads, name, session_config)
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        self.batch = spec.shape[0] if isinstance(spec.shape[0], int) else None
        if all(isinstance(d, int) for d in spec.shape[1:]) and len(spec.shape) == 4:
            self.image_shape = tuple(spec.shape[1:])

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


PTE_IDENTIFIER = b"ET12"  # flatbuffer file identifier of the .pte format this runtime reads
_PTE_HEADER_MAGIC = b"eh00"
_threads_locked = False  # ExecuTorch's thread pool is process-wide; resizing it under a loaded program is unsafe


class ExecuTorchImageEncoder(ImageEncoder):
    """An ExecuTorch `.pte` program (XNNPACK-delegated) run by the ExecuTorch Python runtime on the CPU."""

    def __init__(self, model: str | Path | bytes, threads: int | None = None, name: str = "image encoder"):
        """`model`: a path, or the program's bytes (as read and hash-checked from a bundle). `threads`: size of
        ExecuTorch's process-wide thread pool (None keeps it; it can only change before the first program loads)."""
        where = name if isinstance(model, bytes) else str(model)
        if isinstance(model, bytes):
            data = model
        else:
            try:
                data = Path(model).read_bytes()
            except OSError as e:
                raise BundleError(f"{where}: cannot read the ExecuTorch program ({e.strerror or e})") from None
        check_pte(data, where)  # before the runtime: its loader aborts the process on some malformed files
        chatty = logging.getLogger("torch.utils._pytree")  # deprecation notes logged on first import
        level = chatty.level
        chatty.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import executorch.extension.pybindings.portable_lib as et_lib
                from executorch.runtime import Runtime
        finally:
            chatty.setLevel(level)
        _set_threads(et_lib, threads)
        try:
            program = Runtime.get().load_program(data)
            if "forward" not in program.method_names:
                raise BundleError(f"{where}: the ExecuTorch program has no 'forward' method")
            self.method = program.load_method("forward")
        except RuntimeError as e:  # the runtime reports load failures as RuntimeError with an error code
            raise BundleError(f"{where}: ExecuTorch cannot load this program ({e})") from None
        meta = self.method.metadata
        if meta.num_inputs() != 1 or len(meta.input_tensor_meta(0).sizes()) != 4:
            raise BundleError(f"{where}: not an image encoder (forward must take one (B, 3, S, S) tensor)")
        shape = tuple(meta.input_tensor_meta(0).sizes())
        self.batch, self.image_shape = shape[0], shape[1:]
        self._program = program  # keeps the program (and its bytes) alive as long as the method

    def _run(self, x: np.ndarray) -> np.ndarray:
        import torch

        return self.method.execute((torch.from_numpy(x),))[0].numpy()


def check_pte(data: bytes, where: str) -> None:
    """Raise BundleError unless `data` starts like a whole ExecuTorch program: the file identifier, and an
    extended header whose program and segment sizes fit in the data (a truncated file fails here)."""
    if len(data) < 8 or data[4:8] != PTE_IDENTIFIER:
        found = data[4:8]
        if len(found) == 4 and found[:2] == b"ET" and found[2:].isdigit():
            raise BundleError(
                f"{where}: ExecuTorch program format {found.decode()} is not the {PTE_IDENTIFIER.decode()} "
                "this runtime reads (re-export with the installed ExecuTorch)"
            )
        raise BundleError(f"{where}: not an ExecuTorch program (.pte identifier {PTE_IDENTIFIER.decode()} missing)")
    header = data[8:40]
    if len(header) < 24 or header[:4] != _PTE_HEADER_MAGIC:
        raise BundleError(f"{where}: ExecuTorch program header is missing or truncated ({len(data)} bytes)")
    length = int.from_bytes(header[4:8], "little")
    program_size = int.from_bytes(header[8:16], "little")
    segment_base = int.from_bytes(header[16:24], "little")
    segment_size = int.from_bytes(header[24:32], "little") if length >= 32 and len(header) >= 32 else 0
    expected = max(program_size, segment_base + segment_size if segment_base else 0)
    if len(data) < expected:
        raise BundleError(f"{where}: ExecuTorch program is truncated ({len(data)} of {expected} bytes)")


def _set_threads(et_lib, threads: int | None) -> None:
    global _threads_locked
    if threads is not None and threads != et_lib._threadpool_get_thread_count():
        if _threads_locked:
            raise ConfigError(
                f"ExecuTorch's thread pool is process-wide and already has {et_lib._threadpool_get_thread_count()} "
                f"threads; it cannot change to {threads} after a program is loaded"
            )
        if threads < 1:
            raise ConfigError(f"threads must be >= 1; got {threads}")
        et_lib._unsafe_reset_threadpool(threads)
    _threads_locked = True


class CoreMLImageEncoder(ImageEncoder):
    """A Core ML `.mlpackage` run by Core ML itself (macOS only: coremltools has no runtime elsewhere).

    The package takes an RGB image, so the [0, 1] float input is turned back into uint8 pixels."""

    def __init__(self, path: str | Path, compute_units: str = "cpu_only"):
        if sys.platform != "darwin":
            raise BundleError(
                f"{path}: Core ML runs only on macOS/iOS (this is {sys.platform}); use --backend onnx or executorch"
            )
        from ammkd.bundle.coreml_package import describe_coreml

        self.path, self.compute_units = Path(path), compute_units
        size = describe_coreml(self.path)["inputs"][0]["shape"][-1]
        self.batch, self.image_shape = None, (3, size, size)

    def _run(self, x: np.ndarray) -> np.ndarray:
        from ammkd.bundle.coreml_package import predict_coreml

        u8 = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
        return predict_coreml(self.path, u8, self.compute_units)


BACKENDS = ("onnx", "ort", "executorch", "coreml")  # each the manifest `format` it runs


def why_not_runnable_here(target: dict) -> str | None:
    """Why this host cannot run a manifest target (Core ML, or ExecuTorch delegated to Core ML,
    off macOS), or None if it can."""
    if sys.platform == "darwin":
        return None
    if target["format"] == "coreml":
        return f"Core ML runs only on macOS/iOS (this is {sys.platform})"
    if target["format"] == "executorch" and "CoreMLBackend" in target.get("details", {}).get("delegates", []):
        return f"ExecuTorch's Core ML delegate runs only on macOS/iOS (this is {sys.platform})"
    return None


# quantizations from the most to the least precise: what a reader takes when none is asked for
PRECISION_ORDER = ("none", "fp16", "int8-weights", "palettize8", "int8", "int8-dynamic", "palettize4")


def open_image_encoder(
    bundle: BundleReader, backend: str = "auto", quantization: str | None = None, threads: int = 1
) -> tuple[ImageEncoder, dict]:
    """The bundle's image encoder for `backend` (or, with "auto", the first of ONNX, ExecuTorch,
    Core ML that the bundle holds and this host runs), with its manifest entry. Every file is
    hash-checked before the runtime sees it. `quantization`: None takes the most precise target
    of that format the bundle holds (PRECISION_ORDER: the unquantized one when it is there)."""
    if backend not in ("auto", *BACKENDS):
        raise ConfigError(f"unknown backend {backend!r}; use auto or one of {list(BACKENDS)}")
    encoders = [t for t in bundle.manifest["targets"] if t["role"] == "image_encoder"]
    formats = {t["format"] for t in encoders}
    if backend == "auto":
        runnable = {t["format"] for t in encoders if why_not_runnable_here(t) is None}
        backend = next((f for f in ("onnx", "executorch", "coreml") if f in runnable), None)
        if backend is None:
            raise BundleError(
                f"{bundle.root}: no image encoder this host can run (the bundle has: {sorted(formats) or 'none'})"
            )
    of_backend = {t["quantization"]: t for t in reversed(encoders) if t["format"] == backend}  # first wins
    if quantization is None:  # the most precise one the bundle holds (an export may leave fp32 out)
        want = next((q for q in PRECISION_ORDER if q in of_backend), "none")
    else:
        want = quantization
    target = of_backend.get(want)
    if target is None:
        have = sorted(f"{t['format']}/{t['quantization']}" for t in bundle.manifest["targets"])
        raise BundleError(
            f"{bundle.root}: no {backend} image encoder with quantization {want} (the bundle has: {have})"
        )
    reason = why_not_runnable_here(target)
    if reason:
        raise BundleError(f"{bundle.root}: cannot run its {backend}/{want} image encoder here: {reason}")
    if backend == "coreml":
        for f in target["package"]["files"]:
            bundle.read_bytes(f)  # every file of the package checked
        return CoreMLImageEncoder(bundle.root / target["package"]["path"]), target
    where = str(bundle.root / target["file"]["path"])
    data = bundle.read_bytes(target["file"])
    if backend == "executorch":
        return ExecuTorchImageEncoder(data, threads, where), target
    return OnnxImageEncoder(data, threads, where, target.get("session_config")), target
