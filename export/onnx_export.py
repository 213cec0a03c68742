"""Student image encoder -> ONNX (normalisation and L2-norm are already inside the module)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from ammkd.common.errors import ExportError

INPUT_NAME = "image"
OUTPUT_NAME = "embedding"


def export_onnx(model: torch.nn.Module, image_size: int, path: Path, opset: int = 18) -> Path:
    """Export with the dynamo exporter at static batch 1, weights embedded in the one file."""
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.rand(1, 3, image_size, image_size),)
    quiet = [logging.getLogger(n) for n in ("onnxscript", "torch.onnx", "onnx_ir")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)  # the exporter's progress chatter is not for users
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                example,
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                external_data=False,
                verbose=False,
            )
        program.save(str(path), external_data=False)
    except Exception as e:  # the exporter raises many types; the message names the failing op
        raise ExportError(f"ONNX export failed: {type(e).__name__}: {e}") from e
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    return path
