"""Student image encoder -> ONNX, the ORT format for ONNX Runtime Mobile, and ORT quantization.

The normalisation and the L2 norm are inside the module, so the graph takes RGB in [0, 1]
(B, 3, S, S) float32 and returns unit (B, D) float32 embeddings.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ammkd.bundle.format import INPUT_NAME, OUTPUT_NAME
from ammkd.common.errors import ConfigError, ExportError
from ammkd.common.quiet import quiet

MIN_OPSET = 17
ONNX_QUANTIZATIONS = ("none", "fp16", "int8", "int8-dynamic", "int8-weights")
# ONNX Runtime session config a target needs: weight-only int8 is folded back to float weights at
# load (instead of dequantized on every run) only with QDQ fusion off. ORT-format files skip that
# folding at load, so their int8-weights variant dequantizes on every run (slower, same results).
SESSION_CONFIG = {"int8-weights": {"session.disable_quant_qdq": "1"}}
# The ops whose weights int8 stores: the matrix products.
WEIGHT_OPS = ("Conv", "MatMul", "Gemm")
# Ops quantized by default: the matrix products and the clamps after them. A Conv followed by
# ReLU6 is then quantized at the clamp's output, whose [0, 6] sets the scale; quantized at the
# Conv's own output (before the clamp) most of the 256 levels go to values the clamp discards
# (on the Flickr8k Lite0 student top-1 agreement fell from 90% to 49%). LayerNorm, Softmax and
# residual Adds stay float (they are what breaks ViT int8 accuracy); `quantize_all_ops` opts in.
QUANTIZED_OPS = WEIGHT_OPS + ("Clip", "Relu")


def export_onnx(
    model: torch.nn.Module, image_size: int, path: Path, opset: int = 18, dynamic_batch: bool = False
) -> Path:
    """Export with the dynamo exporter, weights embedded in the one file; batch 1 unless
    `dynamic_batch` (then the first input dimension is symbolic, `batch`)."""
    example = (torch.rand(2 if dynamic_batch else 1, 3, image_size, image_size),)
    dynamic = {"image": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic_batch else None
    return dynamo_export(model, example, path, opset, (INPUT_NAME, OUTPUT_NAME), dynamic)


def dynamo_export(
    model: torch.nn.Module, example: tuple, path: Path, opset: int, names: tuple[str, str], dynamic: dict | None
) -> Path:
    """One-input, one-output `model` -> ONNX at `path` (dynamo exporter, weights in the file);
    `names` (input, output), `dynamic` the exporter's dynamic_shapes (None: all static)."""
    if opset < MIN_OPSET:
        raise ConfigError(f"export: opset {opset} is too old; use {MIN_OPSET} or newer")
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with quiet("onnxscript", "torch.onnx", "onnx_ir"), torch.no_grad():
            program = torch.onnx.export(
                model,
                example,
                dynamo=True,
                opset_version=opset,
                input_names=[names[0]],
                output_names=[names[1]],
                dynamic_shapes=dynamic,
                external_data=False,
                verbose=False,
            )
        program.save(str(path), external_data=False)
    except Exception as e:  # the exporter raises many types; the message names the failing op
        raise ExportError(f"ONNX export of {path.name} failed: {type(e).__name__}: {e}") from e
    return path


