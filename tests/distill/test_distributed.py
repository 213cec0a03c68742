"""Data-parallel distillation: 2 CPU processes with gloo, launched by torchrun as a user would,
must train the same student as one process on the same global batches."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY_DATA
from safetensors.torch import load_file

from ammkd.distill.data import load_split
from ammkd.distill.image_tensors import image_tensor
from ammkd.distill.student_folder import load_student
from ammkd.distill.train import DistillConfig, distill


@pytest.mark.timeout(600)
def test_two_gloo_processes_match_one_process(pipeline, tmp_path):
    options = dict(
        teachers=[str(pipeline["vit"]), str(pipeline["rn"])],
        data=TINY_DATA,
        student="ammkd-vit-tiny",  # LayerNorm only: on CPU, BatchNorm statistics would stay per rank
        epochs=1,
        batch_size=16,
        aug_scale=[0.6, 1.0],
        checkpoint_every=0,
    )
    single = distill(DistillConfig(**options), tmp_path / "single")
    (tmp_path / "cfg.json").write_text(json.dumps(options))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "ammkd.cli.main", "distill", "--teachers", ",".join(options["teachers"])]
    cmd += ["--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("student written to") == 1  # rank 0 alone reports
    # the fusion network (the default index) is fitted identically on every rank
    fa, fb = (load_file(str(d / "fusion.safetensors")) for d in (single, tmp_path / "ddp"))
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    # Same training up to float summation order (which Adam amplifies on near-zero gradients):
    # the weights stay close and the two students embed held-out images the same way. One
    # near-uniform synthetic image can sit where the 1-epoch ViT's LayerNorms amplify a 1e-4
    # weight difference into another direction, so nearly all images, not every one, must agree.
    wa, wb = (load_file(str(d / "student.safetensors")) for d in (single, tmp_path / "ddp"))
    assert max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa) < 5e-3
    images, _, _ = image_tensor(load_split(TINY_DATA, "val"), load_student(single)[0].arch.input_spec)
    x = torch.from_numpy(images).float() / 255.0
    with torch.no_grad():
        ea, eb = load_student(single)[0](x), load_student(tmp_path / "ddp")[0](x)
    cos = (ea * eb).sum(1)
    assert (cos > 0.999).float().mean().item() >= 0.9 and cos.median().item() > 0.9999
    log_a = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_a] == [r["step"] for r in log_b]  # one log, written once
    for ra, rb in zip(log_a, log_b):
        assert ra["alpha"] == pytest.approx(rb["alpha"], abs=1e-3)  # same weights from the all-reduced Gram
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-3)


def _gather_on_rank(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    from ammkd.distill.distributed import Ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rk, total = Ranks(rank, world), 7
        share = rk.chunk(total)  # uneven: 4 rows on rank 0, 3 on rank 1
        rows = rk.gather_rows(torch.arange(total).float()[share.start : share.stop, None], total)
        assert torch.equal(rows[:, 0], torch.arange(total).float())
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_sharded_rows_gather_back_in_order():
    """How ranks build the teacher-output cache: each embeds its share, all gather the whole."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_gather_on_rank, args=(2, port), nprocs=2, start_method="fork")


@pytest.mark.timeout(900)
def test_teacher_training_under_torchrun_matches_one_process(tmp_path):
    """Two gloo processes share each global batch (features gathered with their gradients):
    the same teacher as one process. A pretrained tower above a frozen prefix keeps its
    BatchNorm statistics, so the equivalence is exact up to summation order."""
    from ammkd.distill.teacher_training import TeacherConfig, train_teacher
    from ammkd.distill.teachers import load_teacher

    options = dict(
        model="tf_efficientnet_lite0:imagenet+hf:all-MiniLM-L6-v2",
        data="synthetic:96",
        epochs=1,
        batch_size=16,
        lr=1e-3,
        image_frozen_stages=5,
        checkpoint_every=0,
    )
    single = train_teacher(TeacherConfig(**options), tmp_path / "single")
    (tmp_path / "cfg.json").write_text(json.dumps(options))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "ammkd.cli.main", "teachers", "train", "--config", str(tmp_path / "cfg.json")]
    cmd += ["--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    val = load_split("synthetic:96", "val")
    a, b = load_teacher(str(single)), load_teacher(str(tmp_path / "ddp"))
    images, _, _ = image_tensor(val, a.spec)
    # Adam amplifies summation-order differences on near-zero gradients: close, not bit-equal
    assert (a.encode_images(images) * b.encode_images(images)).sum(1).min().item() > 0.99
    texts = val.flat_captions()[0][:20]
    assert (a.encode_texts(texts) * b.encode_texts(texts)).sum(1).min().item() > 0.99
    log_a = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_a] == [r["step"] for r in log_b]  # rank 0 alone logs
    assert log_a[0]["loss"] == pytest.approx(log_b[0]["loss"], rel=1e-5)  # same first global batch
    assert [r["loss"] for r in log_a] == pytest.approx([r["loss"] for r in log_b], rel=3e-2)


TEACHER_GRADS = """
import sys
import open_clip
import torch
from ammkd.distill.distributed import ranks
from ammkd.distill.teacher_training import contrastive_step
from ammkd.distill.teachers import load_teacher

rk = ranks()  # torchrun's process group (gloo)
torch.manual_seed(0)
teacher = load_teacher("ammkd-tiny-vit")
images = torch.randint(0, 256, (8, 3, 64, 64), generator=torch.Generator().manual_seed(1)).float()
texts = [f"a photo number {i}" for i in range(8)]
lo, hi = rk.rows(8)
loss_fn = open_clip.ClipLoss(gather_with_grad=True, rank=rk.rank, world_size=rk.world)
contrastive_step(teacher, images[lo:hi], texts[lo:hi], 1, loss_fn)
params = [p for p in teacher.model.parameters() if p.requires_grad]
rk.average_grads(params)
if rk.is_main:
    torch.save([p.grad for p in params], sys.argv[1])
"""


@pytest.mark.timeout(900)
def test_teacher_gradient_over_ranks_equals_the_global_batch_gradient(tmp_path):
    """Features gathered with their gradients + gradients averaged over ranks = the one-process
    gradient of the global-batch ClipLoss (exactly what Adam then sees, scale included)."""
    import open_clip

    from ammkd.distill.teacher_training import contrastive_step
    from ammkd.distill.teachers import load_teacher

    (tmp_path / "grads.py").write_text(TEACHER_GRADS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(cmd + [str(tmp_path / "grads.py"), str(tmp_path / "g.pt")], capture_output=True, text=True,
                          timeout=1500, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.manual_seed(0)
    teacher = load_teacher("ammkd-tiny-vit")
    images = torch.randint(0, 256, (8, 3, 64, 64), generator=torch.Generator().manual_seed(1)).float()
    contrastive_step(teacher, images, [f"a photo number {i}" for i in range(8)], 1, open_clip.ClipLoss())
    expected = [p.grad for p in teacher.model.parameters() if p.requires_grad]
    got = torch.load(tmp_path / "g.pt")
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        err = (g - e).abs().max().item() / max(e.abs().max().item(), 1e-12)
        assert err < 1e-4, f"{tuple(e.shape)}: relative error {err:.2e}"
