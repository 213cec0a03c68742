"""Student image encoder -> Core ML `.mlpackage` (ML Program), optionally weight-compressed.

The package takes an RGB image (a CVPixelBuffer/CGImage of `spec.size` x `spec.size`); the graph
scales pixels by 1/255 and applies the model's mean/std itself, and returns the L2-normalised
embedding as float32 (1, D). On Linux coremltools can convert and read packages but not run
them: `predict_coreml` needs macOS, and `mil_reference.py` evaluates the saved MIL program with a
small PyTorch reference evaluator instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import sys
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ammkd.common.errors import BundleError, ConfigError, ExportError
from ammkd.common.quiet import quiet as _quiet
from ammkd.export.bundle_format import InputSpec
from ammkd.export.onnx_export import INPUT_NAME, OUTPUT_NAME

COREML_QUANTIZATIONS = ("none", "fp16", "int8", "palettize4", "palettize8")
COREML_PRECISIONS = ("fp16", "fp32")
COREML_TARGETS = ("iOS16", "iOS17", "iOS18")
COREML_COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")
PACKAGE_SUFFIX = ".mlpackage"

_SPEC_VERSION_TARGET = {4: "iOS13", 5: "iOS14", 6: "iOS15", 7: "iOS16", 8: "iOS17", 9: "iOS18"}
_BLOB_SENTINEL = 0xDEADBEEF
_META = "ammkd."  # prefix of the user-defined metadata keys this module writes


def quiet():
    """coremltools' tqdm bars (stderr), its logger and warnings silenced for the block."""
    return _quiet("coremltools", stderr=True)


def coremltools_quietly():
    """coremltools, imported quietly (its import logs about missing macOS-only native libraries)."""
    if "coremltools" not in sys.modules:
        disabled = logging.root.manager.disable
        logging.disable(logging.WARNING)  # torch/coremltools import-time log lines
        try:
            with quiet():
                import coremltools  # noqa: F401
        finally:
            logging.disable(disabled)
    import coremltools as ct

    return ct


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"Core ML {what} {value!r} is not one of: {', '.join(valid)}")


def package_bytes(path: Path) -> int:
    """Total bytes of the files under a package folder (what an app bundle ships, before compile)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


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


# ---------------------------------------------------------------------------------------------
# Reading a package without a runtime


def _dtype_name(proto_enum, value: int) -> str:
    return proto_enum.Name(value).lower()


def _walk_ops(block) -> Iterator[Any]:
    """Every operation of a MIL proto block, nested blocks (control flow) included."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk_ops(inner)


def _values(op) -> Iterator[Any]:
    """The literal values of an op: its attributes and inline input arguments."""
    yield from op.attributes.values()
    for arg in op.inputs.values():
        for binding in arg.arguments:
            if binding.WhichOneof("binding") == "value":
                yield binding.value


def _lut_bits(op) -> int:
    """Index bits of a palettised weight: log2 of its lookup table's entries (iOS16: lut (2^n,);
    iOS18: lut (..., 2^n, vector size))."""
    lut = op.inputs["lut"].arguments[0].value if "lut" in op.inputs else op.attributes["lut"]
    dims = [d.constant.size for d in lut.type.tensorType.dimensions]
    entries = dims[0] if len(dims) == 1 else dims[-2]
    return int(entries).bit_length() - 1


def _blob_index(weights_dir: Path) -> dict[str, bytes]:
    """Weight files by their `@model_path/weights/...` name (read once for the bound checks)."""
    return {f"@model_path/weights/{p.name}": p.read_bytes() for p in weights_dir.glob("*") if p.is_file()}


def _check_blob(blobs: dict[str, bytes], ref, where: Path) -> None:
    """A blob reference must land on a blob header (sentinel 0xDEADBEEF) whose data is in the file."""
    data = blobs.get(ref.fileName)
    name = ref.fileName.replace("@model_path/", "Data/com.apple.CoreML/")
    if data is None:
        raise BundleError(f"{where}: weight file {name} is missing from the package")
    if ref.offset + 24 > len(data):
        raise BundleError(f"{where}: {name} is truncated (the blob at offset {ref.offset} is past its end)")
    sentinel, _, size, offset = struct.unpack_from("<IIQQ", data, ref.offset)
    if sentinel != _BLOB_SENTINEL:
        raise BundleError(f"{where}: {name} is corrupt (no blob header at offset {ref.offset})")
    if offset + size > len(data):
        raise BundleError(f"{where}: {name} is truncated (the blob at offset {ref.offset} ends past the file)")


