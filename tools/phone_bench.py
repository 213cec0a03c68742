"""Phone benchmarks: scripts that time a bundle's targets on a real device, and parsers that turn
the tools' output back into `ammkd bench` rows, so phone and host figures sit in one table.

Android: `onnxruntime_perf_test` (ONNX Runtime's perf tool, built for arm64) on the `.ort`/`.onnx`
targets and ExecuTorch's `executor_runner` on the `.pte` targets, pushed and run with `adb`, their
stdout saved under `results/`. iOS: Xcode's Core ML performance report (manual), or the
generated `benchmark_coreml.py` on a Mac, which writes rows in the same JSON schema directly.
`parse_phone_results(DIR)` reads `results/` back.
"""

from __future__ import annotations

import json
import re
import shlex
import stat
from pathlib import Path

import numpy as np

from ammkd.bundle.format import BundleReader
from ammkd.common.errors import ConfigError, DataError

DEVICE_DIR = "/data/local/tmp/ammkd"
EXECUTOR_ROUNDS = 5  # executor_runner reports one total per call: several calls give a spread

_ORT_FIELDS = {  # onnxruntime_perf_test stdout line -> (key, unit scale to ms)
    "Session creation time cost": ("load_ms", 1e3),
    "Average inference time cost": ("mean_ms", 1.0),
    "Min Latency": ("min_ms", 1e3),
    "Max Latency": ("max_ms", 1e3),
    "P50 Latency": ("median_ms", 1e3),
    "P90 Latency": ("p90_ms", 1e3),
    "Total inference requests": ("runs", 1.0),
    "Peak working set size": ("peak_bytes", 1.0),
}
_ORT_LINE = re.compile(r"^\s*([A-Za-z0-9 ]+?)(?: total)?:\s*([0-9.eE+-]+)\s*(ms|s|bytes|%)?\s*$")
_ET_LINE = re.compile(r"Model executed successfully (\d+) time\(s\) in ([0-9.]+) ms")


def parse_ort_perf_test(text: str, where: str = "onnxruntime_perf_test output") -> dict:
    """stdout of `onnxruntime_perf_test -m times -r N ...` -> {"load_ms", "latency" {...}, "peak_rss_mb"}."""
    found = {}
    for line in text.splitlines():
        m = _ORT_LINE.match(line)
        if m and m.group(1) in _ORT_FIELDS:
            key, scale = _ORT_FIELDS[m.group(1)]
            found[key] = float(m.group(2)) * scale
    missing = [k for k in ("median_ms", "p90_ms", "min_ms", "max_ms", "runs") if k not in found]
    if missing:
        raise DataError(f"{where}: not onnxruntime_perf_test output (no {', '.join(missing)}); was the run cut short?")
    latency = {k: round(found[k], 4) for k in ("median_ms", "p90_ms", "min_ms", "max_ms")}
    out = {"latency": latency | {"runs": int(found["runs"])}, "source": "onnxruntime_perf_test"}
    if "load_ms" in found:
        out["load_ms"] = round(found["load_ms"], 2)
    if "peak_bytes" in found:
        out["peak_rss_mb"] = round(found["peak_bytes"] / (1 << 20), 1)
    return out


def parse_executor_runner(texts: list[str], where: str = "executor_runner output") -> dict:
    """stdouts of several `executor_runner --num_executions N` calls -> per-call mean ms as the
    spread (median, p90, min, max over calls) and the runs in all."""
    means, runs = [], 0
    for text in texts:
        hits = _ET_LINE.findall(text)
        if not hits:
            raise DataError(f"{where}: no 'Model executed successfully N time(s) in T ms' line; did the run fail?")
        n, total = int(hits[-1][0]), float(hits[-1][1])
        means.append(total / n)
        runs += n
    t = np.asarray(means)
    latency = {
        "median_ms": round(float(np.median(t)), 4),
        "p90_ms": round(float(np.percentile(t, 90)), 4),
        "min_ms": round(float(t.min()), 4),
        "max_ms": round(float(t.max()), 4),
        "runs": runs,
    }
    return {"latency": latency, "source": "executor_runner", "per_call_mean": True}


def parse_phone_results(folder: str | Path) -> dict:
    """`results/` written by the generated scripts -> {"device", "targets": [rows like ammkd bench]}."""
    res = Path(folder) / "results"
    if not res.is_dir():
        raise DataError(f"{res}: no results folder; run the scripts in {folder} on a device first")
    device = (res / "device.txt").read_text().strip() if (res / "device.txt").is_file() else "unknown device"
    rows = []
    for f in sorted(res.glob("ort__*.txt")):
        target, threads = _name_parts(f.stem, "ort")
        rows.append({"target": target, "threads": threads, "status": "ok"} | parse_ort_perf_test(f.read_text(), f))
    groups: dict[tuple[str, int], list[Path]] = {}
    for f in sorted(res.glob("et__*.txt")):
        target, threads = _name_parts(f.stem.rsplit("__r", 1)[0], "et")
        groups.setdefault((target, threads), []).append(f)
    for (target, threads), files in groups.items():
        parsed = parse_executor_runner([f.read_text() for f in files], str(files[0]))
        rows.append({"target": target, "threads": threads, "status": "ok"} | parsed)
    rows.extend(json.loads(f.read_text()) for f in sorted(res.glob("coreml__*.json")))
    if not rows:
        raise DataError(f"{res}: no ort__*.txt, et__*.txt or coreml__*.json result files")
    return {"device": device, "targets": rows}


