"""Android Kotlin core vs the Python runtime: per-image latency and index search, same bundle, same run.

    uv run --frozen --no-sync python benchmarks/android_core.py --name demo            # about 30 s on 2 cores
    uv run --frozen --no-sync python benchmarks/android_core.py --bundle runs/demo/bundle --name demo --runs 50

One run of this script times both sides on this CPU, one thread each, with the same images and
the same warm-up and run counts:

- Python: `Retriever.open(bundle, threads=1)` (its ONNX encoder, exact search), end to end from the
  image file = `r.top_texts(path, 10)` and its stages from `r.timings_ms` (`preprocess` includes
  PIL's decode); search alone = `search.topk(golden_embedding, r.index, 10)` with BLAS pinned to 1
  thread (threadpoolctl).
- Kotlin (`android_demo/core` on the JVM): the JUnit `BenchmarkTest`, run by Maven, end to end =
  decode the file with javax.imageio to ARGB -> `Retriever.topTexts(pixels, w, h, 10)` (preprocess ->
  ONNX Runtime Java -> top-10), its stages, and search alone = `ClassIndex.topK(golden_embedding, 10)`.

Images: the bundle's golden PNGs plus 4 photos at 640x480 or so (scikit-image's astronaut, coffee,
chelsea, rocket as JPEGs when scikit-image is installed, else photo-like JPEGs generated with PIL),
so that decode and resize are realistic. Each measurement: `--warmup` untimed runs then `--runs`
timed ones; median / p90 / min / max ms. Writes `results/android_core_<name>.{json,md}` with the
side-by-side table (Kotlin ms, Python ms, Kotlin / Python) and pass/fail of the goal "Kotlin search
within 2x of NumPy" (median of search alone). This is the JVM on a desktop CPU, not a phone.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy loads: its BLAS pool starts with one thread

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from bench_util import cpu_model, relative, write_results  # noqa: E402
from PIL import Image  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from ammkd.bundle.search import topk  # noqa: E402
from ammkd.mobile_runtime.retriever import Retriever  # noqa: E402
from ammkd.tools.latency import summarize_ms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POM = ROOT / "android_demo" / "core" / "pom.xml"
K = 10
SEARCH_GOAL_RATIO = 2.0  # Kotlin search alone within 2x of NumPy's (median)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
MAVEN_TIMEOUT_S = 1800
STAGES = ("end_to_end", "decode_preprocess", "encode", "search")
STAGE_NAMES = {
    "end_to_end": "end to end (file -> top-10)",
    "decode_preprocess": "decode + preprocess",
    "encode": "encode (ONNX Runtime)",
    "search": "search (in the loop)",
}


def _default_bundle() -> Path:
    quantized = ROOT / "runs" / "bench-export" / "demo" / "quantized"
    return quantized if quantized.is_dir() else ROOT / "runs" / "demo" / "bundle"


def _tool_version(cmd: list[str]) -> str | None:
    """First line of a tool's version output (java -version writes to stderr)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    text = re.sub(r"\x1b\[[0-9;]*m", "", p.stdout + p.stderr).strip()  # mvn colours its banner
    return text.splitlines()[0].strip() if text else None


def _pom_properties(pom: Path) -> dict:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(pom).getroot().find("m:properties", ns)
    return {child.tag.split("}", 1)[1]: (child.text or "").strip() for child in props} if props is not None else {}


def _photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photo-like RGB image (smooth blobs, edges, texture, noise): JPEG-compresses and resizes like a photo."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    chans = []
    for c in range(3):
        blob = np.zeros_like(x)
        for _ in range(4):
            cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.1, 0.4) * max(width, height)
            blob += rng.uniform(60, 160) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r**2))
        edges = 50 * (np.sin(x * rng.uniform(0.01, 0.08) + y * rng.uniform(0.01, 0.05) + c) > 0.6)
        texture = 15 * np.sin(x * rng.uniform(0.3, 0.9)) * np.cos(y * rng.uniform(0.3, 0.9))
        chans.append(blob + edges + texture + rng.normal(0, 6, size=x.shape))
    return Image.fromarray(np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8), "RGB")


