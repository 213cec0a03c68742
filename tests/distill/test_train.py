import json

import pytest
import torch
from conftest import TINY_DATA, chance_mean_recall, run_interrupted_then_resumed

from ammkd.common.errors import ConfigError
from ammkd.distill.student_folder import load_student
from ammkd.distill.train import DistillConfig, distill
from ammkd.tools.evaluate import evaluate


def test_student_learns_and_logs_alpha(pipeline):
    # 240 train images are too few for a from-scratch student to generalise (the demo measures
    # held-out recall at scale); here: distillation fits the training set far above chance.
    m = evaluate(str(pipeline["student"]), TINY_DATA, "train")
    assert m["mean_recall"] > 5 * chance_mean_recall(240)
    log = [json.loads(line) for line in (pipeline["student"] / "metrics.jsonl").read_text().splitlines()]
    assert all(0.4 - 1e-6 <= a <= 0.6 + 1e-6 for rec in log for a in rec["alpha"])  # tolerance cap 0.6
    assert all(abs(sum(rec["alpha"]) - 1) < 1e-5 for rec in log)
    assert {"kl", "task", "grad_cosine"} <= set(log[0])


def test_student_folder_round_trips(pipeline):
    student, meta = load_student(pipeline["student"])
    assert meta["weighting"] == "adaptive" and len(meta["teachers"]) == 2
    assert student.arch.embed_dim == 256  # concat fusion of two 128-d teachers
    config = json.loads((pipeline["student"] / "config.json").read_text())
    assert config["tolerance"] == 0.6 and config["data"] == TINY_DATA


@pytest.mark.parametrize("weighting", ["adaptive-sample", "adaptive-gt"])
def test_per_image_weightings_train_and_record_their_options(pipeline, tmp_path, weighting):
    cfg = DistillConfig(
        teachers=[str(pipeline["vit"]), str(pipeline["rn"])],
        data=TINY_DATA,
        student="ammkd-mnv3-small-050",
        weighting=weighting,
        tolerance=0.7,
        gt_margin=0.2,
        epochs=2,
        batch_size=32,
    )
    out = distill(cfg, tmp_path / weighting)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # batch means of per-image weights: on the simplex, inside [1 - C, C] only where every image was solved with
    # both teachers (adaptive-sample); adaptive-gt may give an image's whole weight to one teacher
    assert all(abs(sum(rec["alpha"]) - 1) < 1e-5 for rec in log)
    if weighting == "adaptive-sample":
        assert all(0.3 - 1e-5 <= a <= 0.7 + 1e-5 for rec in log for a in rec["alpha"])
    meta = json.loads((out / "student.json").read_text())
    assert meta["weighting"] == weighting and meta["weighting_options"]["tolerance"] == 0.7
    assert ("gt_margin" in meta["weighting_options"]) == (weighting == "adaptive-gt")
    assert evaluate(str(out), TINY_DATA, "train")["mean_recall"] > 2 * chance_mean_recall(240)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"teachers": []}, "at least one teacher"),
        ({"teachers": ["a", "b"], "weighting": "magic"}, "unknown weighting"),
        ({"teachers": ["a", "b"], "tolerance": 0.3}, "tolerance"),
        ({"teachers": ["a", "b"], "weighting": "fixed"}, "fixed_weights"),
        ({"teachers": ["a", "b"], "kd_temperatures": [1.0]}, "one per teacher"),
        ({"teachers": ["a", "b"], "alpha_ema": 1.0}, "alpha_ema"),
        ({"teachers": ["a", "b"], "alpha_ema": 0.5, "weighting": "adaptive-gt"}, "weighs each image afresh"),
        ({"teachers": ["a", "b"], "gt_margin": -1.0, "weighting": "adaptive-gt"}, "gt_margin"),
        ({"teachers": ["a", "b"], "tolerance": 0.4, "weighting": "adaptive-sample"}, "tolerance"),
        ({"teachers": ["a", "b"], "teacher_outputs": "sometimes"}, "teacher_outputs"),
        ({"teachers": ["a", "b"], "spectral_weight": 1.0}, "spectral_weight needs teacher_outputs='online'"),
        ({"teachers": ["a", "b"], "feature_weight": -1.0}, "loss weights"),
        ({"teachers": ["a", "b"], "teacher_outputs": "online", "spectral_cutoff": 0.0}, "spectral_cutoff"),
    ],
)
def test_bad_distill_configs(kwargs, message):
    from ammkd.common.config import build_config

    with pytest.raises(ConfigError, match=message):
        build_config(DistillConfig, kwargs)