def _name_parts(stem: str, prefix: str) -> tuple[str, int]:
    """`ort__onnx-int8__t4` -> ("onnx/int8", 4)."""
    try:
        _, target, threads = stem.split("__")
        fmt, quant = target.split("-", 1)
        return f"{fmt}/{quant}", int(threads.removeprefix("t"))
    except ValueError:
        raise DataError(f"{stem}: not a result file name of the form {prefix}__FORMAT-QUANT__tTHREADS") from None


def emit_phone_scripts(bundle_dir: str | Path, out: str | Path, runs: int = 100, threads=(1, 4)) -> Path:
    """Write `out/` with android/run_onnxruntime.sh, android/run_executorch.sh, ios/benchmark_coreml.py
    and a README saying how to run them and read the results back (`ammkd bench --parse-phone-results`)."""
    if runs < 1 or not threads or min(threads) < 1:
        raise ConfigError("phone scripts: runs and every thread count must be >= 1")
    bundle = BundleReader.open(bundle_dir)
    out = Path(out)
    (out / "android").mkdir(parents=True, exist_ok=True)
    (out / "ios").mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(exist_ok=True)
    targets = bundle.manifest["targets"]
    ort = [t for t in targets if t["format"] in ("ort", "onnx") and "file" in t]
    pte = [t for t in targets if t["format"] == "executorch"]
    ml = [t for t in targets if t["format"] == "coreml"]
    root = shlex.quote(str(bundle.root.resolve()))
    header = f"""#!/usr/bin/env bash
# Generated by `ammkd bench --emit-phone-scripts` for {bundle.manifest["model"]["id"]}.
# Needs adb with one device attached (ANDROID_SERIAL picks one of several).
set -euo pipefail
cd "$(dirname "$0")/.."
ADB=${{ADB:-adb}}
BUNDLE=${{BUNDLE:-{root}}}
DEVICE_DIR=${{DEVICE_DIR:-{DEVICE_DIR}}}
RUNS=${{RUNS:-{runs}}}
THREADS=${{THREADS:-"{" ".join(map(str, threads))}"}}
mkdir -p results
"$ADB" shell mkdir -p "$DEVICE_DIR"
"$ADB" shell getprop ro.product.model > results/device.txt
"""
    ort_lines = [
        "# onnxruntime_perf_test for Android arm64: build ONNX Runtime with --build_shared_lib --android",
        "# (https://onnxruntime.ai/docs/build/android.html); the tool is build/Android/Release/onnxruntime_perf_test.",
        "ORT_PERF_TEST=${ORT_PERF_TEST:-./onnxruntime_perf_test}",
        '"$ADB" push "$ORT_PERF_TEST" "$DEVICE_DIR/onnxruntime_perf_test" > /dev/null',
        '"$ADB" shell chmod +x "$DEVICE_DIR/onnxruntime_perf_test"',
    ]
    for t in ort:
        name, tag = t["file"]["path"], f"{t['format']}-{t['quantization']}"
        entries = " ".join(f"{k}|{v}" for k, v in t.get("session_config", {}).items())
        config = f"""-C "'{entries}'" """ if entries else ""  # quoted for the device's shell: '|' is a pipe there
        ort_lines += [
            f'"$ADB" push "$BUNDLE/{name}" "$DEVICE_DIR/{name}" > /dev/null',
            "for T in $THREADS; do",
            f'  "$ADB" shell "$DEVICE_DIR/onnxruntime_perf_test" -e cpu -m times -r "$RUNS" -x "$T" -I {config}'
            f'"$DEVICE_DIR/{name}" > "results/ort__{tag}__t${{T}}.txt"',
            "done",
        ]
    et_lines = [
        "# executor_runner for Android arm64 with XNNPACK: build it as in ExecuTorch's docs",
        "# (cmake --preset android-arm64-v8a -DEXECUTORCH_BUILD_XNNPACK=ON; target executor_runner).",
        "EXECUTOR_RUNNER=${EXECUTOR_RUNNER:-./executor_runner}",
        '"$ADB" push "$EXECUTOR_RUNNER" "$DEVICE_DIR/executor_runner" > /dev/null',
        '"$ADB" shell chmod +x "$DEVICE_DIR/executor_runner"',
    ]
    for t in pte:
        name, tag = t["file"]["path"], f"{t['format']}-{t['quantization']}"
        et_lines += [
            f'"$ADB" push "$BUNDLE/{name}" "$DEVICE_DIR/{name}" > /dev/null',
            "for T in $THREADS; do",
            f"  for R in $(seq 1 {EXECUTOR_ROUNDS}); do",
            f'    "$ADB" shell "$DEVICE_DIR/executor_runner" --model_path "$DEVICE_DIR/{name}" '
            f'--num_executions "$RUNS" --cpu_threads "$T" > "results/et__{tag}__t${{T}}__r${{R}}.txt" 2>&1',
            "  done",
            "done",
        ]
    _write_script(out / "android" / "run_onnxruntime.sh", header + "\n".join(ort_lines) + "\n")
    _write_script(out / "android" / "run_executorch.sh", header + "\n".join(et_lines) + "\n")
    (out / "ios" / "benchmark_coreml.py").write_text(_coreml_script(bundle, ml, runs))
    (out / "README.md").write_text(_readme(bundle, out, ort, pte, ml, runs, threads))
    return out


