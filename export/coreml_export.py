"""Student image encoder -> Core ML `.mlpackage` (ML Program), optionally weight-compressed.

The package takes an RGB image (a CVPixelBuffer/CGImage of `spec.size` x `spec.size`); the graph
scales pixels by 1/255 and applies the model's mean/std itself, and returns the L2-normalised
embedding as float32 (1, D). On Linux coremltools can convert and read packages but not run
them: `predict_coreml` (bundle/coreml_package.py, beside the package reader) needs macOS, and
`mil_reference.py` evaluates the saved MIL program with a small PyTorch reference evaluator.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ammkd.bundle.coreml_package import (
    PACKAGE_SUFFIX,
    _check_choice,
    coremltools_quietly,
    describe_coreml,
    quiet,
)
from ammkd.bundle.format import INPUT_NAME, OUTPUT_NAME, InputSpec
from ammkd.common.errors import ConfigError, ExportError

COREML_QUANTIZATIONS = ("none", "fp16", "int8", "palettize4", "palettize8")
COREML_PRECISIONS = ("fp16", "fp32")
COREML_TARGETS = ("iOS16", "iOS17", "iOS18")

_META = "ammkd."  # prefix of the user-defined metadata keys this module writes


def _check_spec(spec: InputSpec) -> None:
    """The Core ML image input does pixel/255 on RGB; the model must do mean/std itself."""
    if not spec.normalization_in_graph or tuple(spec.value_range) != (0.0, 1.0) or spec.color != "RGB":
        raise ConfigError(
            "Core ML export needs an input spec with RGB, value_range [0, 1] and normalization_in_graph "
            f"(the image input feeds pixel/255 to the graph); got color={spec.color!r}, "
            f"value_range={list(spec.value_range)}, normalization_in_graph={spec.normalization_in_graph}"
        )


def _captures(model: torch.nn.Module, example: torch.Tensor, errors: list[str]) -> Iterator[tuple[str, Any]]:
    """Sources for ct.convert, best first: torch.export (ATen dialect), then torch.jit.trace.

    torch.jit.trace is deprecated in recent torch; coremltools 9 converts both to the same graph
    for the students, so the trace is only tried when the exported program fails. Capture
    failures are appended to `errors`.
    """
    capture = {
        "torch.export": lambda: torch.export.export(model, (example,)).run_decompositions({}),
        "torch.jit.trace": lambda: torch.jit.trace(model, example),
    }
    for name, fn in capture.items():
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                source = fn()
        except Exception as e:  # noqa: BLE001 - any capture failure falls back to the next one
            errors.append(f"{name}: {type(e).__name__}: {e}")
            continue
        yield name, source


_HEAVY_OPS = frozenset({"conv", "conv_transpose", "linear", "matmul", "einsum"})


def _after_last_layer(op) -> bool:
    """True for ops that lead to the outputs without passing another conv/linear/matmul: the final
    L2 norm x * rsqrt(sum(x * x) + eps). They stay fp32 under fp16 compute: the squares of small
    head outputs fall below fp16's normal range (6e-5) and the 1e-12 eps rounds to 0, so on
    devices that flush subnormals the norm could divide by zero."""
    if op.op_type in _HEAVY_OPS:
        return False
    stack, seen = [op], set()
    while stack:
        current = stack.pop()
        for out in current.outputs:
            for child in out.child_ops:
                if child.op_type in _HEAVY_OPS:
                    return False
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append(child)
    return True


def _convert(model: torch.nn.Module, size: int, precision: str, min_target: str):
    ct = coremltools_quietly()
    example = torch.rand(1, 3, size, size)
    inputs = [
        ct.ImageType(
            name=INPUT_NAME,
            shape=(1, 3, size, size),
            scale=1 / 255.0,
            bias=[0.0, 0.0, 0.0],
            color_layout=ct.colorlayout.RGB,
        )
    ]
    # float32 output even at fp16 compute: apps read MLMultiArray floats without a dtype switch
    outputs = [ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)]
    errors: list[str] = []
    for frontend, source in _captures(model, example, errors):
        try:
            with quiet():
                return ct.convert(
                    source,
                    convert_to="mlprogram",
                    inputs=inputs,
                    outputs=outputs,
                    compute_precision=(
                        ct.transform.FP16ComputePrecision(op_selector=lambda op: not _after_last_layer(op))
                        if precision == "fp16"
                        else ct.precision.FLOAT32
                    ),
                    minimum_deployment_target=getattr(ct.target, min_target),
                )
        except Exception as e:  # noqa: BLE001 - the converter raises many types; try the next capture
            errors.append(f"{frontend}: {type(e).__name__}: {e}")
    raise ExportError("Core ML conversion failed (" + "; ".join(errors) + ")")


def _compress(mlmodel, quantize: str):
    """Post-training weight compression; weights under coremltools' size threshold stay as they are."""
    if quantize in ("none", "fp16"):
        return mlmodel
    import coremltools.optimize.coreml as cto

    if quantize == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")
        with quiet():
            return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    op = cto.OpPalettizerConfig(mode="kmeans", nbits=4 if quantize == "palettize4" else 8)
    with quiet():
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))