@pytest.mark.parametrize(
    "options",
    [
        {},
        # online teachers on augmented crops, per-teacher temperatures, smoothed weights, and the
        # optional terms with their trainable heads (which the checkpoint must carry)
        {
            "teacher_outputs": "online",
            "aug_scale": [0.5, 1.0],
            "kd_temperatures": [2.0, 1.0],
            "alpha_ema": 0.8,
            "feature_weight": 0.5,
            "relation_weight": 0.5,
            "spectral_weight": 0.5,
        },
    ],
)
def test_interrupted_distillation_resumes_exactly(pipeline, tmp_path, monkeypatch, options):
    from safetensors.torch import load_file

    cfg = DistillConfig(
        teachers=[str(pipeline["vit"]), str(pipeline["rn"])],
        data=TINY_DATA,
        student="ammkd-mnv3-small-050",
        epochs=2,
        batch_size=32,
        checkpoint_every=3,
        **options,
    )
    distill(cfg, tmp_path / "straight")

    run_interrupted_then_resumed(monkeypatch, lambda o, r: distill(cfg, o, resume=r), tmp_path / "resumed", 4)

    a = load_file(str(tmp_path / "straight" / "student.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "student.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # the log reads as one run: no step twice
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()


def test_index_holds_every_split_even_when_the_data_names_train(pipeline, tmp_path):
    """The deployable index is the dataset's whole text set: a student trained on
    `synthetic:300:train` must still find the val and test captions in its bundle."""
    from ammkd.distill.data import load_split
    from ammkd.distill.student_folder import INDEX_TEXTS, write_index
    from ammkd.distill.teachers import load_teacher

    teachers = [load_teacher(str(pipeline["vit"])), load_teacher(str(pipeline["rn"]))]
    write_index(tmp_path, teachers, "synthetic:300:train", "concat", None)
    texts = set(json.loads((tmp_path / INDEX_TEXTS).read_text()))
    for split in ("train", "val", "test"):
        assert set(load_split("synthetic:300", split).texts()[0]) <= texts, split


def test_a_finished_or_interrupted_run_folder_is_kept_unless_resume_or_overwrite(pipeline, tmp_path):
    from ammkd.distill.schedule import claim_run_folder
    from ammkd.distill.teacher_training import TeacherConfig, train_teacher

    student, teacher = pipeline["student"], pipeline["rn"]
    before = {p: p.stat().st_mtime_ns for p in [*student.iterdir(), *teacher.iterdir()]}
    cfg = DistillConfig(teachers=[str(pipeline["vit"]), str(teacher)], data=TINY_DATA, epochs=1)
    with pytest.raises(ConfigError, match=r"holds a finished run \(student.json\); pass --overwrite"):
        distill(cfg, student)
    with pytest.raises(ConfigError, match=r"holds a finished run \(teacher.json\); pass --overwrite"):
        train_teacher(TeacherConfig(model="ammkd-tiny-rn", data=TINY_DATA, epochs=1), teacher)
    assert {p: p.stat().st_mtime_ns for p in [*student.iterdir(), *teacher.iterdir()]} == before  # untouched

    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"interrupted run \(checkpoint.pt\); pass --resume to continue it"):
        claim_run_folder(run, "student.json", resume=False, overwrite=False)
    claim_run_folder(run, "student.json", resume=True, overwrite=False)  # continue it
    (run / "student.json").write_text("{}")
    with pytest.raises(ConfigError, match="exclude each other"):
        claim_run_folder(run, "student.json", resume=True, overwrite=True)
    claim_run_folder(run, "student.json", resume=False, overwrite=True)
    assert not (run / "student.json").exists()  # no longer looks finished while it is redone
    claim_run_folder(tmp_path / "fresh", "student.json", resume=False, overwrite=False)  # a new folder is fine


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("lr", float("nan"), "option 'lr' must be finite"),
        ("fixed_weights", [float("nan"), 1.0], "option 'fixed_weights' must be finite"),
        ("warmup_fraction", 5.0, r"warmup_fraction must be in \[0, 1\]"),
        ("weight_decay", -1.0, "weight_decay and seed must be >= 0"),
        ("seed", -1, "weight_decay and seed must be >= 0"),
        ("epochs", float("inf"), "option 'epochs' must be finite"),
    ],
)
def test_training_numbers_are_validated(pipeline, option, value, message):
    from ammkd.distill.teacher_training import TeacherConfig

    teachers = [str(pipeline["vit"]), str(pipeline["rn"])]
    with pytest.raises(ConfigError, match=message):
        options = {"teachers": teachers, "weighting": "fixed", "fixed_weights": [0.5, 0.5], option: value}
        DistillConfig(**options).validate()
    if option != "fixed_weights":
        with pytest.raises(ConfigError, match=message):
            TeacherConfig(**{option: value}).validate()


def test_less_than_one_step_of_epochs_is_refused():
    from ammkd.distill.schedule import total_steps

    assert total_steps(100, 10, 0.1) == 1 and total_steps(100, 10, 2.0) == 20
    with pytest.raises(ConfigError, match=r"distill: epochs 1e-09 is less than one step \(100 images at batch 10\)"):
        total_steps(100, 10, 1e-9, "distill")


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(pipeline, tmp_path, monkeypatch):
    from ammkd.distill import train as train_module

    original = train_module.class_vector_terms
    calls = []

    def poisoned(*args):
        terms = original(*args)
        calls.append(1)
        if len(calls) == 4:  # step 3: the KL values turn NaN
            return terms._replace(kls=terms.kls + float("nan"), kl_per_sample=terms.kl_per_sample + float("nan"))
        return terms

    monkeypatch.setattr(train_module, "class_vector_terms", poisoned)
    teachers = [str(pipeline["vit"]), str(pipeline["rn"])]
    cfg = DistillConfig(teachers=teachers, data=TINY_DATA, epochs=4, batch_size=32, checkpoint_every=2)
    out = tmp_path / "s"
    stopped = r"loss is not finite at step 3 \(nan\): stopped before its update; .*checkpoint.pt"
    with pytest.raises(ConfigError, match=stopped):
        distill(cfg, out)
    assert (out / "checkpoint.pt").is_file() and not (out / "student.json").exists()
