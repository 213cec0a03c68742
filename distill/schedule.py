"""Pieces every training loop here shares: batch order, step count, LR schedule, decay groups,
and checkpoints that make an interrupted run resume exactly where it stopped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ammkd.common.errors import ConfigError
from ammkd.common.files import atomic_write


def total_steps(n_items: int, batch_size: int, epochs: float, where: str = "training") -> int:
    """Optimizer steps for `epochs` passes over `n_items`; fewer than one is a ConfigError."""
    steps = round(epochs * max(1, n_items // batch_size))
    if steps < 1:
        raise ConfigError(f"{where}: epochs {epochs} is less than one step ({n_items} images at batch {batch_size})")
    return steps


def batch_indices(step: int, n_items: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices (batch_size,) of batch `step`: a fresh permutation per epoch, a function of
    (seed, step) alone so that a resumed run sees exactly the batches it would have seen."""
    per_epoch = max(1, n_items // batch_size)
    epoch, within = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_items)
    return perm[within * batch_size : (within + 1) * batch_size]


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The random stream of one step (caption choice, augmentation): reproducible on resume."""
    return np.random.default_rng([seed, step, 1])


def save_checkpoint(path: Path, step: int, **state) -> None:
    """Atomically write {step, **state_dicts}; a crash mid-write leaves the previous checkpoint."""
    atomic_write(path, lambda tmp: torch.save({"step": step, **state}, tmp))


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at `path`, or None when there is none (tensors and plain types only)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise ConfigError(f"{path}: unreadable checkpoint ({e}); delete it to start over") from None


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * t))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's lr for every group, times the group's own `lr_scale` (default 1)."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def adamw(named_params, lr: float, weight_decay: float, lr_scale=None) -> torch.optim.AdamW:
    """AdamW with decay on matrices only (not on biases, norms, embeddings or scales).
    `lr_scale(name) -> float`, when given, puts parameters in groups of their own relative lr."""
    groups: dict[tuple[bool, float], list] = {}
    for name, p in named_params:
        decay = p.ndim >= 2 and "embedding" not in name
        groups.setdefault((decay, lr_scale(name) if lr_scale else 1.0), []).append(p)
    for key in ((True, 1.0), (False, 1.0)):  # the two default groups always exist, in this order
        groups.setdefault(key, [])
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][1] != 1.0, not kv[0][0], kv[0][1]))
    return torch.optim.AdamW(
        [
            {"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
            for (decay, scale), ps in ordered
        ],
        lr=lr,
    )


class Checkpointer:
    """Periodic atomic checkpoints of a training loop and resumption from the last one.

    `objects` are things with state_dict/load_state_dict (models, optimizers) or tensors
    (e.g. a learnable scale), saved together with the step and the run's config; a resume with
    another config is refused. On resume, the metrics log keeps only the records up to the
    checkpoint's step, so it reads as one uninterrupted run.
    """

    FILE = "checkpoint.pt"

    def __init__(self, out: Path, every: int, resume: bool, log: Path, config: dict, writer: bool = True, **objects):
        self.path, self.every, self.resume, self.log = out / self.FILE, every, resume, log
        self.config, self.objects = json.dumps(config, sort_keys=True), objects
        self.writer = writer  # False on data-parallel ranks other than 0: they only read

    def start(self) -> int:
        """Restore the last checkpoint if resuming (else discard any); return the first step to run."""
        ckpt = load_checkpoint(self.path) if self.resume else None
        if ckpt is None:
            if self.writer:
                self.path.unlink(missing_ok=True)  # a stale checkpoint must never be resumed into this run
                self.log.unlink(missing_ok=True)
            return 0
        if ckpt.get("config") != self.config:
            raise ConfigError(
                f"{self.path}: written by a run with another config; resume with the same "
                "options, or start over without --resume"
            )
        for name, obj in self.objects.items():
            if isinstance(obj, torch.Tensor):
                with torch.no_grad():
                    obj.copy_(ckpt[name])
            else:
                obj.load_state_dict(ckpt[name])
        if self.writer:
            kept = [r for r in read_log(self.log) if r["step"] <= ckpt["step"]]
            self.log.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return ckpt["step"] + 1

    def step_done(self, step: int, total: int) -> None:
        if self.writer and self.every > 0 and (step + 1) % self.every == 0 and step + 1 < total:
            state = {
                n: o.detach().clone() if isinstance(o, torch.Tensor) else o.state_dict()
                for n, o in self.objects.items()
            }
            save_checkpoint(self.path, step, config=self.config, **state)

    def require_finite(self, loss: torch.Tensor, step: int, where: str) -> None:
        """Stop (ConfigError, before the step's update) on a non-finite loss; the last periodic
        checkpoint stays, so the run can be fixed and resumed."""
        if torch.isfinite(loss).all():
            return
        kept = f"{self.path} (the last good state) is kept" if self.path.is_file() else "no checkpoint was written yet"
        raise ConfigError(
            f"{where}: the loss is not finite at step {step} ({float(loss)}): stopped before its update; {kept}. "
            "Check the data, the learning rate and the loss weights"
        )

    def finish(self) -> None:
        """Call once every output is written: the checkpoint has served its purpose."""
        if self.writer:
            self.path.unlink(missing_ok=True)


def claim_run_folder(out: Path, marker: str, resume: bool, overwrite: bool, writer: bool = True) -> None:
    """The rule of every training command: a folder holding a finished run (its `marker` file)
    or an interrupted one (a checkpoint) is trained into only with `resume` (continue it) or
    `overwrite` (start over: the marker goes now, the old outputs as the new run writes them).
    `writer`: False on data-parallel ranks other than 0 (they check, rank 0 removes)."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue a run, or start it over")
    if overwrite:
        if writer:
            (out / marker).unlink(missing_ok=True)
        return
    if (out / marker).is_file() and not resume:
        raise ConfigError(f"{out}: holds a finished run ({marker}); pass --overwrite to replace it, or another --out")
    if (out / Checkpointer.FILE).is_file() and not resume:
        raise ConfigError(
            f"{out}: holds an interrupted run ({Checkpointer.FILE}); pass --resume to continue it "
            "or --overwrite to start over"
        )


def read_log(log: Path) -> list[dict]:
    """The complete records of a JSONL metrics log (a line cut short by a crash is dropped)."""
    records = []
    for line in log.read_text().splitlines() if log.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records
