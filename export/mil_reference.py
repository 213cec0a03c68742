"""A reference evaluator of a converted Core ML ML Program, in PyTorch, for hosts without Core ML.

coremltools on Linux converts and reads packages but cannot run them, and its own op-level
evaluation does not cover convolutions. This evaluates the saved MIL program op by op: weights
exactly as stored (int8 and palettised weights expanded by coremltools' own decompression),
float32 arithmetic with every fp16-typed result rounded to fp16. It tracks Core ML's fp16
storage, not Apple's kernels, fp16 accumulation or the Neural Engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ammkd.bundle.coreml_package import check_images, coremltools_quietly, describe_coreml, load_spec, quiet
from ammkd.common.errors import ExportError


def _load_program(source):
    """A pymil Program from a package path, an MLModel, or a Program."""
    ct = coremltools_quietly()
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto
    from coremltools.converters.mil.mil import Program

    if isinstance(source, Program):
        return source
    if isinstance(source, ct.models.MLModel):
        spec, weights_dir = source.get_spec(), source.weights_dir
    else:
        describe_coreml(Path(source))  # clear BundleError for a bad package before the loader sees it
        spec = load_spec(Path(source))
        weights_dir = str(Path(source) / "Data" / "com.apple.CoreML" / "weights")
    if spec.WhichOneof("Type") != "mlProgram":
        raise ExportError(f"Core ML reference evaluation needs an ML Program, got {spec.WhichOneof('Type')}")
    with quiet():
        return load_milproto(spec, specification_version=spec.specificationVersion, file_weights_dir=weights_dir)


def _ints(v) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _axes(v, rank: int) -> list[int]:
    return [a % rank for a in _ints(v)]


def _pads(op, x: torch.Tensor, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """MIL pad_type/pad -> [begin0, end0, begin1, end1, ...] over the spatial dims."""
    pad_type = op.pad_type.val if op.pad_type is not None else "valid"
    spatial = x.shape[2:]
    if pad_type == "valid":
        return [0] * (2 * len(spatial))
    if pad_type == "custom":
        return _ints(op.pad.val)
    pads = []  # same / same_lower: output = ceil(in / stride)
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        pads += [big, small] if pad_type == "same_lower" else [small, big]
    return pads


def _torch_pad(pads: list[int]) -> list[int]:
    """[b0, e0, b1, e1] (first spatial dim first) -> F.pad order (last dim first)."""
    out = []
    for i in reversed(range(0, len(pads), 2)):
        out += [pads[i], pads[i + 1]]
    return out


def _pool(op, x: torch.Tensor, kind: str) -> torch.Tensor:
    kernel = _ints(op.kernel_sizes.val)
    strides = _ints(op.strides.val) if op.strides is not None else [1] * len(kernel)
    pads = _torch_pad(_pads(op, x, kernel, strides, [1] * len(kernel)))
    ceil = bool(op.ceil_mode.val) if op.ceil_mode is not None else False
    fn = {1: (F.max_pool1d, F.avg_pool1d), 2: (F.max_pool2d, F.avg_pool2d)}[len(kernel)]
    if kind == "max":
        return fn[0](F.pad(x, pads, value=float("-inf")), kernel, strides, ceil_mode=ceil)
    total = fn[1](F.pad(x, pads), kernel, strides, ceil_mode=ceil)
    if op.exclude_padding_from_average is not None and op.exclude_padding_from_average.val:
        ones = F.pad(torch.ones_like(x[:1, :1]), pads)
        total = total / fn[1](ones, kernel, strides, ceil_mode=ceil)
    return total


def _gelu(x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "TANH_APPROXIMATION":
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    return F.gelu(x)


def _slice_by_index(op, x: torch.Tensor) -> torch.Tensor:
    rank = x.dim()

    def opt(name, default):
        v = getattr(op, name)
        return list(np.asarray(v.val).reshape(-1)) if v is not None else [default] * rank

    begin, end, stride = opt("begin", 0), opt("end", 0), opt("stride", 1)
    bmask, emask, squeeze = opt("begin_mask", False), opt("end_mask", False), opt("squeeze_mask", False)
    index = []
    for i in range(rank):
        if squeeze[i]:
            index.append(int(begin[i]))
            continue
        s = int(stride[i])
        b = None if bmask[i] else int(begin[i])
        e = None if emask[i] else int(end[i])
        if s < 0:
            raise ExportError("Core ML reference evaluator: negative slice strides are not supported")
        index.append(slice(b, e, s))
    return x[tuple(index)]


_UNARY = {
    "relu": torch.relu,
    "relu6": lambda x: torch.clamp(x, 0, 6),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "silu": F.silu,
    "exp": torch.exp,
    "sqrt": torch.sqrt,
    "abs": torch.abs,
    "square": torch.square,
    "erf": torch.erf,
    "sin": torch.sin,
    "cos": torch.cos,
    "floor": torch.floor,
    "ceil": torch.ceil,
    "sign": torch.sign,
    "identity": lambda x: x,
}
_BINARY = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "real_div": torch.div,
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
}
_REDUCE = {"reduce_mean": torch.mean, "reduce_sum": torch.sum, "reduce_max": torch.amax, "reduce_min": torch.amin}
_OTHER = {
    "cast", "conv", "linear", "matmul", "thresholded_relu", "sigmoid_hard", "clip", "leaky_relu", "gelu",
    "softmax", "rsqrt", "inverse", "log", "reduce_l2_norm", "reshape", "transpose", "squeeze", "expand_dims",
    "concat", "split", "slice_by_index", "slice_by_size", "layer_norm", "batch_norm", "avg_pool", "max_pool",
    "pad",
}  # fmt: skip
MIL_REFERENCE_OPS = frozenset({"const", *_UNARY, *_BINARY, *_REDUCE, *_OTHER})


def _eval_op(op, arg) -> torch.Tensor | list[torch.Tensor]:
    """One MIL op on float32 tensors; `arg(name)` is the op's input as a tensor (None if absent)."""
    t = op.op_type
    x = arg("x") if hasattr(op, "x") else None

    def val(name, default=None):
        v = getattr(op, name, None)
        return default if v is None or v.val is None else v.val

    if t in _UNARY:
        return _UNARY[t](x)
    if t in _BINARY:
        return _BINARY[t](x, arg("y"))
    if t in _REDUCE or t == "reduce_l2_norm":
        axes = _axes(val("axes"), x.dim()) if val("axes") is not None else list(range(x.dim()))
        keep = bool(val("keep_dims", False))
        if t == "reduce_l2_norm":
            return torch.sqrt(torch.sum(x * x, dim=axes, keepdim=keep))
        return _REDUCE[t](x, dim=axes, keepdim=keep)
    if t == "cast":
        dtype = str(val("dtype"))
        if dtype == "fp16":
            return x.half().float()
        return x if dtype.startswith("fp") else torch.trunc(x)
    if t == "conv":
        w = arg("weight")
        n = w.dim() - 2
        strides, dilations = _ints(val("strides", [1] * n)), _ints(val("dilations", [1] * n))
        pads = _torch_pad(_pads(op, x, list(w.shape[2:]), strides, dilations))
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
        return fn(F.pad(x, pads), w, arg("bias"), strides, 0, dilations, int(val("groups", 1)))
    if t == "linear":
        return F.linear(x, arg("weight"), arg("bias"))
    if t == "matmul":
        y = arg("y")
        if val("transpose_x", False):
            x = x.transpose(-1, -2)
        if val("transpose_y", False):
            y = y.transpose(-1, -2)
        return torch.matmul(x, y)
    if t == "thresholded_relu":
        return torch.where(x >= float(val("alpha", 1.0)), x, torch.zeros_like(x))
    if t == "sigmoid_hard":
        return torch.clamp(float(val("alpha", 0.2)) * x + float(val("beta", 0.5)), 0, 1)
    if t == "clip":
        return torch.clamp(x, float(val("alpha")), float(val("beta")))
    if t == "leaky_relu":
        return F.leaky_relu(x, float(val("alpha", 0.01)))
    if t == "gelu":
        return _gelu(x, str(val("mode", "EXACT")))
    if t == "softmax":
        return torch.softmax(x, dim=int(val("axis", -1)))
    if t in ("rsqrt", "inverse", "log"):
        eps = float(val("epsilon", 1e-12 if t == "rsqrt" else 1e-4 if t == "inverse" else 1e-45))
        return {"rsqrt": torch.rsqrt, "inverse": torch.reciprocal, "log": torch.log}[t](x + eps)
    if t == "reshape":
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(_ints(val("shape")))]
        return x.reshape(shape)
    if t == "transpose":
        return x.permute(_ints(val("perm")))
    if t == "squeeze":
        axes = val("axes")
        return x.squeeze() if axes is None else x.squeeze(tuple(_axes(axes, x.dim())))
    if t == "expand_dims":
        rank = x.dim() + len(_ints(val("axes")))
        for a in sorted(a % rank for a in _ints(val("axes"))):
            x = x.unsqueeze(a)
        return x
    if t == "concat":
        if val("interleave", False):
            raise ExportError("Core ML reference evaluator: interleaved concat is not supported")
        return torch.cat([arg(v.name, var=v) for v in op.values], dim=int(val("axis")))
    if t == "split":
        axis = int(val("axis"))
        sizes = val("split_sizes")
        if sizes is None:
            sizes = [x.shape[axis] // int(val("num_splits"))] * int(val("num_splits"))
        return list(torch.split(x, _ints(sizes), dim=axis))
    if t == "slice_by_index":
        return _slice_by_index(op, x)
    if t == "slice_by_size":
        index = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(_ints(val("begin")), _ints(val("size"))))
        return x[index]
    if t == "layer_norm":
        axes = _axes(val("axes"), x.dim()) if val("axes") is not None else list(range(x.dim()))
        mean = x.mean(dim=axes, keepdim=True)
        y = (x - mean) * torch.rsqrt((x - mean).square().mean(dim=axes, keepdim=True) + float(val("epsilon", 1e-5)))
        shape = [x.shape[i] if i in axes else 1 for i in range(x.dim())]
        gamma, beta = arg("gamma"), arg("beta")
        y = y * gamma.reshape(shape) if gamma is not None else y
        return y + beta.reshape(shape) if beta is not None else y
    if t == "batch_norm":
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (x - arg("mean").reshape(shape)) * torch.rsqrt(arg("variance").reshape(shape) + float(val("epsilon", 1e-5)))
        gamma, beta = arg("gamma"), arg("beta")
        y = y * gamma.reshape(shape) if gamma is not None else y
        return y + beta.reshape(shape) if beta is not None else y
    if t in ("avg_pool", "max_pool"):
        return _pool(op, x, t[:3])
    if t == "pad":  # e.g. TF "same" padding of EfficientNet-Lite: pads of the last N dims, first dim first
        pads = [int(v) for v in arg("pad").flatten().tolist()]
        mode = str(val("mode", "constant"))
        if mode == "constant":
            return F.pad(x, _torch_pad(pads), value=float(val("constant_val", 0.0)))
        return F.pad(x, _torch_pad(pads), mode={"reflect": "reflect", "replicate": "replicate"}[mode])
    raise ExportError(f"Core ML reference evaluator: op {t!r} is not implemented")