def quantize_onnx(
    src: Path,
    dst: Path,
    mode: str,
    calibration: np.ndarray | None = None,
    quantize_all_ops: bool = False,
    float_convs: int = 0,
) -> Path:
    """fp32 ONNX `src` -> `dst` quantized with ONNX Runtime's tools:
      fp16          weights and activations fp16, inputs and outputs kept float32;
      int8          static QDQ: int8 per-channel symmetric weights, uint8 activations calibrated
                    (min-max) on `calibration` (N, 3, S, S) float32 in [0, 1], real images;
      int8-dynamic  int8 weights, activations quantized at run time (no calibration);
      int8-weights  weight-only: int8 per-channel symmetric weights dequantized in the graph,
                    float activations (`quantize_weights_only`; the size of int8, the accuracy
                    of float; compute stays float, like Core ML's linear weight quantization).
    Only QUANTIZED_OPS are quantized unless `quantize_all_ops` (which int8-weights ignores).
    int8 keeps the first `float_convs` convolutions (and their clamps) float: see float_prefix.py."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in ONNX_QUANTIZATIONS[1:]:
        raise ConfigError(f"export: ONNX quantization {mode!r} unknown; use one of {list(ONNX_QUANTIZATIONS)}")
    if mode == "int8" and (calibration is None or len(calibration) == 0):
        raise ConfigError("export: int8 (static) quantization needs calibration images; none were given")
    ops = None if quantize_all_ops else list(QUANTIZED_OPS)
    with tempfile.TemporaryDirectory() as tmp, quiet("root", "onnxruntime"):
        try:
            if mode == "fp16":
                import onnx
                from onnxruntime.transformers.float16 import convert_float_to_float16

                half = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
                onnx.save(sort_topologically(half), str(dst))  # the converter appends its input casts last
                return prune_opset_imports(dst)
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            if mode == "int8-weights":
                import onnx

                onnx.save(quantize_weights_only(onnx.load(str(pre))), str(dst))
                return prune_opset_imports(dst)
            if mode == "int8-dynamic":
                quantize_dynamic(
                    str(pre), str(dst), per_channel=True, weight_type=QuantType.QUInt8, op_types_to_quantize=ops
                )
                return prune_opset_imports(dst)

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.batches = iter(calibration[i : i + 1] for i in range(len(calibration)))

                def get_next(self):
                    x = next(self.batches, None)
                    return None if x is None else {INPUT_NAME: np.ascontiguousarray(x, np.float32)}

            quantize_static(
                str(pre),
                str(dst),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                op_types_to_quantize=ops,
                nodes_to_exclude=leading_conv_nodes(onnx_load(pre), float_convs),
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
        except (ConfigError, ExportError):
            raise
        except Exception as e:  # the quantizers raise many types
            raise ExportError(f"ONNX {mode} quantization of {src.name} failed: {type(e).__name__}: {e}") from e
    return prune_opset_imports(dst)


def sort_topologically(model):
    """ModelProto with its graph's nodes reordered so that each comes after the nodes producing
    its inputs (the ONNX checker requires it; ORT does not), original order kept otherwise."""
    nodes = list(model.graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    order, state = [], [0] * len(nodes)  # 0 new, 1 on the stack, 2 placed
    for start in range(len(nodes)):
        stack = [start]
        while stack:
            i = stack[-1]
            if state[i] == 2:
                stack.pop()
                continue
            state[i] = 1
            pending = [producer[x] for x in nodes[i].input if x in producer and state[producer[x]] == 0]
            if pending:
                stack.append(pending[0])
            else:
                state[i] = 2
                order.append(nodes[i])
                stack.pop()
    del model.graph.node[:]
    model.graph.node.extend(order)
    return model


def prune_opset_imports(path: Path) -> Path:
    """Rewrite the ONNX file at `path` declaring only the operator domains its nodes use (ORT's
    quantizers declare a dozen, e.g. com.microsoft.nchwc, that a strict reader must then support)."""
    import onnx

    model = onnx.load(str(path))
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    used = {n.domain for n in nodes} | {f.domain for f in model.functions} | {""}
    kept = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    if len(kept) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(kept)
        onnx.save(model, str(path))
    return path


def onnx_load(path: Path):
    import onnx

    return onnx.load(str(path))


def leading_conv_nodes(model, k: int) -> list[str]:
    """Names of the first `k` Conv nodes of ModelProto `model` in execution order, each with the
    Clip / Relu nodes that read its output (the clamps fused into it)."""
    if k <= 0:
        return []
    producer = {out: node for node in model.graph.node for out in node.output}
    order, seen = [], set()

    def visit(node) -> None:  # depth-first over inputs: a topological order, inputs first
        stack = [(node, False)]
        while stack:
            n, done = stack.pop()
            if done:
                order.append(n)
            elif id(n) not in seen:
                seen.add(id(n))
                stack.append((n, True))
                stack.extend((producer[i], False) for i in reversed(n.input) if i in producer)

    for node in model.graph.node:
        visit(node)
    convs = [n for n in order if n.op_type == "Conv"][:k]
    outputs = {o for c in convs for o in c.output}
    clamps = [n.name for n in model.graph.node if n.op_type in ("Clip", "Relu") and n.input[0] in outputs]
    return [c.name for c in convs] + clamps


def count_convs(path: Path) -> int:
    """How many Conv nodes the ONNX file at `path` has."""
    return sum(n.op_type == "Conv" for n in onnx_load(path).graph.node)


def quantize_weights_only(model, min_elements: int = 64):
    """ModelProto -> the same graph with the weights of Conv, Gemm and MatMul stored as int8.

    Each float weight initializer (at least `min_elements` values, read only by those ops) becomes
    int8 values + one float32 scale per output channel (symmetric, max |w| / 127) behind a
    DequantizeLinear node (opset >= 13, `axis` = the output-channel axis), so the consumers see
    the original float tensor. Activations are untouched."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def out_axis(node, ndim: int) -> int | None:
        if node.op_type == "Conv":
            return 0
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            return 0 if trans_b else 1
        return ndim - 1 if node.op_type == "MatMul" and ndim == 2 else None

    new_nodes, dropped = [], set()
    for name, init in inits.items():
        users = readers.get(name, [])
        if not users or any(u.op_type not in WEIGHT_OPS or list(u.input).index(name) != 1 for u in users):
            continue
        w = numpy_helper.to_array(init)
        axes = {out_axis(u, w.ndim) for u in users}
        if w.dtype != np.float32 or w.size < min_elements or len(axes) != 1 or None in axes:
            continue
        axis = axes.pop()
        reduce = tuple(d for d in range(w.ndim) if d != axis)
        scale = (np.abs(w).max(axis=reduce) / 127.0).astype(np.float32)
        scale[scale == 0] = 1.0
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        graph.initializer.extend(
            [
                numpy_helper.from_array(q, f"{name}_int8"),
                numpy_helper.from_array(scale, f"{name}_scale"),
                numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}_zero_point"),
            ]
        )
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                [name],
                name=f"{name}_dequantize",
                axis=axis,
            )
        )
        dropped.add(name)
    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = new_nodes + list(graph.node)  # the dequantizers first: a valid topological order
    del graph.node[:]
    graph.node.extend(nodes)
    opset = next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset.version < 13:
        raise ExportError(
            f"weight-only int8 needs opset >= 13 (per-axis DequantizeLinear); the model has {opset.version}"
        )
    onnx.checker.check_model(model)
    return model


