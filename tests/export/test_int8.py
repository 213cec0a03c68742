"""Static int8 (ONNX Runtime and ExecuTorch/XNNPACK): activations measured after the ReLU6 clamp,
and a float prefix of leading convolutions, searched on probe images."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import cosine, smooth_images
from torch import nn

from ammkd.bundle.backends import ExecuTorchImageEncoder, OnnxImageEncoder
from ammkd.export.executorch_export import export_executorch
from ammkd.export.float_prefix import SEARCH_STEP, choose_float_convs
from ammkd.export.onnx_export import count_convs, export_onnx, leading_conv_nodes, quantize_onnx

SIZE = 32


class ClampNet(nn.Module):
    """Four conv + ReLU6 layers whose outputs before the clamp span about +-50 (large weights),
    flattened (no pooling to average rounding errors away) and L2-normalised: (B, 3, 32, 32) -> (B, 256)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.convs = nn.ModuleList(
            [nn.Conv2d(3, 16, 3, 2, 1), nn.Conv2d(16, 16, 3, 2, 1), nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 3, 2, 1)]
        )
        self.clamp = nn.ReLU6(inplace=True)  # as timm's EfficientNet-Lite writes it (aten.hardtanh_)
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.mul_(12.0)
                conv.bias.normal_(0.0, 3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = self.clamp(conv(x))
        return nn.functional.normalize(x.flatten(1), dim=-1)


@pytest.fixture(scope="module")
def clampnet(tmp_path_factory):
    model = ClampNet().eval()
    root = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(model, SIZE, root / "fp32.onnx")
    x = smooth_images(32, SIZE, seed=1, cells=4)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return {
        "model": model,
        "root": root,
        "fp32": fp32,
        "x": x,
        "ref": ref,
        "calibration": smooth_images(32, SIZE, seed=2, cells=4),
    }


def test_onnx_int8_measures_activations_after_the_clamp(clampnet):
    dst = quantize_onnx(clampnet["fp32"], clampnet["root"] / "int8.onnx", "int8", clampnet["calibration"])
    graph = onnx.load(str(dst)).graph
    conv_outputs = {n.output[0] for n in graph.node if n.op_type == "Conv"}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    scales = [
        float(inits[n.input[1]]) for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in conv_outputs
    ]
    # each conv's output is quantized over its clamp's [0, 6] (the Clip itself folded into the range),
    # not over the conv's own range (about +-50 here)
    assert len(scales) == 4 and max(scales) <= 6.0 / 255 * 1.001
    got = OnnxImageEncoder(dst).embed(clampnet["x"])
    assert cosine(clampnet["ref"], got).min() > 0.998


def test_executorch_int8_measures_activations_after_the_clamp(clampnet):
    path = clampnet["root"] / "int8.pte"
    info = export_executorch(clampnet["model"], SIZE, path, "int8", clampnet["calibration"])
    assert info["delegated_ops"] > 0 and not any("conv" in op for op in info["ops_outside_delegate"])
    got = ExecuTorchImageEncoder(path).embed(clampnet["x"])
    # the stock XNNPACK patterns observe the conv's output before the clamp: 0.9969 here
    assert cosine(clampnet["ref"], got).min() > 0.9985


def test_leading_convs_and_their_clamps_stay_float(clampnet):
    model = onnx.load(str(clampnet["fp32"]))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    names = leading_conv_nodes(model, 2)
    assert len(names) == 4 and set(names[:2]) <= set(convs)
    assert {n.op_type for n in model.graph.node if n.name in names} == {"Conv", "Clip"}
    assert leading_conv_nodes(model, 0) == [] and count_convs(clampnet["fp32"]) == 4

    dst = quantize_onnx(
        clampnet["fp32"], clampnet["root"] / "int8-2.onnx", "int8", clampnet["calibration"], float_convs=2
    )
    graph = onnx.load(str(dst)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    inits = {i.name for i in graph.initializer}
    by_name = {n.name: n for n in graph.node}
    kept = [by_name[n] for n in names[:2]]
    assert all(c.input[1] in inits and c.input[1] not in dequantized for c in kept)  # float weights
    quantized = [n for n in graph.node if n.op_type == "Conv" and n.name not in names]
    assert len(quantized) == 2 and all(c.input[1] in dequantized for c in quantized)  # int8 weights


def test_executorch_float_prefix_is_closer_to_float(clampnet):
    cos = {}
    for k in (0, 4):
        path = clampnet["root"] / f"int8-{k}.pte"
        export_executorch(clampnet["model"], SIZE, path, "int8", clampnet["calibration"], float_convs=k)
        cos[k] = cosine(clampnet["ref"], ExecuTorchImageEncoder(path).embed(clampnet["x"])).mean()
    assert 1 - cos[4] < 0.5 * (1 - cos[0])


def test_search_stops_at_the_first_count_that_passes(clampnet):
    index = np.random.default_rng(0).standard_normal((50, 256)).astype(np.float32)
    probe = smooth_images(16, SIZE, seed=3, cells=4)
    easy = choose_float_convs(clampnet["fp32"], clampnet["calibration"], probe, index, min_top1=0.0)
    assert easy["float_convs"] == 0 and len(easy["trials"]) == 1 and easy["probe_images"] == 16
    # a bound no quantized model can reach (1 + margin): every count on the grid is tried, the best is kept
    hard = choose_float_convs(clampnet["fp32"], clampnet["calibration"], probe, index, min_top1=1.0)
    grid = [t["float_convs"] for t in hard["trials"]]
    assert grid == [*range(0, 4, SEARCH_STEP), 4] and hard["convs"] == 4
    best = max(t["top1_agreement"] for t in hard["trials"])
    assert hard["float_convs"] == next(t["float_convs"] for t in hard["trials"] if t["top1_agreement"] == best)


@pytest.mark.parametrize("mode", ["fp16", "int8", "int8-dynamic", "int8-weights"])
def test_quantized_onnx_declares_only_the_domains_it_uses(clampnet, mode):
    dst = quantize_onnx(clampnet["fp32"], clampnet["root"] / f"domains-{mode}.onnx", mode, clampnet["calibration"])
    model = onnx.load(str(dst))
    used = {n.domain for n in model.graph.node} | {""}
    assert {o.domain for o in model.opset_import} <= used | {"ai.onnx"}, [o.domain for o in model.opset_import]
    onnx.checker.check_model(model)
