"""Process-group bookkeeping of the training command: one process, or one per torchrun worker (gloo on CPU,
nccl on GPU)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["Dist"]


class Dist:
    """Process-group bookkeeping: a no-op single process unless launched by torchrun."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = torch.device("cpu")
        if self.world > 1:
            if torch.cuda.is_available():
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
                dist.init_process_group("nccl")
            else:
                dist.init_process_group("gloo")
        elif torch.cuda.is_available():
            self.device = torch.device("cuda")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def close(self):
        if self.world > 1:
            dist.destroy_process_group()
