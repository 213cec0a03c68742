"""`ammkd bench`: every target measured in its own process, with figures that hang together."""

import json
import shutil
import sys

from conftest import assert_user_error, run_cli

from ammkd.bundle.format import BundleReader
from ammkd.tools.bench import bench_bundle


def test_bench_measures_every_target_of_the_bundle(full_bundle):
    r = bench_bundle(full_bundle, threads=1, warmup=1, runs=5, batch=4, search_runs=20)
    manifest = BundleReader.open(full_bundle).manifest
    rows = {t["target"]: t for t in r["targets"]}
    assert set(rows) == {f"{t['format']}/{t['quantization']}" for t in manifest["targets"]}
    for name, t in rows.items():
        if name.startswith("coreml/") and sys.platform != "darwin":
            assert t["status"] == "skipped" and "macOS" in t["reason"]
            continue
        assert t["status"] == "ok", t
        lat = t["latency"]
        assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["max_ms"] and lat["runs"] == 5
        assert t["load_ms"] > 0 and t["throughput_ips"] > 0 and t["threads"] == 1
        assert t["peak_rss_mb"] >= t["rss_before_load_mb"] > 10  # a whole Python process with the runtime
    s = r["index_search"]
    assert s["count"] == manifest["index"]["count"] and s["exact_numpy"]["median_ms"] > 0


def test_bench_command_json_and_bad_bundle(pipeline, tmp_path):
    proc = run_cli("bench", "--bundle", str(pipeline["bundle"]), "--runs", "3", "--warmup", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert [t["target"] for t in r["targets"]] == ["onnx/none", "ort/none"]
    assert all(t["status"] == "ok" and t["latency"]["median_ms"] > 0 for t in r["targets"])
    assert_user_error(run_cli("bench", "--bundle", str(tmp_path)), "manifest.json", "missing")


def test_bench_exits_1_when_a_target_fails_and_keeps_the_other_rows(pipeline, tmp_path):
    bundle = shutil.copytree(pipeline["bundle"], tmp_path / "bundle")
    ort = bundle / "image_encoder.ort"
    ort.write_bytes(ort.read_bytes()[:-100])  # truncated: its worker fails
    proc = run_cli("bench", "--bundle", str(bundle), "--runs", "3", "--warmup", "1", "--json")
    assert proc.returncode == 1 and "1 target(s) failed: ort/none" in " ".join(proc.stderr.split())
    rows = {t["target"]: t for t in json.loads(proc.stdout)["targets"]}
    assert rows["onnx/none"]["status"] == "ok" and rows["ort/none"]["status"] == "failed"
    assert "image_encoder.ort" in rows["ort/none"]["reason"]