def _images(bundle: Path, manifest: dict, folder: Path) -> tuple[list[Path], str]:
    """The bundle's golden PNGs, then 4 photos written as JPEGs (quality 90) into `folder`."""
    golden = [bundle / g["image"]["path"] for g in manifest.get("golden", [])]
    photos = []
    try:
        import skimage.data

        for name in PHOTOS:
            img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
            photos.append((name, img))
        source = f"scikit-image {importlib.metadata.version('scikit-image')} data: {', '.join(PHOTOS)}"
    except ImportError:
        rng = np.random.default_rng(0)
        photos = [(f"photo_like_{i}", _photo_like(rng, 640, 480)) for i in range(len(PHOTOS))]
        source = "scikit-image not installed: photo-like 640x480 images generated with PIL/NumPy (seed 0)"
    paths = []
    for name, img in photos:
        p = folder / f"{name}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return golden + paths, source


def _python_side(bundle: Path, images: list[Path], warmup: int, runs: int) -> dict:
    r = Retriever.open(bundle, threads=1, backend="onnx", search="exact")
    rows = []
    for path in images:
        e2e, stages, hits = [], {"decode_preprocess": [], "encode": [], "search": []}, []
        for i in range(-warmup, runs):
            t0 = time.perf_counter()
            hits = r.top_texts(path, K)
            t1 = time.perf_counter()
            if i >= 0:
                e2e.append((t1 - t0) * 1e3)
                stages["decode_preprocess"].append(r.timings_ms["preprocess"])
                stages["encode"].append(r.timings_ms["encode"])
                stages["search"].append(r.timings_ms["search"])
        with Image.open(path) as im:
            size = im.size
        rows.append(
            {
                "path": str(path),
                "width": size[0],
                "height": size[1],
                "end_to_end": summarize_ms(e2e),
                **{k: summarize_ms(v) for k, v in stages.items()},
                "topk_ids": [h.id for h in hits],
            }
        )
        print(f"python {path.name}: end to end {rows[-1]['end_to_end']}", flush=True)

    goldens = [r.bundle.read_array(g["embedding"]).astype(np.float32) for g in r.bundle.manifest.get("golden", [])]
    every, per = [], []
    with threadpool_limits(1):
        for gi, q in enumerate(goldens):
            ms, ids = [], None
            for i in range(-warmup, runs):
                t0 = time.perf_counter()
                ids, _ = topk(q, r.index, K)
                t1 = time.perf_counter()
                if i >= 0:
                    ms.append((t1 - t0) * 1e3)
            every += ms
            per.append({"golden": gi, "stats": summarize_ms(ms), "topk_ids": [int(i) for i in ids]})
        pools = [
            f"{p['internal_api']}{' ' + p['version'] if p.get('version') else ''}: {p['num_threads']} thread(s)"
            for p in threadpool_info()
        ]
    search = {
        "count": len(r.index),
        "dim": r.index.shape[1],
        "k": K,
        "stats": summarize_ms(every),
        "per_embedding": per,
    }
    print(f"python search alone: {search['stats']}", flush=True)
    return {
        "encoder": f"{r.target['format']}/{r.target['quantization']}",
        "open_ms": round(r.timings_ms["load"], 1),
        "images": rows,
        "search_alone": search,
        "threadpools": pools,
    }


def _kotlin_side(pom: Path, bundle: Path, image_list: Path, out: Path, warmup: int, runs: int) -> tuple[dict, list]:
    cmd = [
        "mvn", "-q", "-B", "-f", str(pom), "test",
        "-Dtest=BenchmarkTest", "-Dsurefire.failIfNoSpecifiedTests=false",
        f"-Dammkd.bundle={bundle}", f"-Dammkd.bench.out={out}", f"-Dammkd.bench.images={image_list}",
        f"-Dammkd.bench.runs={runs}", f"-Dammkd.bench.warmup={warmup}", f"-Dammkd.bench.k={K}",
    ]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, cwd=ROOT)
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stdout + proc.stderr)[-8000:]
        raise SystemExit(f"Maven BenchmarkTest failed (exit {proc.returncode}) after {time.time() - t0:.0f} s:\n{tail}")
    print(f"kotlin: Maven run {time.time() - t0:.0f} s", flush=True)
    return json.loads(out.read_text()), cmd


