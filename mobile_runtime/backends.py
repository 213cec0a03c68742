"""Image encoder backends: one interface, `embed(input (B, 3, S, S) float32) -> (B, D) float32`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ammkd.common.errors import BundleError


class OnnxImageEncoder:
    """ONNX Runtime on the CPU, threads pinned (latency is measured per thread count)."""

    def __init__(self, model: str | Path | bytes, threads: int = 1, name: str = "image encoder"):
        """`model`: a path, or the model's bytes (as read and hash-checked from a bundle)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            source = model if isinstance(model, bytes) else str(model)
            self.session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad models
            where = name if isinstance(model, bytes) else model
            raise BundleError(f"{where}: ONNX Runtime cannot load this model ({e})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.batch = self.session.get_inputs()[0].shape[0]

    def embed(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if isinstance(self.batch, int) and x.shape[0] != self.batch:  # static batch: run one at a time
            return np.concatenate([self.embed(x[i : i + self.batch]) for i in range(0, len(x), self.batch)])
        return self.session.run(None, {self.input_name: x})[0]
