"""The web demo in headless Chromium: page load to ready, and encode + search per image, WASM with one
thread and with several, beside ONNX Runtime (Python) on the same model in the same run.

    uv run --frozen --no-sync python benchmarks/web_demo.py --bundle runs/demo/bundle --name demo

The bundle is served by `ammkd serve`'s server (in this process, on a free port) and the page is
driven by `web_demo/tests/drive.mjs` (playwright-core + Debian's Chromium): for each thread count
a fresh page is loaded (`?ep=wasm&threads=N`; load = navigation start to the page's ready state, which
includes fetching and hash-checking the model and the index), then the bundle's golden input is
encoded and searched (top-10) `--runs` times after 5 warm-ups. The Python figure is ONNX Runtime
(one thread) and the apps' NumPy top-10 on the same golden input. Writes
`results/web_demo_<name>.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ammkd.common.files import atomic_write, atomic_write_json
from ammkd.mobile_runtime.latency import summarize_ms
from ammkd.mobile_runtime.retriever import Retriever
from ammkd.mobile_runtime.serve import make_server

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "web_demo" / "tests" / "drive.mjs"


def _page(url: str, runs: int) -> dict:
    proc = subprocess.run(
        ["node", str(DRIVER), url, "--bench", str(runs)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT / "web_demo",
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out.get("driverError") or not out["state"].get("ready"):
        raise SystemExit(f"page failed: {out.get('driverError') or out['state']}")
    b = out["bench"][0]
    enc = [r["encode"] for r in b["rows"]]
    both = [r["encode"] + r["search"] for r in b["rows"]]
    return {
        "threads": b["threads"],
        "load_to_ready_ms": out["loadMs"],
        "page_load_ms": round(b["load"], 1),
        "encode": summarize_ms(enc),
        "search": summarize_ms([r["search"] for r in b["rows"]]),
        "encode_plus_search": summarize_ms(both),
        "cross_origin_isolated": out["crossOriginIsolated"],
    }


def _python(bundle: Path, runs: int) -> dict:
    from threadpoolctl import threadpool_limits

    r = Retriever.open(bundle, threads=1, backend="onnx")
    g = r.bundle.manifest["golden"][0]
    x = r.bundle.read_array(g["input"]).astype(np.float32)
    enc, both = [], []
    with threadpool_limits(1):
        for i in range(runs + 5):
            t0 = time.perf_counter()
            emb = r.encoder.embed(x)[0]
            t1 = time.perf_counter()
            r.search_embedding(emb, 10)
            t2 = time.perf_counter()
            if i >= 5:
                enc.append((t1 - t0) * 1e3)
                both.append((t2 - t0) * 1e3)
    return {"threads": 1, "encode": summarize_ms(enc), "encode_plus_search": summarize_ms(both)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    server = make_server(args.bundle, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        pages = [_page(f"{base}?ep=wasm&threads={n}", args.runs) for n in args.threads]
    finally:
        server.shutdown()
    python = _python(args.bundle, args.runs)
    chromium = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True).stdout.strip()
    lock = json.loads((ROOT / "web_demo" / "package-lock.json").read_text())
    ort_web = lock["packages"]["node_modules/onnxruntime-web"]["version"]
    results = {
        "benchmark": "web_demo",
        "bundle": str(args.bundle),
        "pages": pages,
        "python_onnxruntime": python,
        "versions": {
            "chromium": chromium,
            "onnxruntime-web": ort_web,
            "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "uv run --frozen --no-sync python benchmarks/web_demo.py " + " ".join(argv or sys.argv[1:]),
    }
    py = python["encode_plus_search"]["median_ms"]
    md = [
        f"# Web demo in headless Chromium ({args.name})",
        "",
        f"{chromium}, onnxruntime-web {ort_web} (WASM, SIMD), page served by `ammkd serve`'s server "
        f"(cross-origin isolated: {pages[0]['cross_origin_isolated']}). Golden input of `{args.bundle}`, "
        f"top-10 search; {args.runs} timed runs after 5 warm-ups; a fresh page per thread count.",
        "",
        "| runtime | threads | load to ready ms | encode ms (median / p90) | encode + search ms (median) | vs Python |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| onnxruntime-web WASM | {p['threads']} | {p['load_to_ready_ms']} | {p['encode']['median_ms']} / "
            f"{p['encode']['p90_ms']} | {p['encode_plus_search']['median_ms']} | "
            f"{p['encode_plus_search']['median_ms'] / py:.1f}x |"
            for p in pages
        ],
        f"| ONNX Runtime (Python) | 1 | | {python['encode']['median_ms']} / {python['encode']['p90_ms']} | {py} | 1x |",
        "",
        "Load to ready: navigation start until the page has fetched and SHA-256-checked the model and the "
        "index and created the session.",
        "",
        f"Machine: {results['machine']}",
        "",
        f"Command: `{results['command']}`",
        "",
    ]
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / f"web_demo_{args.name}.json", results)
    atomic_write(args.results / f"web_demo_{args.name}.md", lambda tmp: tmp.write_text("\n".join(md)))
    print("\n".join(md))
    return results


if __name__ == "__main__":
    main()
