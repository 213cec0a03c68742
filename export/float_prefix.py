"""Static int8 with a float prefix: how many leading convolutions stay float.

The first layers of a mobile CNN are where per-tensor int8 activations hurt most: few channels at
the highest resolution, with very different ranges, share one scale. On the Flickr8k Lite0
student, quantizing only the stem convolution costs more top-1 agreement (57%) than quantizing
any other 45 layers together; keeping the first 9 convolutions (stem and the 80 and 40 px
stages, about a fifth of the MACs) float brings the whole model to the parity gate.

The number is searched, not guessed: quantize with 0, `step`, 2 `step`, ... leading convolutions
float and keep the first that reaches the top-1 agreement bound (plus a margin against sampling
noise) on probe images: held-out images after the parity gate's own (the gate's images stay an
independent check), or training images where the held-out split is too small. Training images
flatter int8: the student is more confident on them (Flickr8k: 96% agreement vs 91% on dev).
ONNX Runtime is fast enough to search with; ExecuTorch uses the same count.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ammkd.bundle.backends import OnnxImageEncoder
from ammkd.bundle.parity import parity
from ammkd.export.onnx_export import SESSION_CONFIG, count_convs, quantize_onnx

SEARCH_STEP = 3  # one MBConv block: expand, depthwise, project
MARGIN = 0.01  # probe agreement needed above the gate's bound


def choose_float_convs(
    fp32: Path,
    calibration: np.ndarray,
    probe: np.ndarray,
    index: np.ndarray,
    min_top1: float,
    quantize_all_ops: bool = False,
) -> dict:
    """fp32: the float ONNX encoder; calibration, probe (N, 3, S, S) float32 model inputs (train
    images, disjoint); index (N, D) the shipped text vectors. Returns {"float_convs": k,
    "convs": total, "probe_images": M, "trials": [{"float_convs", "top1_agreement"}]}: the
    smallest k on the search grid whose probe agreement is >= min_top1 + MARGIN, else the
    best one tried (the parity gate then reports the miss)."""
    total = count_convs(fp32)
    ref = OnnxImageEncoder(fp32).embed(probe)
    trials = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in [*range(0, total, SEARCH_STEP), total]:
            dst = Path(tmp) / f"int8-{k}.onnx"
            quantize_onnx(fp32, dst, "int8", calibration, quantize_all_ops, float_convs=k)
            emb = OnnxImageEncoder(dst, session_config=SESSION_CONFIG.get("int8")).embed(probe)
            trials.append({"float_convs": k, "top1_agreement": parity(ref, emb, index, 1)["top1_agreement"]})
            if trials[-1]["top1_agreement"] >= min_top1 + MARGIN:
                break
    best = next((t for t in trials if t["top1_agreement"] >= min_top1 + MARGIN), None)
    best = best or max(trials, key=lambda t: t["top1_agreement"])
    return {"float_convs": best["float_convs"], "convs": total, "probe_images": len(probe), "trials": trials}