def _ratio(kotlin: float, python: float) -> float | None:
    return round(kotlin / python, 2) if python > 0 else None


def _compare(kotlin: dict, python: dict) -> tuple[list[dict], dict]:
    rows = []
    for kr, pr in zip(kotlin["images"], python["images"], strict=True):
        for stage in STAGES:
            k, p = kr[stage]["median_ms"], pr[stage]["median_ms"]
            rows.append(
                {
                    "image": Path(kr["path"]).name,
                    "size": f"{kr['width']}x{kr['height']}",
                    "stage": stage,
                    "kotlin_median_ms": k,
                    "kotlin_p90_ms": kr[stage]["p90_ms"],
                    "python_median_ms": p,
                    "python_p90_ms": pr[stage]["p90_ms"],
                    "kotlin_over_python": _ratio(k, p),
                }
            )
    ks, ps = kotlin["search_alone"]["stats"], python["search_alone"]["stats"]
    ratio = _ratio(ks["median_ms"], ps["median_ms"])
    goal = {
        "goal": f"Kotlin search alone (top-{K} over the class vectors) within {SEARCH_GOAL_RATIO}x of NumPy's, median",
        "kotlin_median_ms": ks["median_ms"],
        "numpy_median_ms": ps["median_ms"],
        "ratio": ratio,
        "pass": ratio is not None and ratio <= SEARCH_GOAL_RATIO,
    }
    return rows, goal


def _agreement(kotlin: dict, python: dict) -> dict:
    """Top-10 ids of both sides, image by image and for the search of each golden embedding."""
    images = [k["topk_ids"] == p["topk_ids"] for k, p in zip(kotlin["images"], python["images"], strict=True)]
    search = [
        k["topk_ids"] == p["topk_ids"]
        for k, p in zip(kotlin["search_alone"]["per_embedding"], python["search_alone"]["per_embedding"], strict=True)
    ]
    return {"images_same_topk_ids": sum(images), "images": len(images), "search_same_topk_ids": all(search)}


