"""Process-group setup for `torchrun` (DDP): rank, world size, device, small collectives.

`torchrun` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; with WORLD_SIZE > 1
`DistributedContext.from_environment` joins the group (NCCL on CUDA, gloo on CPU). A single
process needs no environment at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistributedContext"]


@dataclass
class DistributedContext:
    """Where this process sits: rank, local rank, world size, device; owns the process group."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_distributed(self) -> bool:
        """True when there are several processes."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the one that logs and writes files)."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str = "auto") -> "DistributedContext":
        """Read torchrun's variables, pick the device and join the group when WORLD_SIZE > 1.

        device: "auto" (cuda:LOCAL_RANK when CUDA is available, else CPU), "cpu" or "cuda".
        """
        world = _env_int("WORLD_SIZE", 1)
        rank = _env_int("RANK", 0)
        local_rank = _env_int("LOCAL_RANK", rank)
        if not 0 <= rank < world:
            raise RuntimeError(f"RANK={rank} is outside WORLD_SIZE={world}")
        use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
        if use_cuda and not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but torch sees no CUDA GPU")
        if use_cuda:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
            dev = torch.device("cuda", torch.cuda.current_device())
        else:
            dev = torch.device("cpu")
        owns = False
        if world > 1 and not dist.is_initialized():
            for name in ("MASTER_ADDR", "MASTER_PORT"):
                if name not in os.environ:
                    raise RuntimeError(f"WORLD_SIZE={world} but {name} is not set: launch with torchrun")
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
            owns = True
        return cls(rank=rank, local_rank=local_rank, world_size=world, device=dev, owns_group=owns)

    # ---- collectives (no-ops for one process) ------------------------------------------------

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.is_distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks in place (returned)."""
        if self.is_distributed:
            dist.all_reduce(tensor)
        return tensor

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """[obj of rank 0, obj of rank 1, ...] on every rank (picklable objects)."""
        if not self.is_distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def any_flag(self, flag: bool) -> bool:
        """True on every rank when `flag` is True on any rank."""
        if not self.is_distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def close(self) -> None:
        """Leave the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"environment variable {name}={value!r} is not an integer") from None
