"""Reading a Core ML package without a Core ML runtime (its spec, a summary, checks of its weight
file), and running it with Core ML itself where there is one (macOS). Torch-free: the runtime
side of Core ML. Writing packages is export/coreml_export.py.

coremltools itself imports torch when torch is installed (its converters); the device path only
imports this module when a Core ML target is asked for.
"""

from __future__ import annotations

import logging
import struct
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ammkd.bundle.format import INPUT_NAME, OUTPUT_NAME
from ammkd.common.errors import BundleError, ConfigError, ExportError
from ammkd.common.quiet import quiet as _quiet

COREML_COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")
PACKAGE_SUFFIX = ".mlpackage"

_SPEC_VERSION_TARGET = {4: "iOS13", 5: "iOS14", 6: "iOS15", 7: "iOS16", 8: "iOS17", 9: "iOS18"}
_BLOB_SENTINEL = 0xDEADBEEF


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
