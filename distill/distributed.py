"""Data-parallel distillation with torchrun: DistributedDataParallel, gloo on CPU, nccl on GPU.

    torchrun --nproc_per_node 2 -m ammkd.cli.main distill --teachers T1,T2 --data D --out S

Every rank takes a contiguous 1/N of each global batch (same crops as a single process would
draw for those rows); DDP averages the gradients, so a step equals the single-process step on
the global batch. The adaptive weights come from the all-reduced Gram matrix of the teachers'
logit gradients, hence are the same on every rank and equal to the single-process weights.
Rank 0 alone writes logs, checkpoints and outputs. BatchNorm statistics stay per rank on CPU
(PyTorch's SyncBatchNorm needs GPUs); on GPUs they are synchronised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch: int) -> tuple[int, int]:
        """This rank's [lo, hi) slice of a global batch of `batch` rows."""
        per = batch // self.world
        return self.rank * per, (self.rank + 1) * per

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (identity in a single process)."""
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        return self.sum_(t.detach().clone()) / self.world

    def average_grads(self, params: list[torch.Tensor]) -> None:
        """For parameters outside the DDP module (e.g. a learnable logit scale)."""
        for p in params:
            if p.grad is not None:
                self.sum_(p.grad).div_(self.world)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        if torch.cuda.is_available():
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return torch.nn.parallel.DistributedDataParallel(model)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather_rows(self, local: torch.Tensor, total: int) -> torch.Tensor:
        """Concatenate every rank's contiguous chunk of rows (see `chunk`) into (total, ...)."""
        if self.world == 1:
            return local
        size = -(-total // self.world)
        padded = torch.zeros((size, *local.shape[1:]), dtype=local.dtype)
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: len(Ranks(r, self.world).chunk(total))] for r, p in enumerate(parts)])

    def chunk(self, total: int) -> range:
        """This rank's contiguous share of `total` items (the last may be shorter)."""
        size = -(-total // self.world)
        return range(self.rank * size, min(total, (self.rank + 1) * size))


def ranks() -> Ranks:
    """The process group torchrun set up (WORLD_SIZE > 1), initialised once; else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())
