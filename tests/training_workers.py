"""Entry points of processes the trainer tests spawn.

A plain module on sys.path (tests/conftest.py puts tests/ there, and spawned processes inherit
it): pytest's importlib mode imports test files as ``tests.test_x``, a name the spawned
processes cannot import, so a worker defined in a test file fails to unpickle there.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def _outcome(config, out: Path) -> str:
    """Train this rank; "no error" or the error it ended with ("Type: message"). The process group
    is left as it is (no teardown after a failed run: see _report_and_exit)."""
    from mcc_fast.training.distributed import DistributedContext
    from mcc_fast.training.trainer import Trainer

    context = DistributedContext.from_environment(config.check().train.device)
    try:
        Trainer(config, out, context=context).train()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def _report_and_exit(path: Path, message: str) -> None:
    """Write the rank's outcome, then leave at once: after a failed run gloo's teardown (destroying
    the group, the interpreter's exit) now and then aborted ("terminate called without an active
    exception", SIGABRT) or hung on CPU, which the test would read as the rank crashing or waiting."""
    import sys

    path.write_text(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    """One gloo rank of test_trainer's DDP comparison (batch 1, no accumulation)."""
    from test_trainer import _DDP_SETTINGS, _run_and_dump, tiny_config

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        _run_and_dump(tiny_config(Path(root), *_DDP_SETTINGS, "data.batch_size=1", "train.accumulate=1"),
                      Path(out), rank)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def failing_rank0_worker(rank: int, world: int, port: int, root: str, out: str, what: str) -> None:
    """One gloo rank of a 2-step run whose rank 0 fails to `what` ("save": the checkpoint write
    runs out of disk; "validate": validation raises); each rank writes the error it ended with
    to out/error_rank{rank}.txt."""
    import errno

    import mcc_fast.training.trainer as trainer_module
    from test_trainer import tiny_config

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)

    def fail(*args, **kwargs):
        if what == "save":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise ValueError("the validation video is broken")

    if rank == 0:
        setattr(trainer_module, "save_checkpoint" if what == "save" else "validate", fail)
    overrides = ["train.total_iter=2", "data.batch_size=1", "checkpoint.every=1", "log.val_every=1"]
    message = _outcome(tiny_config(Path(root), *overrides), Path(out) / "run")
    _report_and_exit(Path(out, f"error_rank{rank}.txt"), message)


def fp16_alternating_nan_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    """One gloo rank of an fp16 run whose l1 term is NaN on rank (step % 2) from step 2 on: every
    update is skipped (DDP averages the NaN gradients into every rank's), though no one rank has
    two non-finite losses in a row. Writes the error it ended with to out/error_rank{rank}.txt."""
    import mcc_fast.training.trainer as trainer_module
    from mcc_fast.training.objective import TrainingObjective
    from test_trainer import tiny_config

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    real = TrainingObjective.generator_terms

    def nan_on_alternate_ranks(self, output, driving, step, **kwargs):
        terms, diagnostics = real(self, output, driving, step, **kwargs)
        if step >= 2 and step % world == rank:
            terms["l1"] = terms["l1"] * float("nan")
        return terms, diagnostics

    TrainingObjective.generator_terms = nan_on_alternate_ranks
    trainer_module.MAX_SKIPPED_IN_A_ROW = 3
    message = _outcome(tiny_config(Path(root), "train.total_iter=8", "data.batch_size=1", "train.precision=fp16"),
                       Path(out) / "run")
    _report_and_exit(Path(out, f"error_rank{rank}.txt"), message)


def train_until_stopped(root: str, out: str) -> None:
    """A long run with 2 data workers, for a test to stop with a signal (its own process)."""
    from mcc_fast.training.trainer import train
    from test_trainer import tiny_config

    torch.set_num_threads(1)
    train(tiny_config(Path(root), "train.total_iter=100000", "data.num_workers=2", "log.print_every=1"), out)


class SigintDisposition(torch.utils.data.Dataset):
    """Item i: whether this (worker) process ignores SIGINT."""

    seed = 0

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> bool:
        import signal

        return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


class DeafToSigterm(torch.utils.data.Dataset):
    """One item that takes a minute, in a worker that ignores SIGTERM (busy: as one in a C call)."""

    def __init__(self, started: str) -> None:
        self.started = started  # a file the worker creates once it ignores SIGTERM

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        import signal
        import time

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        Path(self.started).touch()
        time.sleep(60)
        return index
