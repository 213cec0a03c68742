"""Student image encoder -> ExecuTorch `.pte`, delegated to XNNPACK (fp32, or int8 by PT2E static
quantization; Android and iOS CPUs) or to Core ML (fp16 compute; iOS/macOS only, where ExecuTorch's
Core ML backend hands the subgraph to Core ML and its Neural Engine)."""

from __future__ import annotations

import operator
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ammkd.common.errors import ConfigError, ExportError
from ammkd.common.files import atomic_write_bytes
from ammkd.common.quiet import quiet

EXECUTORCH_QUANTIZATIONS = ("none", "int8")
DELEGATES = ("xnnpack", "coreml")
_CHATTY_LOGGERS = ("executorch", "torchao", "torch.export", "torch._export", "torch.utils._pytree", "torch.fx")


def quiet_exporters():
    """The exporters' warnings, log chatter and stderr silenced (torch.export prints the partial
    graph there on failure; the raised error says why)."""
    return quiet(*_CHATTY_LOGGERS, stderr=True)


def export_executorch(
    model: torch.nn.Module,
    image_size: int,
    path: Path,
    quantize: str = "none",
    calibration: np.ndarray | None = None,
    delegate: str = "xnnpack",
    coreml_min_target: str = "iOS16",
    float_convs: int = 0,
) -> dict:
    """Lower `model` to an ExecuTorch program delegated to `delegate` and write it atomically to `path`.

    The program takes one float32 image (1, 3, image_size, image_size), RGB in [0, 1], and returns the
    L2-normalised embedding (1, D) float32 (normalisation and L2-norm are inside the model).
    `quantize`: "none" keeps fp32 weights and activations; "int8" is static PT2E quantization (per-channel
    symmetric int8 weights, int8 activations) calibrated on `calibration`, float32 (N, 3, S, S) in [0, 1],
    fed one image at a time; its first `float_convs` convolutions stay float (float_prefix.py).
    Returns the manifest entry's info: {"backend", "delegated_ops",
    "portable_ops", "ops_outside_delegate" {op: count}, "delegates" [backend ids],
    "delegate_subgraphs"}; `getitem` (tuple unpacking) is not counted as an op.
    """
    if quantize not in EXECUTORCH_QUANTIZATIONS:
        raise ConfigError(
            f"ExecuTorch quantization {quantize!r} is not supported; use one of: {', '.join(EXECUTORCH_QUANTIZATIONS)}"
        )
    if delegate not in DELEGATES:
        raise ConfigError(f"ExecuTorch delegate {delegate!r} is not supported; use one of: {', '.join(DELEGATES)}")
    if delegate == "coreml" and quantize != "none":
        raise ConfigError("ExecuTorch with the Core ML delegate: only --quantize none (Core ML computes in fp16)")
    if quantize == "int8":
        calibration = _check_calibration(calibration, image_size)
    model = model.eval()
    example = (torch.rand(1, 3, image_size, image_size),)
    try:
        with quiet_exporters(), torch.no_grad():
            from executorch.exir import to_edge_transform_and_lower
            from executorch.exir.passes.constant_prop_pass import constant_prop_pass

            if quantize == "int8":
                model = _quantize_int8(model, example, calibration, float_convs)
            program = torch.export.export(model, example, strict=False)
            edge = to_edge_transform_and_lower(program, partitioner=[_partitioner(delegate, coreml_min_target)])
            # Fold (in place) the scalar constants that edge lowering materialises with a copy op each
            # (hardswish's 3 and 6): left alone they run outside the delegate, as portable ops, on every call.
            constant_prop_pass(edge.exported_program())
            info = _delegation_info(edge.exported_program().graph_module, delegate)
            pte = edge.to_executorch().buffer
    except Exception as e:  # torch.export / exir raise many types; the message names the failing op
        raise ExportError(f"ExecuTorch export ({delegate}, {quantize}) failed: {type(e).__name__}: {e}") from e
    if info["delegated_ops"] == 0:
        raise ExportError(f"ExecuTorch export ({delegate}, {quantize}): the {delegate} partitioner delegated no ops")
    atomic_write_bytes(path, pte)
    return info


