"""The console script, run as a user runs it: exit codes, one-line errors, JSON output."""

import json
import shutil

from conftest import assert_user_error, run_cli as run


def test_unknown_data_spec(tmp_path):
    assert_user_error(
        run("eval", "--model", "ammkd-tiny-rn", "--data", "imagenet:/x"), "unknown data spec", "imagenet:/x"
    )


def test_missing_csv_file(tmp_path):
    assert_user_error(
        run("eval", "--model", "ammkd-tiny-rn", "--data", f"csv:{tmp_path}/nope.csv"), "nope.csv", "not found"
    )


def test_search_with_missing_corrupt_and_odd_images(pipeline, tmp_path):
    bundle = str(pipeline["bundle"])
    assert_user_error(run("search", "--bundle", bundle, "--image", str(tmp_path / "none.png")), "none.png", "not found")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert_user_error(run("search", "--bundle", bundle, "--image", str(tmp_path / "bad.jpg")), "bad.jpg")
    from PIL import Image

    Image.new("CMYK", (50, 70), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    proc = run("search", "--bundle", bundle, "--image", str(tmp_path / "cmyk.jpg"), "--k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["hits"]) == 3 and out["timings_ms"]["encode"] > 0


def test_search_refuses_a_tampered_bundle(pipeline, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(pipeline["bundle"], bundle)
    vec = bundle / "index" / "class_vectors.f16.bin"
    data = bytearray(vec.read_bytes())
    data[0] ^= 1
    vec.write_bytes(bytes(data))
    golden = bundle / "golden" / "image_0.png"
    assert_user_error(
        run("search", "--bundle", str(bundle), "--image", str(golden)), "class_vectors.f16.bin", "SHA-256"
    )
    (bundle / "image_encoder.onnx").unlink()
    assert_user_error(run("search", "--bundle", str(bundle), "--image", str(golden)), "image_encoder.onnx", "missing")


def test_eval_json_for_student_and_bundle_agree(pipeline):
    from conftest import TINY_DATA

    a = run("eval", "--model", str(pipeline["student"]), "--data", TINY_DATA, "--json")
    b = run("eval", "--model", str(pipeline["bundle"]), "--data", TINY_DATA, "--json")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ma, mb = json.loads(a.stdout), json.loads(b.stdout)
    assert abs(ma["mean_recall"] - mb["mean_recall"]) < 2.0  # fp16 index + ONNX vs fp32 PyTorch


def test_bad_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: many\n")
    assert_user_error(
        run("teachers", "train", "--preset", "ammkd-tiny-rn", "--out", str(tmp_path / "t"), "--config", str(cfg)),
        "c.yaml",
        "epochs",
    )


def test_empty_caption_and_corrupt_dataset_image(tmp_path):
    from PIL import Image

    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "red.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "empty.csv").write_text("filepath,title\nred.png,a red square\nred.png,\n")
    assert_user_error(
        run("eval", "--model", "ammkd-tiny-rn", "--data", f"csv:{tmp_path}/empty.csv:all"),
        "empty.csv:3",
        "empty caption",
    )
    (tmp_path / "bad.csv").write_text("filepath,title\nred.png,a red square\nbroken.jpg,a broken file\n")
    assert_user_error(
        run("eval", "--model", "ammkd-tiny-rn", "--data", f"csv:{tmp_path}/bad.csv:all"),
        "broken.jpg",
        "not a readable image",
    )


def test_eval_names_the_split_it_evaluated(tmp_path):
    """Issue 20 item 13: `csv:FILE:all` evaluates every row, and says so (not "(val)")."""
    from PIL import Image

    rows = ["filepath,title"]
    for i in range(6):
        Image.new("RGB", (20, 20), (40 * i, 80, 200 - 30 * i)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,swatch number {i}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    proc = run("eval", "--model", "ammkd-tiny-rn", "--data", f"csv:{tmp_path}/d.csv:all", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["split"] == "all"
    proc = run("eval", "--model", "ammkd-tiny-rn", "--data", f"csv:{tmp_path}/d.csv:all")
    assert proc.returncode == 0 and "(all)" in proc.stdout and "(val)" not in proc.stdout, proc.stdout


def test_teachers_train_skip_bad_and_accumulation_from_the_command_line(tmp_path):
    from PIL import Image

    rows = ["filepath\ttitle"]  # open_clip's tab-separated convention
    for i in range(20):
        Image.new("RGB", (24 + i, 30), (12 * i, 80, 200 - 5 * i)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png\tswatch number {i}")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    rows.append("broken.jpg\ta broken file")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    args = ["teachers", "train", "--preset", "ammkd-tiny-rn", "--data", f"csv:{tmp_path}/data.csv:all"]
    args += ["--epochs", "1", "--batch-size", "8", "--accum-steps", "2", "--out", str(tmp_path / "t")]
    assert_user_error(run(*args), "broken.jpg", "--skip-bad")
    proc = run(*args, "--skip-bad")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "t" / "skipped.json").read_text())["count"] == 1
    assert json.loads((tmp_path / "t" / "config.json").read_text())["accum_steps"] == 2
    assert (tmp_path / "t" / "learning_curve.png").is_file() and "learning curve" in proc.stdout


def test_error_lines_keep_brackets_in_paths(tmp_path):
    """A path such as `photos[1]` is printed as it is, not read as console markup."""
    missing = tmp_path / "bundle[bold]2025[/bold]"
    proc = run("search", "--bundle", str(missing), "--image", str(tmp_path / "x.jpg"))
    assert_user_error(proc, "bundle[bold]2025[/bold]")
