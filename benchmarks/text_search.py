"""Free-text search on the device: the bundle's text encoder on Flickr8k (docs/design.md §5.10).

    uv run --frozen --no-sync python benchmarks/text_search.py [--student DIR] [--bundle DIR]

Exports a Flickr8k AMMKD student (default: the ablation's adaptive seed-0 student, trained against
the pretrained Lite2 and Lite1 teachers: `benchmarks/ablation.py --preset flickr8k`) with its text
side (fp32, int8-dynamic and int8-weights text encoders), then measures on the 1,000 Flickr8k dev
images and their 5,000 captions:
- text -> image Recall@1/5/10 with each caption embedded by each text encoder variant from its raw
  text, against the same with the caption's class vector (its index row): the price of encoding
  on the device instead of looking the text up;
- the text gate's figures (cosine of each variant to the class vectors over index texts);
- per-query latency in Python ONNX Runtime, 1 thread, tokenize + encode, median and p90 over dev
  captions after warm-up, and each variant's size.
With `--apps`, the Kotlin core (ONNX Runtime Java, tests/android) and the web page (headless
Chromium, onnxruntime-web WASM, tests/web) run their free-text tests on this bundle: token ids,
embeddings and top-10 against Python, and their per-query latency.
Results: benchmarks/results/text_search_flickr8k.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_util import ROOT, cpu_model, relative, write_results

from ammkd.distill.data import load_split
from ammkd.export.exporter import ExportConfig, export_bundle
from ammkd.mobile_runtime.retriever import Retriever
from ammkd.tools.evaluate import evaluate_bundle

DEFAULT_STUDENT = ROOT / "runs/ablation/flickr8k/epochs-3/adaptive/seed0"
DATA = "flickr8k:../shared/data/flickr8k"
VARIANTS = ("none", "int8-dynamic", "int8-weights")
KEYS = ["t2i_R@1", "t2i_R@5", "t2i_R@10"]


def t2i_mean(r: dict) -> float:
    return round(float(np.mean([r[k] for k in KEYS])), 2)


def latency(bundle: Path, quant: str, queries: list[str], warmup: int = 20) -> dict:
    """Tokenize + encode one query at a time, 1 thread: median and p90 in ms."""
    r = Retriever.open(bundle)
    r.text_quantization = quant
    for q in queries[:warmup]:
        r.embed_text(q)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        r.embed_text(q)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": round(float(np.median(times)), 3), "p90_ms": round(float(np.percentile(times, 90)), 3)}


APP_TESTS = [
    "tests/android/test_kotlin_core.py::test_kotlin_free_text_search_agrees_with_python",
    "tests/web/test_web_demo.py::test_page_free_text_search_agrees_with_python",
]


def app_figures(bundle: Path) -> dict:
    """The Kotlin core's and the page's free-text tests on `bundle`: {"kotlin": ..., "web": ...}."""
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"AMMKD_TEXT_BUNDLE": str(Path(bundle).resolve()), "AMMKD_FIGURES_DIR": tmp}
        cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *APP_TESTS]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
        print(proc.stdout[-6000:], proc.stderr[-3000:])
        if proc.returncode != 0:
            raise SystemExit(f"the app tests failed on {bundle} (exit {proc.returncode})")
        kotlin = json.loads((Path(tmp) / "kotlin_text_search.json").read_text())
        web = json.loads((Path(tmp) / "web_text_search.json").read_text())
    rows = {}
    for q in ("none", "int8-dynamic", "int8-weights"):
        k, w = kotlin.get(f"text_variant_{q}"), web.get(q)
        rows[q] = {
            "kotlin_ort_java": {"median_ms": k["median_ms"], "p90_ms": k["p90_ms"]} if k else None,
            "chromium_wasm": {"median_ms": w["total"][0], "p90_ms": w["total"][1], "threads": w["threads"]}
            if w
            else None,
        }
    agreement = {
        "kotlin_token_ids_identical": kotlin["text_token_ids_identical"],
        "kotlin_fp32_index_top10_identical": kotlin["text_fp32_index_topk_positions_identical"],
        "kotlin_fp32_gallery_top10_identical": kotlin["text_fp32_gallery_topk_positions_identical"],
        "web_fp32_same_top10_texts": web["none"]["same_top10_texts"],
        "web_fp32_same_top10_photos": web["none"]["same_top10_photos"],
    }
    return {"latency": rows, "agreement": agreement}


def _latency_row(v: dict, apps: dict, cell) -> str:
    web = apps["chromium_wasm"]
    threads = f" ({web['threads']} threads)" if web else ""
    return (
        f"| {v['variant']} | {cell(v['python_ort_latency'])} | {cell(apps['kotlin_ort_java'])} | {cell(web)}{threads} |"
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", default=str(DEFAULT_STUDENT))
    ap.add_argument("--bundle", default=str(ROOT / "bundles/flickr8k-text"))
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--queries", type=int, default=300, help="dev captions timed per variant")
    ap.add_argument("--text-parity-texts", type=int, default=5000)
    ap.add_argument("--reuse-bundle", action="store_true", help="measure the bundle at --bundle as it is")
    ap.add_argument("--apps", action="store_true", help="also the Kotlin core's and the page's figures")
    args = ap.parse_args(argv)
    t0 = time.time()
    cfg = ExportConfig(
        target="onnx",
        quantize="none",
        text_encoder="on",
        text_quantize=",".join(VARIANTS),
        text_parity_texts=args.text_parity_texts,
        overwrite=True,
    )
    reuse = args.reuse_bundle and (Path(args.bundle) / "manifest.json").is_file()
    bundle = Path(args.bundle) if reuse else export_bundle(args.student, args.bundle, cfg)
    export_s = None if reuse else round(time.time() - t0, 1)
    r = Retriever.open(bundle)
    side = r.bundle.manifest["text_encoder"]
    dev = load_split(args.data, "dev")
    rows = {"class_vectors": evaluate_bundle(bundle, dev)}
    for t in side["targets"]:
        rows[f"text_encoder/{t['quantization']}"] = evaluate_bundle(bundle, dev, text_quantization=t["quantization"])
    base = t2i_mean(rows["class_vectors"])
    captions = [c for caps in dev.captions for c in caps][: args.queries]
    variants = []
    for t in side["targets"]:
        name = f"text_encoder/{t['quantization']}"
        variants.append(
            {
                "variant": t["quantization"],
                "dtype": t["dtype"],
                "bytes": t["bytes"],
                "gate": t["parity"],
                "t2i": {k: round(rows[name][k], 2) for k in KEYS},
                "t2i_mean": t2i_mean(rows[name]),
                "t2i_mean_vs_class_vectors": round(t2i_mean(rows[name]) - base, 2),
                "python_ort_latency": latency(bundle, t["quantization"], captions),
            }
        )
    results = {
        "student": relative(args.student),
        "bundle": relative(bundle),
        "data": f"{args.data} dev: {len(dev)} images, {sum(map(len, dev.captions))} captions",
        "class_vectors_t2i": {k: round(rows["class_vectors"][k], 2) for k in KEYS},
        "class_vectors_t2i_mean": base,
        "variants": variants,
        "left_out": side.get("left_out", []),
        "ids_differ_from_teachers": side["ids_differ_from_teachers"],
        "index_texts_checked": side["index_texts_checked"],
        "text_encoder_params": side["params"],
        "export_seconds": export_s,
        "apps": app_figures(bundle) if args.apps else None,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
    }
    md = [
        "# Free-text search on Flickr8k dev: the bundle's text encoder",
        "",
        f"Student `{results['student']}`; {results['data']}. Text -> image recall with each caption "
        f"embedded by the text encoder from its raw text, against looking up its class vector "
        f"(index row): mean of R@1/5/10 **{base}** with class vectors. Latency: Python ONNX Runtime, "
        f"1 thread, tokenize + encode one query, {len(captions)} dev captions after 20 warm-up, "
        f"{results['machine']['cpu']}.",
        "",
        "| text encoder | MB | gate cosine min / mean (index texts) | own text first | t2i R@1 | R@5 | R@10 | "
        "mean | vs class vectors | median ms | p90 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {v['variant']} | {v['bytes'] / 1e6:.1f} "
            f"| {v['gate']['cosine_min']:.4f} / {v['gate']['cosine_mean']:.4f} "
            f"| {v['gate']['self_top1']:.1%} | {v['t2i']['t2i_R@1']} | {v['t2i']['t2i_R@5']} | {v['t2i']['t2i_R@10']} "
            f"| {v['t2i_mean']} | {v['t2i_mean_vs_class_vectors']:+.2f} | {v['python_ort_latency']['median_ms']:.1f} "
            f"| {v['python_ort_latency']['p90_ms']:.1f} |"
            for v in variants
        ],
        "",
        f"Gate over {results['index_texts_checked']} index texts (seeded sample); "
        f"{results['ids_differ_from_teachers']} of them tokenize differently from the teachers' own "
        f"tokenizer. Text encoder: {results['text_encoder_params'] / 1e6:.1f} M parameters (one MiniLM, "
        "shared by both teachers, their projections and the fusion). "
        + (f"Left out by the gate: {[x['target'] for x in results['left_out']]}." if results["left_out"] else ""),
    ]
    if results["apps"]:
        lat, agree = results["apps"]["latency"], results["apps"]["agreement"]

        def cell(x):
            return f"{x['median_ms']:.1f} / {x['p90_ms']:.1f}" if x else "-"

        md += [
            "",
            "Per-query latency, tokenize + encode, median / p90 ms (Kotlin: ONNX Runtime Java on the JVM, "
            "1 thread; Chromium: onnxruntime-web WASM in headless Chromium, threads as shown; each over its "
            "test's queries after warm-up):",
            "",
            "| text encoder | Python ORT | Kotlin ORT-Java | Chromium WASM |",
            "|---|---:|---:|---:|",
            *[_latency_row(v, lat[v["variant"]], cell) for v in variants],
            "",
            "Agreement with Python (fp32): Kotlin token ids {kotlin_token_ids_identical}, top-10 index positions "
            "{kotlin_fp32_index_top10_identical}, gallery {kotlin_fp32_gallery_top10_identical}; page: same "
            "top-10 texts {web_fp32_same_top10_texts}, photos {web_fp32_same_top10_photos}.".format(**agree),
        ]
    write_results(ROOT / "benchmarks" / "results", "text_search_flickr8k", results, md)
    return results


if __name__ == "__main__":
    main()