def load_spec(path: Path):
    ct = coremltools_quietly()
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise BundleError(f"{path}: not a Core ML package folder ({what}; an .mlpackage is a directory)")
    if not (path / "Manifest.json").is_file():
        raise BundleError(f"{path}: not a Core ML package (no Manifest.json)")
    try:
        with quiet():
            spec = ct.utils.load_spec(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError, RuntimeError from the package reader
        raise BundleError(f"{path}: unreadable Core ML package ({type(e).__name__}: {e})") from None
    if spec.WhichOneof("Type") is None or not spec.description.input or not spec.description.output:
        raise BundleError(f"{path}: Core ML model spec is incomplete (truncated model.mlmodel?)")
    return spec


def describe_coreml(path: Path) -> dict:
    """Read a package's spec (no Core ML runtime needed) and summarise it.

    Returns {"spec_version", "min_target", "model_type", "opset", "inputs": [{"name", "type"
    ("image"/"multiarray"), "shape", "color_layout" (images) or "dtype"}], "outputs": [{"name",
    "shape", "dtype"}], "ops": {MIL op type: count}, "weight_dtypes": {dtype: count of tensors
    stored in the weight file}, "palette_bits": {index bits: count of palettised weights},
    "metadata": user-defined metadata, "coremltools", "package_bytes"}. A folder that is not a
    readable package, or whose weight file is truncated or corrupt, raises BundleError.
    """
    ct = coremltools_quietly()
    from coremltools.proto import FeatureTypes_pb2, MIL_pb2

    path = Path(path)
    spec = load_spec(path)
    model_type = spec.WhichOneof("Type")
    ops: Counter = Counter()
    weights: Counter = Counter()
    palette_bits: Counter = Counter()
    var_types: dict[str, Any] = {}
    mil_inputs: dict[str, list[int]] = {}
    opset = None
    if model_type == "mlProgram":
        main = spec.mlProgram.functions.get("main")
        if main is None or main.opset not in main.block_specializations:
            raise BundleError(f"{path}: Core ML program has no main function (truncated model.mlmodel?)")
        opset = main.opset
        for inp in main.inputs:
            mil_inputs[inp.name] = [d.constant.size for d in inp.type.tensorType.dimensions]
        blobs = _blob_index(path / "Data" / "com.apple.CoreML" / "weights")
        for op in _walk_ops(main.block_specializations[opset]):
            ops[op.type] += 1
            if op.type == "constexpr_lut_to_dense":
                palette_bits[_lut_bits(op)] += 1
            for out in op.outputs:
                var_types[out.name] = out.type.tensorType
            for value in _values(op):
                if value.WhichOneof("value") == "blobFileValue":
                    _check_blob(blobs, value.blobFileValue, path)
                    weights[_dtype_name(MIL_pb2.DataType, value.type.tensorType.dataType)] += 1
    elif model_type == "neuralNetwork":
        ops.update(layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers)

    inputs = []
    for f in spec.description.input:
        kind = f.type.WhichOneof("Type")
        if kind == "imageType":
            img = f.type.imageType
            layout = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(img.colorSpace)
            channels = 1 if layout == "GRAYSCALE" else 3
            shape = mil_inputs.get(f.name) or [1, channels, img.height, img.width]
            inputs.append({"name": f.name, "type": "image", "shape": shape, "color_layout": layout})
        elif kind == "multiArrayType":
            arr = f.type.multiArrayType
            dtype = _dtype_name(FeatureTypes_pb2.ArrayFeatureType.ArrayDataType, arr.dataType)
            shape = list(arr.shape) or mil_inputs.get(f.name, [])
            inputs.append({"name": f.name, "type": "multiarray", "shape": shape, "dtype": dtype})
        else:
            inputs.append({"name": f.name, "type": kind})
    outputs = []
    for f in spec.description.output:
        arr = f.type.multiArrayType
        shape = list(arr.shape)
        if not shape and f.name in var_types:
            shape = [d.constant.size for d in var_types[f.name].dimensions]
        dtype = _dtype_name(FeatureTypes_pb2.ArrayFeatureType.ArrayDataType, arr.dataType)
        outputs.append({"name": f.name, "shape": shape, "dtype": dtype})
    version = int(spec.specificationVersion)
    return {
        "spec_version": version,
        "min_target": _SPEC_VERSION_TARGET.get(version, f"specification version {version}"),
        "model_type": model_type,
        "opset": opset,
        "inputs": inputs,
        "outputs": outputs,
        "ops": dict(ops),
        "weight_dtypes": dict(weights),
        "palette_bits": dict(palette_bits),
        "metadata": dict(spec.description.metadata.userDefined),
        "coremltools": ct.__version__,
        "package_bytes": package_bytes(path),
    }


# ---------------------------------------------------------------------------------------------
# Running: Core ML itself (macOS) and the PyTorch reference evaluator of the MIL program (anywhere)


def check_images(images_u8: np.ndarray, size: int | None = None) -> np.ndarray:
    images_u8 = np.asarray(images_u8)
    if images_u8.dtype != np.uint8 or images_u8.ndim != 4 or images_u8.shape[1] != 3:
        raise ValueError(f"images must be uint8 (B, 3, S, S); got {images_u8.dtype} {images_u8.shape}")
    if size is not None and images_u8.shape[2:] != (size, size):
        raise ValueError(f"images are {images_u8.shape[2:]}, the package expects {size}x{size}")
    return images_u8


def predict_coreml(path: Path, images_u8: np.ndarray, compute_units: str = "all") -> np.ndarray:
    """Embed uint8 RGB images (B, 3, S, S) with Core ML itself -> float32 (B, D). macOS only.

    `compute_units`: "all" (Neural Engine/GPU/CPU, as an app runs it), "cpu_only", "cpu_and_gpu"
    or "cpu_and_ne". On other systems raises ExportError: coremltools has no Core ML runtime there.
    """
    if sys.platform != "darwin":
        raise ExportError(
            f"Core ML prediction needs macOS (this is {sys.platform}; coremltools ships no Core ML runtime "
            "here); use coreml_numeric_check for a reference evaluation of the package"
        )
    _check_choice("compute_units", compute_units, COREML_COMPUTE_UNITS)
    ct = coremltools_quietly()
    from PIL import Image

    info = describe_coreml(path)
    size = info["inputs"][0]["shape"][-1]
    images_u8 = check_images(images_u8, size)
    with quiet():
        mlmodel = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units.upper()))
    out = []
    for img in images_u8:
        pil = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)))  # (S, S, 3) uint8 -> RGB
        out.append(np.asarray(mlmodel.predict({INPUT_NAME: pil})[OUTPUT_NAME], dtype=np.float32).reshape(-1))
    return np.stack(out)