def _markdown(results: dict) -> list[str]:
    m, g, kt, py = results["machine"], results["goal"], results["kotlin"], results["python"]
    ks, ps = kt["search_alone"]["stats"], py["search_alone"]["stats"]
    agree = results["agreement"]
    verdict = "**pass**" if g["pass"] else "**FAIL**"
    table = [
        f"| {r['image']} | {r['size']} | {STAGE_NAMES[r['stage']]} | {r['kotlin_median_ms']:.3f} | "
        f"{r['kotlin_p90_ms']:.3f} | {r['python_median_ms']:.3f} | {r['python_p90_ms']:.3f} | "
        f"{r['kotlin_over_python']} |"
        for r in results["rows"]
    ]
    decode = [
        f"{Path(r['path']).name} {r['decode']['median_ms']:.2f} ms (preprocess {r['preprocess']['median_ms']:.2f})"
        for r in kt["images"]
    ]
    v = results["versions"]
    return [
        f"# Android Kotlin core vs Python runtime, bundle `{results['bundle']}`",
        "",
        f"Machine: {m['cpu_model'] or 'unknown CPU'}, {m['cpus']} CPUs, {m['platform']}; load average "
        f"{m['loadavg_before']} before, {m['loadavg_after']} after. Both sides **1 thread** (ONNX Runtime "
        f"intra-op 1; NumPy BLAS pinned to 1), encoder {kt['encoder']} (Kotlin) / {py['encoder']} (Python); "
        f"{results['warmup']} warm-up runs, then {results['runs']} timed runs per measurement, median and p90 ms. "
        "The JVM on a desktop CPU, not a phone.",
        "",
        f"- {g['goal']}: Kotlin {g['kotlin_median_ms']:.3f} ms vs NumPy {g['numpy_median_ms']:.3f} ms "
        f"= {g['ratio']}x, {verdict}",
        f"- Search alone over {kt['search_alone']['count']:,} x {kt['search_alone']['dim']} (fp16 stored, float32 "
        f"in memory), {len(kt['search_alone']['per_embedding'])} golden embeddings: Kotlin median "
        f"{ks['median_ms']:.3f} / p90 {ks['p90_ms']:.3f} / min {ks['min_ms']:.3f} / max {ks['max_ms']:.3f} ms; "
        f"NumPy median {ps['median_ms']:.3f} / p90 {ps['p90_ms']:.3f} / min {ps['min_ms']:.3f} / "
        f"max {ps['max_ms']:.3f} ms.",
        f"- Same top-{K} ids on both sides: {agree['images_same_topk_ids']} of {agree['images']} images; search "
        f"alone {'yes' if agree['search_same_topk_ids'] else 'no'}.",
        f"- Open time: Kotlin {kt['open_ms']} ms, Python {py['open_ms']} ms (hash checks, index decode, session).",
        "",
        "| image | size | stage | Kotlin median ms | Kotlin p90 | Python median ms | Python p90 | Kotlin / Python |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *table,
        "",
        "End to end: Kotlin = javax.imageio decode to ARGB + `Retriever.topTexts` (wall time); Python = "
        f"`Retriever.top_texts(path, {K})` (wall time). Decode + preprocess: Python's `preprocess` stage opens "
        "and decodes the file with PIL itself, so the Kotlin figure is decode + preprocess of the same run. "
        f"Search (in the loop): top-{K} inside the end-to-end call (Python: `ExactIndex.search`). "
        "Kotlin decode alone (median): " + "; ".join(decode) + ".",
        "",
        f"Images: {results['images_source']}. Versions: " + ", ".join(f"{k} {v}" for k, v in v.items()) + ". "
        f"Python thread pools: {'; '.join(py['threadpools']) or 'none'}.",
        "",
        f"Command: `{results['command']}`",
        "",
    ]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=_default_bundle(), help="bundle folder (default: %(default)s)")
    ap.add_argument("--name", required=True, help="results/android_core_<name>.{json,md}")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per measurement (>= 50 for the issue)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed runs before each measurement")
    ap.add_argument("--pom", type=Path, default=POM, help="the Kotlin core's pom.xml")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not on PATH: install a JDK 17 and Maven")
    bundle = args.bundle.resolve()
    manifest = json.loads((bundle / "manifest.json").read_text())
    load_before = [round(x, 2) for x in os.getloadavg()]

    with tempfile.TemporaryDirectory(prefix="ammkd-bench-android-") as tmp:
        work = Path(tmp)
        images, images_source = _images(bundle, manifest, work)
        image_list = work / "images.txt"
        image_list.write_text("".join(f"{p}\n" for p in images))
        python = _python_side(bundle, images, args.warmup, args.runs)
        kotlin, mvn_cmd = _kotlin_side(
            args.pom.resolve(), bundle, image_list, work / "kotlin.json", args.warmup, args.runs
        )
        for side in (python, kotlin):  # temporary paths -> file names
            for row in side["images"]:
                row["path"] = Path(row["path"]).name

    rows, goal = _compare(kotlin, python)
    pom = _pom_properties(args.pom)
    results = {
        "benchmark": "android_core",
        "bundle": relative(bundle),
        "k": K,
        "runs": args.runs,
        "warmup": args.warmup,
        "threads": 1,
        "images_source": images_source,
        "goal": goal,
        "agreement": _agreement(kotlin, python),
        "rows": rows,
        "kotlin": kotlin,
        "python": python,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {
            "java": _tool_version(["java", "-version"]),
            "maven": _tool_version(["mvn", "-v"]),
            "kotlin": pom.get("kotlin.version"),
            "onnxruntime (Java, pom)": pom.get("onnxruntime.version"),
            "python": platform.python_version(),
            "onnxruntime (Python)": importlib.metadata.version("onnxruntime"),
            "numpy": np.__version__,
            "pillow": importlib.metadata.version("pillow"),
            "threadpoolctl": importlib.metadata.version("threadpoolctl"),
        },
        "maven_command": " ".join(shlex.quote(c) for c in mvn_cmd),
        "command": "uv run --frozen --no-sync python benchmarks/android_core.py " + " ".join(argv or sys.argv[1:]),
    }
    md = _markdown(results)
    write_results(args.results, f"android_core_{args.name}", results, md)
    return results


if __name__ == "__main__":
    main()