def _write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _coreml_script(bundle: BundleReader, ml: list[dict], runs: int) -> str:
    packages = [(t["package"]["path"], f"{t['format']}-{t['quantization']}") for t in ml]
    size = bundle.manifest["input"]["size"]
    return f'''"""Time the bundle's Core ML packages on this Mac (Core ML runs only on macOS/iOS).

    python benchmark_coreml.py [--compute-units all|cpu_only|cpu_and_gpu|cpu_and_ne]

Writes ../results/coreml__<target>__<units>.json rows in the schema of `ammkd bench`.
"""
import argparse, json, platform, time
from pathlib import Path

import coremltools as ct
import numpy as np
from PIL import Image

BUNDLE = Path({str(bundle.root.resolve())!r})
PACKAGES = {packages!r}
ap = argparse.ArgumentParser()
ap.add_argument("--compute-units", default="all")
ap.add_argument("--runs", type=int, default={runs})
args = ap.parse_args()
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, ({size}, {size}, 3), dtype=np.uint8))
out = Path(__file__).resolve().parents[1] / "results"
out.mkdir(exist_ok=True)
for rel, tag in PACKAGES:
    t0 = time.perf_counter()
    model = ct.models.MLModel(str(BUNDLE / rel), compute_units=getattr(ct.ComputeUnit, args.compute_units.upper()))
    model.predict({{"image": image}})
    load_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(10):
        model.predict({{"image": image}})
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        model.predict({{"image": image}})
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    row = {{"target": tag.replace("-", "/", 1), "threads": None, "status": "ok", "load_ms": round(load_ms, 2),
           "compute_units": args.compute_units, "source": "coremltools predict on " + platform.machine(),
           "latency": {{"median_ms": round(float(np.median(t)), 4), "p90_ms": round(float(np.percentile(t, 90)), 4),
                       "min_ms": round(float(t.min()), 4), "max_ms": round(float(t.max()), 4), "runs": args.runs}}}}
    (out / f"coreml__{{tag}}__{{args.compute_units}}.json").write_text(json.dumps(row))
    print(row)
'''


def _readme(bundle: BundleReader, out: Path, ort, pte, ml, runs: int, threads) -> str:
    def names(ts):
        return ", ".join(f"`{(t.get('file') or t['package'])['path']}`" for t in ts) or "none in this bundle"

    return f"""# Phone benchmark of `{bundle.manifest["model"]["id"]}`

Generated by `ammkd bench --bundle {bundle.root} --emit-phone-scripts {out}`. Batch 1, {runs} runs,
threads {", ".join(map(str, threads))} (override with `RUNS=` and `THREADS=`). Keep the phone
plugged in, screen on, cool, and close other apps; run each script twice and keep the second.

## Android (adb)

1. `onnxruntime_perf_test` and `executor_runner` built for arm64-v8a (see the comments at the top
   of each script); point `ORT_PERF_TEST=` and `EXECUTOR_RUNNER=` at them.
2. `bash android/run_onnxruntime.sh` times {names(ort)}.
3. `bash android/run_executorch.sh` times {names(pte)} ({EXECUTOR_ROUNDS} calls per thread count:
   executor_runner reports one total per call, so the spread is over calls).

## iOS

- Xcode: drag the `.mlpackage` ({names(ml)}) into a project, open it, Performance tab, "+",
  pick the connected iPhone and compute units: Xcode reports load, median prediction time and
  where each op runs (Neural Engine, GPU, CPU). Copy the median into a row of the schema below.
- On a Mac: `python ios/benchmark_coreml.py --compute-units all` (coremltools) writes the rows.

## Back into one table

`ammkd bench --parse-phone-results {out} --json` reads `results/` and prints rows in the schema of
`ammkd bench --json` (`target`, `threads`, `load_ms`, `latency` with `median_ms`, `p90_ms`,
`min_ms`, `max_ms`, `runs`, and `peak_rss_mb` where the tool reports it), with the device name.
"""