def _run_program(ops: list, values: dict[str, torch.Tensor], output: str) -> torch.Tensor:
    """Evaluate the non-constant ops in order; `values` holds the input and the constants."""
    from coremltools.converters.mil.mil import types

    env = dict(values)

    def arg(op, name, var=None):
        v = var if var is not None else getattr(op, name, None)
        if v is None:
            return None
        if v.name not in env:
            if v.val is None:
                raise ExportError(f"Core ML reference evaluator: {v.name!r} is used before it is computed")
            env[v.name] = torch.as_tensor(np.asarray(v.val, dtype=np.float32))
        return env[v.name]

    for op in ops:
        if op.op_type == "const" or op.op_type.startswith("constexpr_"):
            continue
        out = _eval_op(op, lambda name, var=None, op=op: arg(op, name, var))
        for var, value in zip(op.outputs, out if isinstance(out, list) else [out]):
            env[var.name] = value.half().float() if var.dtype == types.fp16 else value.float()
    return env[output]


def mil_reference_predict(source, images_u8: np.ndarray) -> np.ndarray:
    """Evaluate a converted ML Program on uint8 RGB images (B, 3, S, S) -> float32 (B, D), on any OS.

    `source`: a package path, an `MLModel` or a pymil `Program`. The image input gets the pixel
    values 0..255 as Core ML feeds them (the program's own ops do /255 and mean/std). Weights are
    used as stored (constexpr int8/palettised weights expanded by coremltools' own decompression);
    arithmetic is float32 with every fp16-typed result rounded to fp16, so it tracks Core ML's fp16
    storage but not its fp16 accumulation or Neural Engine kernels. Unknown ops raise ExportError.
    """
    prog = _load_program(source)
    main = prog.functions["main"]
    ops = list(main.operations)
    kinds = {op.op_type for op in ops}
    unknown = sorted(k for k in kinds - MIL_REFERENCE_OPS if not k.startswith("constexpr_"))
    if unknown or any(op.blocks for op in ops):
        raise ExportError(f"Core ML reference evaluator does not implement: {', '.join(unknown) or 'control flow'}")
    ((in_name, in_var),) = main.inputs.items()
    images_u8 = check_images(images_u8, in_var.shape[-1])
    constants: dict[str, torch.Tensor] = {}
    with quiet():  # expand the compressed weights once, with coremltools' own decompression
        for op in ops:
            if op.op_type.startswith("constexpr_"):
                value = np.asarray(op.materialized_val_inference(), dtype=np.float32)
                constants[op.outputs[0].name] = torch.from_numpy(value)
    results = []
    with torch.no_grad():
        for img in images_u8:
            values = {**constants, in_name: torch.from_numpy(img[None].astype(np.float32))}
            results.append(_run_program(ops, values, main.outputs[0].name).reshape(-1).numpy())
    return np.stack(results).astype(np.float32)


def coreml_numeric_check(model: torch.nn.Module, source, images_u8: np.ndarray) -> dict:
    """Cosine between PyTorch embeddings of images/255 and `mil_reference_predict` of the package.

    `images_u8`: uint8 RGB (B, 3, S, S). Returns {"cosine_min", "cosine_mean", "n", "evaluator"};
    the evaluator is the PyTorch reference of the MIL program, not the Core ML runtime.
    """
    images_u8 = check_images(images_u8)
    got = mil_reference_predict(source, images_u8)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(images_u8.astype(np.float32) / 255.0)).numpy()
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1) + 1e-12)
    return {
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "n": len(cos),
        "evaluator": "mil-reference (PyTorch evaluation of the saved MIL program; not the Core ML runtime)",
    }