def _check_calibration(calibration: np.ndarray | None, image_size: int) -> np.ndarray:
    if calibration is None or len(calibration) == 0:
        raise ConfigError("int8 ExecuTorch export needs calibration images (N, 3, S, S) float32 in [0, 1]; none given")
    x = np.asarray(calibration, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != (3, image_size, image_size):
        raise ConfigError(
            f"calibration images must be (N, 3, {image_size}, {image_size}) float32 in [0, 1]; got {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ConfigError("calibration images contain NaN or infinite values")
    return x


def _quantize_int8(
    model: torch.nn.Module, example: tuple[torch.Tensor], calibration: np.ndarray, float_convs: int
) -> torch.nn.Module:
    """PT2E static quantization for XNNPACK: annotate, observe `calibration` one image at a time, convert."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = _clamp_aware_quantizer(float_convs).set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, example, strict=False).module(), quantizer)
    for image in calibration:
        prepared(torch.from_numpy(np.ascontiguousarray(image[None])))
    return convert_pt2e(prepared)


CONV_OPS = (torch.ops.aten.conv2d.default,)
CLAMP_OPS = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default, torch.ops.aten.relu6.default)


def _clamp_aware_quantizer(float_convs: int):
    """XNNPACKQuantizer that quantizes a conv followed by ReLU6 (hardtanh) at the clamp's output,
    as it already does for conv + ReLU (its stock patterns observe the conv's output before the
    clamp: int8 top-1 agreement 59% instead of 93% on the Flickr8k Lite0 student), and leaves
    the first `float_convs` convolutions (in graph order) and their clamps unquantized."""
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer_utils as utils
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    class ClampAwareQuantizer(XNNPACKQuantizer):
        def annotate(self, gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
            cfg = self.global_config
            convs = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in CONV_OPS]
            for i, conv in enumerate(convs):
                users = list(conv.users)
                clamp = users[0] if len(users) == 1 and users[0].target in CLAMP_OPS else None
                bias = conv.args[2] if len(conv.args) > 2 and isinstance(conv.args[2], Node) else None
                part = [n for n in (conv, conv.args[1], bias, clamp) if n is not None]
                if i >= float_convs and clamp is not None:
                    qspecs = {conv.args[0]: utils.get_input_act_qspec(cfg), conv.args[1]: utils.get_weight_qspec(cfg)}
                    if bias is not None:
                        qspecs[bias] = utils.get_bias_qspec(cfg)
                    conv.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(input_qspec_map=qspecs, _annotated=True)
                    clamp.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(
                        output_qspec=utils.get_output_act_qspec(cfg), _annotated=True
                    )
                if i < float_convs or clamp is not None:  # annotated here, or kept float: stock patterns skip it
                    utils._mark_nodes_as_annotated(part)
            return super().annotate(gm)

    return ClampAwareQuantizer()


def _op_name(target) -> str:
    """`aten.convolution.default` for an edge/aten op overload, else the callable's name."""
    name = getattr(target, "_name", None) or getattr(target, "__name__", None) or str(target)
    return name.replace("::", ".")


def _partitioner(delegate: str, coreml_min_target: str):
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    from ammkd.bundle.coreml_package import coremltools_quietly
    from ammkd.export.coreml_export import COREML_TARGETS

    if coreml_min_target not in COREML_TARGETS:
        raise ConfigError(f"Core ML deployment target {coreml_min_target!r} unknown; use one of {list(COREML_TARGETS)}")
    ct = coremltools_quietly()
    specs = CoreMLBackend.generate_compile_specs(
        minimum_deployment_target=getattr(ct.target, coreml_min_target), compute_precision=ct.precision.FLOAT16
    )
    return CoreMLPartitioner(compile_specs=specs)


def _delegation_info(graph_module: torch.fx.GraphModule, delegate: str) -> dict:
    """Count the ops inside the backend delegates vs those left to ExecuTorch's portable kernels."""
    delegates, delegated, outside = [], 0, Counter()
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module"):
            lowered = getattr(graph_module, node.target)
            delegates.append(lowered.backend_id)
            delegated += sum(
                1
                for n in lowered.original_module.graph.nodes
                if n.op == "call_function" and n.target is not operator.getitem
            )
        elif node.op == "call_function" and node.target is not operator.getitem:
            if node.target is not torch.ops.higher_order.executorch_call_delegate:
                outside[_op_name(node.target)] += 1
    return {
        "backend": delegate,
        "delegated_ops": delegated,
        "portable_ops": sum(outside.values()),
        "ops_outside_delegate": dict(sorted(outside.items())),
        "delegates": sorted(set(delegates)),
        "delegate_subgraphs": len(delegates),
    }
