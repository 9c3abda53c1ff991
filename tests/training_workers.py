"""Entry points of processes the trainer tests spawn.

A plain module on sys.path (tests/conftest.py puts tests/ there, and spawned processes inherit
it): pytest's importlib mode imports test files as ``tests.test_x``, a name the spawned
processes cannot import, so a worker defined in a test file fails to unpickle there.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


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
