"""`ammkd demo --preset smoke`: the whole product path, as a user first runs it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.slow
def test_smoke_demo_end_to_end(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ammkd.cli.main", "demo", "--preset", "smoke", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=1800,  # a hang guard, generous for a loaded 2-core machine (the smoke demo takes < 3 min idle)
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
    stages = summary["stage_seconds"]  # where the time goes: every stage timed, none beyond the total
    assert set(stages) == {"teacher vit", "teacher rn", "student adaptive", "evaluation", "export"}
    assert min(stages.values()) > 0 and 0.8 * summary["seconds"] <= sum(stages.values()) <= summary["seconds"] + 1
    assert "finished in" in proc.stdout and "export" in proc.stdout.split("finished in")[-1]


def test_the_demo_claims_its_folder_before_any_work(tmp_path):
    from ammkd.common.errors import ConfigError
    from ammkd.tools.demo import claim_demo_folder, default_demo_folder, run_demo

    assert default_demo_folder("default") == Path("runs/demo")
    assert default_demo_folder("smoke") == Path("runs/demo-smoke")
    notices = []
    claim_demo_folder(tmp_path / "new", "smoke", notices.append)  # a new folder: claimed silently
    assert json.loads((tmp_path / "new" / "demo.json").read_text()) == {"preset": "smoke"} and not notices
    claim_demo_folder(tmp_path / "new", "smoke", notices.append)  # its own earlier run: replaced, said so
    assert notices == [f"replacing the earlier 'smoke' demo run in {tmp_path / 'new'}"]
    started = time.time()
    with pytest.raises(ConfigError, match="holds a demo run of preset 'smoke'; pass another --out for 'default'"):
        run_demo("default", tmp_path / "new")  # refused at once, not after 20 minutes of training
    assert time.time() - started < 5 and sorted(p.name for p in (tmp_path / "new").iterdir()) == ["demo.json"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    with pytest.raises(ConfigError, match="exists and is not a demo run folder"):
        run_demo("smoke", tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
