"""`ammkd demo --preset smoke`: the whole product path, as a user first runs it."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_smoke_demo_end_to_end(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ammkd.cli.main", "demo", "--preset", "smoke", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ammkd demo (smoke" in proc.stdout and "bundle:" in proc.stdout
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    rows = summary["rows"]
    assert {"teacher ammkd-tiny-vit", "teacher ammkd-tiny-rn", "student adaptive"} <= set(rows)
    student = rows["student adaptive"]
    assert student["onnx_ms"] > 0 and student["params_M"] < rows["teacher ammkd-tiny-rn"]["params_M"]
    assert summary["parity"]["cosine_min"] >= 0.999
    assert (tmp_path / "demo" / "bundle" / "manifest.json").is_file()
    assert len(summary["example"]["top3"]) == 3
