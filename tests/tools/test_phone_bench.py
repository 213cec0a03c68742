"""Phone benchmark scripts and their parsers: recorded tool outputs, and the generated adb scripts
run end to end against a stand-in adb whose "device" is a local folder."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

from ammkd.common.errors import DataError
from ammkd.tools.phone_bench import (
    EXECUTOR_ROUNDS,
    emit_phone_scripts,
    parse_executor_runner,
    parse_ort_perf_test,
    parse_phone_results,
)

DATA = Path(__file__).parent / "data"


def test_ort_perf_test_output_is_parsed():
    r = parse_ort_perf_test((DATA / "onnxruntime_perf_test.txt").read_text())
    assert r["latency"] == {"median_ms": 4.0813, "p90_ms": 4.2871, "min_ms": 3.9124, "max_ms": 5.334, "runs": 100}
    assert r["load_ms"] == pytest.approx(41.83, abs=0.01) and r["peak_rss_mb"] == pytest.approx(36.6, abs=0.1)
    with pytest.raises(DataError, match="not onnxruntime_perf_test output"):
        parse_ort_perf_test("Session creation time cost: 0.04 s\n")


def test_executor_runner_output_is_parsed():
    text = (DATA / "executor_runner.txt").read_text()
    slower = text.replace("in 418.312500 ms", "in 500.0 ms")
    r = parse_executor_runner([text, text, slower])
    assert r["latency"]["median_ms"] == pytest.approx(4.1831, abs=1e-4)
    assert r["latency"]["max_ms"] == pytest.approx(5.0) and r["latency"]["runs"] == 300
    with pytest.raises(DataError, match="Model executed successfully"):
        parse_executor_runner(["E 00:00:00.1 executorch:executor_runner.cpp:99] Loading of method forward failed"])


FAKE_ADB = """#!/usr/bin/env bash
# adb stand-in: the "device" is the local folder $DEVICE_DIR
cmd=$1; shift
case "$cmd" in
  push) cp "$1" "$2" ;;
  shell) if [ "$1" = getprop ]; then echo "Fake Pixel 8"; else "$@"; fi ;;
  *) echo "fake adb: $cmd unsupported" >&2; exit 1 ;;
esac
"""


def _fake_tool(path: Path, sample: Path, check: str) -> Path:
    path.write_text(f"#!/usr/bin/env bash\n{check}\ncat {sample}\n")
    path.chmod(0o755)
    return path


def test_generated_android_scripts_run_and_parse_back(full_bundle, tmp_path):
    out = emit_phone_scripts(full_bundle, tmp_path / "phone", runs=100, threads=(1, 4))
    for script in ("run_onnxruntime.sh", "run_executorch.sh"):
        subprocess.run(["bash", "-n", str(out / "android" / script)], check=True)
    compile(Path(out / "ios" / "benchmark_coreml.py").read_text(), "benchmark_coreml.py", "exec")
    adb = tmp_path / "adb"
    adb.write_text(FAKE_ADB)
    adb.chmod(0o755)
    # the stand-in tools insist on the arguments the scripts must pass
    ort_tool = _fake_tool(
        tmp_path / "ort_perf",
        DATA / "onnxruntime_perf_test.txt",
        'case " $* " in *" -m times -r 100 "*) ;; *) echo bad args "$@" >&2; exit 2;; esac',
    )
    et_tool = _fake_tool(
        tmp_path / "et_runner",
        DATA / "executor_runner.txt",
        'case " $* " in *" --num_executions 100 "*) ;; *) echo bad args "$@" >&2; exit 2;; esac',
    )
    env = os.environ | {
        "ADB": str(adb),
        "DEVICE_DIR": str(tmp_path / "device"),
        "ORT_PERF_TEST": str(ort_tool),
        "EXECUTOR_RUNNER": str(et_tool),
    }
    for script in ("run_onnxruntime.sh", "run_executorch.sh"):
        proc = subprocess.run(["bash", str(out / "android" / script)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    pushed = {p.name for p in (tmp_path / "device").iterdir()}
    assert {"image_encoder.ort", "image_encoder.pte", "image_encoder.int8.pte"} <= pushed
    r = parse_phone_results(out)
    assert r["device"] == "Fake Pixel 8"
    rows = {(t["target"], t["threads"]): t for t in r["targets"]}
    for fmt in ("onnx", "ort", "executorch"):
        for threads in (1, 4):
            row = rows[(f"{fmt}/none", threads)]
            assert row["status"] == "ok" and row["latency"]["median_ms"] == pytest.approx(4.08, abs=0.11)
    assert rows[("executorch/int8", 1)]["latency"]["runs"] == 100 * EXECUTOR_ROUNDS
    proc = run_cli("bench", "--parse-phone-results", str(out), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["device"] == "Fake Pixel 8"


def test_missing_phone_results_are_reported(tmp_path):
    with pytest.raises(DataError, match="no results folder"):
        parse_phone_results(tmp_path)
    (tmp_path / "results").mkdir()
    with pytest.raises(DataError, match="no ort__"):
        parse_phone_results(tmp_path)
