"""A resumable distributed sampler and the micro-batch stream the trainer reads.

Every epoch is a seeded permutation of the dataset, cut into *global steps* of
``world_size * accumulate * batch_size`` indices (a partial last step is dropped). Within a
step, micro-batch ``a`` of rank ``r`` takes the slice number ``a * world_size + r``. So

* ranks see disjoint shards of one shared permutation (like ``DistributedSampler``);
* a 2-rank run and a 1-process run accumulating 2 micro-batches see the same micro-batches
  (rank r <-> micro-batch r), which makes them comparable step for step;
* the position is (epoch, step within the epoch): a resumed run starts exactly there.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["DistributedStepSampler", "MicroBatchStream"]


class DistributedStepSampler(Sampler[list[int]]):
    """Batch sampler: this rank's micro-batches (lists of `batch_size` indices) of one epoch,
    from step `start_step` on. Call `set_position(epoch, start_step)` before iterating."""

    def __init__(self, dataset_size: int, batch_size: int, accumulate: int = 1, world_size: int = 1,
                 rank: int = 0, seed: int = 0, shuffle: bool = True) -> None:
        if batch_size < 1 or accumulate < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler sizes: batch_size={batch_size}, accumulate={accumulate}, "
                             f"world_size={world_size}, rank={rank}")
        self.dataset_size = int(dataset_size)
        self.batch_size = int(batch_size)
        self.accumulate = int(accumulate)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.start_step = 0
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the training set has {dataset_size} items but one step needs {self.global_batch} "
                f"(world_size {world_size} x accumulate {accumulate} x batch_size {batch_size}): "
                "raise data.repeats or lower the batch")

    @property
    def global_batch(self) -> int:
        """Items consumed by one optimiser step over all ranks."""
        return self.world_size * self.accumulate * self.batch_size

    @property
    def steps_per_epoch(self) -> int:
        """Whole global steps in one pass over the dataset."""
        return self.dataset_size // self.global_batch

    def set_position(self, epoch: int, start_step: int = 0) -> None:
        """Iterate epoch `epoch` from global step `start_step` of that epoch."""
        if epoch < 0 or not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"bad sampler position: epoch {epoch}, step {start_step} of {self.steps_per_epoch}")
        self.epoch, self.start_step = int(epoch), int(start_step)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's order of dataset indices (int64 (N,)), the same on every rank."""
        if not self.shuffle:
            return torch.arange(self.dataset_size)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accumulate

    def __iter__(self) -> Iterator[list[int]]:
        order = self.permutation(self.epoch)
        b, w = self.batch_size, self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            block = order[step * self.global_batch:(step + 1) * self.global_batch]
            for a in range(self.accumulate):
                slot = a * w + self.rank
                yield block[slot * b:(slot + 1) * b].tolist()


class MicroBatchStream:
    """Endless micro-batches of a DataLoader built on a `DistributedStepSampler`, epoch by epoch.

    `next_step()` returns the `accumulate` micro-batches of the next optimiser step and
    advances the position (epoch, step_in_epoch). The dataset's `set_epoch` is called before
    each epoch's iterator starts (so persistent workers see the new epoch's randomness).
    """

    def __init__(self, loader: DataLoader, sampler: DistributedStepSampler, epoch: int = 0,
                 step_in_epoch: int = 0) -> None:
        self.loader = loader
        self.sampler = sampler
        self.epoch = int(epoch)
        self.step_in_epoch = int(step_in_epoch)
        self._iterator = None

    def position(self) -> dict:
        """The data position of the next step (saved in checkpoints)."""
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "global_batch": self.sampler.global_batch, "steps_per_epoch": self.sampler.steps_per_epoch,
                "dataset_size": self.sampler.dataset_size}

    def _start_epoch(self) -> None:
        if self.step_in_epoch >= self.sampler.steps_per_epoch:
            self.epoch += 1
            self.step_in_epoch = 0
        dataset = self.loader.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.epoch)
        self.sampler.set_position(self.epoch, self.step_in_epoch)
        self._iterator = iter(self.loader)

    def close(self) -> None:
        """Stop the loader's worker processes (a later `next_step` starts them again)."""
        self._iterator = None
        iterator = getattr(self.loader, "_iterator", None)  # persistent workers live here
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            for worker in getattr(iterator, "_workers", ()):  # one its SIGTERM did not end (still busy)
                if worker.is_alive():
                    worker.kill()
                    worker.join()
        if hasattr(self.loader, "_iterator"):
            self.loader._iterator = None

    def next_step(self) -> list[dict]:
        """The micro-batches of the next step (a list of `accumulate` collated batches)."""
        if self._iterator is None or self.step_in_epoch >= self.sampler.steps_per_epoch:
            self._start_epoch()
        batches = [next(self._iterator) for _ in range(self.sampler.accumulate)]
        self.step_in_epoch += 1
        if self.step_in_epoch >= self.sampler.steps_per_epoch:
            self._iterator = None  # drain: the next call starts the next epoch
        return batches
