"""The web demo in headless Chromium: page load to ready, and encode + search per image, WASM with one
thread and with several, the index scanned by WebAssembly SIMD (the page's default) and by plain JS
(`?scan=js`, its fallback), beside ONNX Runtime (Python) on the same model in the same run.

    uv run --frozen --no-sync python benchmarks/web_demo.py --bundle runs/demo/bundle --name demo

The bundle is served by `ammkd serve`'s server (in this process, on a free port) and the page is
driven by `web_demo/tests/drive.mjs` (playwright-core + Debian's Chromium): for each thread count
and scan a fresh page is loaded (`?ep=wasm&threads=N&scan=S`; load = navigation start to the page's
ready state, which includes fetching and hash-checking the model and the index), then the bundle's golden input is
encoded and searched (top-10) `--runs` times after 5 warm-ups. The Python figure is ONNX Runtime
(one thread) and the apps' NumPy top-10 on the same golden input. Writes
`results/web_demo_<name>.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ammkd.common.files import atomic_write, atomic_write_json
from ammkd.mobile_runtime.retriever import Retriever
from ammkd.tools.latency import summarize_ms
from ammkd.tools.serve import make_server

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "web_demo" / "tests" / "drive.mjs"
SCAN_NAMES = {"wasm-simd": "WASM SIMD", "js": "JS"}


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
        "scan": b["scan"],
        "scan_kernel": b.get("kernel"),
        "candidates_rescored": b.get("candidates"),
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
    enc, search, both = [], [], []
    with threadpool_limits(1):
        for i in range(runs + 5):
            t0 = time.perf_counter()
            emb = r.encoder.embed(x)[0]
            t1 = time.perf_counter()
            r.search_embedding(emb, 10)
            t2 = time.perf_counter()
            if i >= 5:
                enc.append((t1 - t0) * 1e3)
                search.append((t2 - t1) * 1e3)
                both.append((t2 - t0) * 1e3)
    return {
        "threads": 1,
        "encode": summarize_ms(enc),
        "search": summarize_ms(search),
        "encode_plus_search": summarize_ms(both),
    }


def _without_note(argv: list[str]) -> list[str]:
    """The command line with --note's text left out (it is printed above the table and kept as "note")."""
    out, skip = [], False
    for a in argv:
        if skip:
            out.append("...")
            skip = False
        elif a == "--note":
            out.append(a)
            skip = True
        elif a.startswith("--note="):
            out.append("--note=...")
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--scans", nargs="+", default=["wasm", "js"], choices=["wasm", "js"])
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--note", default="", help="a sentence on the bundle, printed under the title")
    args = ap.parse_args(argv)
    server = make_server(args.bundle, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        pages = [_page(f"{base}?ep=wasm&threads={n}&scan={s}", args.runs) for s in args.scans for n in args.threads]
        for p, s in zip(pages, [s for s in args.scans for _ in args.threads], strict=True):
            if p["scan"] != {"wasm": "wasm-simd", "js": "js"}[s]:
                raise SystemExit(f"?scan={s} ran the {p['scan']} scan")
    finally:
        server.shutdown()
    python = _python(args.bundle, args.runs)
    chromium = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True).stdout.strip()
    lock = json.loads((ROOT / "web_demo" / "package-lock.json").read_text())
    ort_web = lock["packages"]["node_modules/onnxruntime-web"]["version"]
    results = {
        "benchmark": "web_demo",
        "bundle": str(args.bundle),
        "note": args.note,
        "pages": pages,
        "python_onnxruntime": python,
        "versions": {
            "chromium": chromium,
            "onnxruntime-web": ort_web,
            "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "uv run --frozen --no-sync python benchmarks/web_demo.py "
        + shlex.join(_without_note(argv or sys.argv[1:])),
    }
    py = python["encode_plus_search"]["median_ms"]
    kernel = next((p["scan_kernel"] for p in pages if p["scan"] == "wasm-simd"), "-")
    md = [
        f"# Web demo in headless Chromium ({args.name})",
        "",
        f"{chromium}, onnxruntime-web {ort_web} (WASM, SIMD), page served by `ammkd serve`'s server "
        f"(cross-origin isolated: {pages[0]['cross_origin_isolated']}). Golden input of `{args.bundle}`, "
        f"top-10 search; {args.runs} timed runs after 5 warm-ups; a fresh page per thread count and scan.",
        "",
        *([args.note, ""] if args.note else []),
        "| runtime | index scan | threads | load to ready ms | encode ms (median / p90) | search ms (median) "
        "| encode + search ms (median) | vs Python |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| onnxruntime-web WASM | {SCAN_NAMES[p['scan']]} | {p['threads']} | {p['load_to_ready_ms']} | "
            f"{p['encode']['median_ms']} / {p['encode']['p90_ms']} | {p['search']['median_ms']} | "
            f"{p['encode_plus_search']['median_ms']} | {p['encode_plus_search']['median_ms'] / py:.1f}x |"
            for p in pages
        ],
        f"| ONNX Runtime (Python) | NumPy | 1 | | {python['encode']['median_ms']} / {python['encode']['p90_ms']} | "
        f"{python['search']['median_ms']} | {py} | 1x |",
        "",
        "Load to ready: navigation start until the page has fetched and SHA-256-checked the model and the "
        "index and created the session. Index scan: WASM SIMD is `web_demo/scan_wasm.js` (float16 rows, float32 "
        f"SIMD sums, kernel {kernel}) plus the exact float64 rescoring of the rows it cannot "
        "rule out "
        f"({', '.join(str(p['candidates_rescored']) for p in pages if p['scan'] == 'wasm-simd')} rows here); "
        "JS is the plain-JavaScript float64 scan. Both give the same ids and scores.",
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