def export_coreml(
    model: torch.nn.Module,
    spec: InputSpec,
    path: Path,
    quantize: str = "none",
    precision: str = "fp16",
    min_target: str = "iOS16",
) -> dict:
    """Convert `model` ((1, 3, S, S) RGB in [0, 1] -> (1, D)) to an ML Program package at `path`.

    The package input `image` is an RGB image of S x S pixels (S = `spec.size`), output `embedding`
    float32 (1, D). `quantize`: "none" keeps weights at `precision`; "fp16" is fp16 compute and
    weights; "int8" per-channel symmetric int8 weights; "palettize4"/"palettize8" k-means lookup
    tables of 16/256 entries. `path` must end in `.mlpackage` and must not exist; the package is
    written beside it and renamed into place. Returns `describe_coreml(path)` plus the options.
    """
    _check_choice("quantize", quantize, COREML_QUANTIZATIONS)
    _check_choice("precision", precision, COREML_PRECISIONS)
    _check_choice("min_target", min_target, COREML_TARGETS)
    if quantize == "fp16" and precision != "fp16":
        raise ConfigError(f"Core ML quantize 'fp16' computes in fp16; it contradicts precision {precision!r}")
    _check_spec(spec)
    path = Path(path)
    if path.suffix != PACKAGE_SUFFIX:
        raise ConfigError(f"{path}: a Core ML package path must end in {PACKAGE_SUFFIX}")
    if path.exists():
        raise ExportError(f"{path}: already exists; remove it or choose another path for the Core ML package")
    path.parent.mkdir(parents=True, exist_ok=True)

    ct = coremltools_quietly()
    model = model.eval()
    mlmodel = _convert(model, spec.size, precision, min_target)
    try:
        mlmodel = _compress(mlmodel, quantize)
    except Exception as e:  # noqa: BLE001 - coremltools.optimize raises many types
        raise ExportError(f"Core ML {quantize} weight compression failed: {type(e).__name__}: {e}") from e
    with torch.no_grad():
        dim = int(model(torch.rand(1, 3, spec.size, spec.size)).shape[-1])
    mlmodel.short_description = f"ammkd image encoder: RGB {spec.size}x{spec.size} image -> L2-normalised embedding"
    mlmodel.input_description[INPUT_NAME] = f"RGB image, {spec.size}x{spec.size} (resize + centre-crop first)"
    mlmodel.output_description[OUTPUT_NAME] = f"L2-normalised embedding, float32 (1, {dim})"
    meta = {"quantization": quantize, "precision": precision, "min_target": min_target, "embed_dim": str(dim)}
    meta["input_spec"] = json.dumps(spec.to_dict(), separators=(",", ":"))
    for k, v in meta.items():
        mlmodel.user_defined_metadata[_META + k] = v
    mlmodel.user_defined_metadata[_META + "coremltools"] = ct.__version__

    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{PACKAGE_SUFFIX}")
    try:
        with quiet():
            mlmodel.save(str(tmp))
        _drop_unlisted(tmp)
        os.rename(tmp, path)  # a folder rename: readers see no package or a whole one
    except OSError as e:
        raise ExportError(f"Core ML export: could not write {path}: {e}") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {**describe_coreml(path), "quantization": quantize, "precision": precision, "min_target": min_target}


def _drop_unlisted(package: Path) -> None:
    """Remove what coremltools writes beside a package's own contents (for example
    `executorch_debug_handle_mapping.json`): a package is its Manifest.json and the Data/ items
    that manifest lists, nothing else."""
    for item in package.iterdir():
        if item.name not in ("Manifest.json", "Data"):
            shutil.rmtree(item) if item.is_dir() else item.unlink()
