"""Export benchmark: time of `--target all`, and size and parity of every quantization.

    uv run --frozen --no-sync python benchmarks/export.py --model runs/demo/students/adaptive --name demo

Two exports of the same student folder: `--target all` at fp32 (wall time of the whole export:
ONNX + ORT, ExecuTorch, Core ML, each with its parity check), then every quantization of every
target (`--allow-degraded`, so misses are measured rather than refused). Writes
`results/export_<name>.{json,md}`: bytes per artifact and relative to its fp32 file, cosine and
top-1 agreement against PyTorch, and the export seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from bench_util import relative, write_results

from ammkd.bundle.backends import OnnxImageEncoder
from ammkd.bundle.format import BundleReader
from ammkd.export.exporter import ExportConfig, export_bundle
from ammkd.tools.latency import measure_latency

ROOT = Path(__file__).resolve().parents[1]


def _latency_ms(bundle: BundleReader, target: dict) -> float | None:
    """Median ms of one image through an ONNX/ORT artifact, one thread, with its session config."""
    if target["format"] not in ("onnx", "ort"):
        return None
    enc = OnnxImageEncoder(bundle.path(target["file"]), threads=1, session_config=target.get("session_config"))
    size = bundle.manifest["input"]["size"]
    return measure_latency(enc.embed, np.random.default_rng(0).random((1, 3, size, size), np.float32), 20, 200)[
        "median_ms"
    ]


def _rows(bundle_dir: Path, fp32: dict[str, int] | None = None, suffix: str = "") -> list[dict]:
    """One row per artifact of a bundle; `fp32`: {format: bytes} to compare sizes with (default:
    the bundle's own unquantized artifacts); `suffix` is appended to the artifact names."""
    bundle = BundleReader.open(bundle_dir)
    targets = bundle.manifest["targets"]
    fp32 = fp32 or {t["format"]: t["bytes"] for t in targets if t["quantization"] == "none"}
    return [
        {
            "artifact": f"{t['format']}/{t['quantization']}{suffix}",
            "weights": t["dtype"],
            "bytes": t["bytes"],
            "vs_fp32": round(t["bytes"] / fp32[t["format"]], 3) if t["format"] in fp32 else None,
            "cosine_min": t["parity"]["cosine_min"],
            "top1_agreement": t["parity"]["top1_agreement"],
            "evaluator": t["parity"]["evaluator"],
            "export_s": t["export_seconds"],
            "ort_ms_1thread": _latency_ms(bundle, t),
        }
        for t in targets
    ]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="student folder written by ammkd distill")
    ap.add_argument("--name", required=True, help="results/export_<name>.{json,md}")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-export")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--parity-images", type=int, default=256, help="held-out images per parity check")
    args = ap.parse_args(argv)
    out = args.runs / args.name
    shutil.rmtree(out, ignore_errors=True)

    t0 = time.time()
    export_bundle(args.model, out / "all-fp32", ExportConfig(target="all"))
    all_seconds = round(time.time() - t0, 1)
    quant = ExportConfig(
        target="all",
        quantize="none,fp16,int8,int8-dynamic,int8-weights,palettize8",
        parity_images=args.parity_images,
        allow_degraded=True,
    )
    export_bundle(args.model, out / "quantized", quant)
    rows = _rows(out / "quantized")
    manifest = BundleReader.open(out / "quantized").manifest
    # for comparison: static int8 of every convolution (no float prefix), ONNX only
    all_int8 = ExportConfig(
        target="onnx", quantize="int8", int8_float_convs=0, parity_images=args.parity_images, allow_degraded=True
    )
    export_bundle(args.model, out / "int8-every-conv", all_int8)
    fp32_bytes = {r["artifact"].split("/")[0]: r["bytes"] for r in rows if r["artifact"].endswith("/none")}
    rows += _rows(out / "int8-every-conv", fp32_bytes, " (every conv int8)")
    int8 = next(r for r in rows if r["artifact"] == "onnx/int8")
    prefix = next(t for t in manifest["targets"] if t["format"] == "onnx" and t["quantization"] == "int8")["details"]
    prefix = prefix["float_prefix"]
    weights = next(r for r in rows if r["artifact"] == "onnx/int8-weights")
    results = {
        "benchmark": "export",
        "model": relative(args.model),
        "params": manifest["model"]["params"],
        "macs_per_image": manifest["model"]["macs_per_image"],
        "image_size": manifest["input"]["size"],
        "target_all_fp32_seconds": all_seconds,
        "onnx_int8_vs_fp32_bytes": int8["vs_fp32"],
        "onnx_int8_top1_agreement": int8["top1_agreement"],
        "int8_float_prefix": prefix,
        "onnx_int8_weights_vs_fp32_bytes": weights["vs_fp32"],
        "onnx_int8_weights_top1_agreement": weights["top1_agreement"],
        "artifacts": rows,
        "parity_misses": manifest["parity_misses"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "uv run --frozen --no-sync python benchmarks/export.py " + " ".join(argv or sys.argv[1:]),
    }
    md = [
        f"# Export of `{results['model']}`",
        "",
        f"{results['params'] / 1e6:.2f} M parameters, {results['macs_per_image'] / 1e6:.1f} M MACs per "
        f"{results['image_size']}px image. `--target all` (fp32, with parity checks) took "
        f"**{all_seconds} s** on {os.cpu_count()} cores. ONNX int8 (static, int8 weights and activations) is "
        f"**{int8['vs_fp32']:.0%}** of the fp32 ONNX size with top-1 agreement **{int8['top1_agreement']:.0%}**; "
        f"ONNX int8-weights (weight-only) is **{weights['vs_fp32']:.0%}** with **{weights['top1_agreement']:.0%}**.",
        "",
        f"Static int8 (ONNX and ExecuTorch) keeps the first **{prefix['float_convs']} of {prefix['convs']}** "
        f"convolutions float, the fewest whose top-1 agreement reached the bound plus a margin "
        f"({prefix['chosen_by']}, {prefix['probe_images']} images; tried: "
        + ", ".join(f"{t['float_convs']} -> {t['top1_agreement']:.1%}" for t in prefix["trials"])
        + "). The `(every conv int8)` rows quantize every convolution, for comparison.",
        "",
        "| artifact | weights | bytes | vs fp32 | cosine min | top-1 agreement | export s | ORT ms (1 thread) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['artifact']} | {r['weights']} | {r['bytes']:,} | {r['vs_fp32']} | {r['cosine_min']:.4f} | "
            f"{r['top1_agreement']:.2f} | {r['export_s']} | {r['ort_ms_1thread'] or ''} |"
            for r in rows
        ],
        "",
        f"Parity is measured against PyTorch on {args.parity_images} held-out images, the same for every target "
        "(Core ML off macOS: the saved MIL program evaluated in PyTorch). "
        "ORT ms: median of 200 runs, batch 1, one thread, with the target's session config. "
        "Misses of the default bounds: " + ("; ".join(m.strip() for m in results["parity_misses"]) or "none"),
        "",
        f"Command: `{results['command']}`",
        "",
    ]
    write_results(args.results, f"export_{args.name}", results, md)
    return results


if __name__ == "__main__":
    main()