def convert_to_ort(src: Path, dst: Path, basic: bool = False) -> Path:
    """ONNX -> the ORT format that ONNX Runtime Mobile loads (as `convert_onnx_models_to_ort`
    does: all graph optimizations except the x86-only NCHWc layout). `basic`: only the
    hardware-independent ones (for fp16 graphs, which the CPU provider would cast back to fp32)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    opts.graph_optimization_level = level.ORT_ENABLE_BASIC if basic else level.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(dst)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(
            str(src), opts, providers=["CPUExecutionProvider"], disabled_optimizers=["NchwcTransformer"]
        )
    except Exception as e:
        raise ExportError(f"ORT-format conversion of {src.name} failed: {type(e).__name__}: {e}") from e
    if not dst.is_file():
        raise ExportError(f"ORT-format conversion of {src.name} wrote nothing")
    return dst


def mobile_usability(path: Path) -> dict:
    """ONNX Runtime's `check_onnx_model_mobile_usability` on `path`: per execution provider
    (NNAPI, Core ML), whether the model should run well with it as is (YES / NO / MAYBE),
    plus the checker's own report lines."""
    from onnxruntime.tools.mobile_helpers import usability_checker

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("ammkd.mobile_usability")
    logger.propagate, handler = False, Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    tmp = Path(tempfile.mkdtemp())
    try:
        with quiet("root"):
            usable = usability_checker.analyze_model(Path(shutil.copy(path, tmp / path.name)), logger=logger)
    except Exception as e:
        raise ExportError(f"{path}: mobile usability check failed: {type(e).__name__}: {e}") from e
    finally:
        logger.removeHandler(handler)
        shutil.rmtree(tmp, ignore_errors=True)
    verdicts = {}
    for line in lines:
        m = re.match(r"Model should perform well with (.+) as is: (\w+)", line)
        if m:
            verdicts[m.group(1).lower().replace(" ", "_")] = m.group(2)
    return {
        "try_nnapi_or_coreml_ep": bool(usable),
        "as_is": verdicts,
        "report": [ln for ln in lines if ln.strip() and not ln.startswith("=")][:60],
    }
