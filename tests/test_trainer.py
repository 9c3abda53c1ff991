"""The trainer (mcc_fast.training): CPU, synthetic data, a tiny model.

Covers: the loss goes down; exact resume (bitwise on CPU); changed optimiser settings apply
on resume; 2-rank gloo DDP == 1 process accumulating the same micro-batches; interrupted and
truncated checkpoints, a failed re-save swap; a corrupt video skipped and counted; each loss
term's wiring against hand-computed values; GAN start; CLI (paths set without YAML parsing).
Run-folder rules (refusing a fresh run, abandoned branches, pruning): test_training_run_folder.py.
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mcc_fast.training import checkpointing
from mcc_fast.training.checkpointing import CheckpointError, latest_checkpoint, load_checkpoint
from mcc_fast.training.config import ConfigError, load_config
from mcc_fast.training.trainer import Trainer, train

SIZE = 32


# ---- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these tensors are tiny, and on shared cores extra threads only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """6 training + 2 test synthetic videos of 8 frames at 32x32 (png frame folders)."""
    from mcc_fast.training.synth import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, videos=8, frames=8, size=SIZE, seed=0, format="png", test_fraction=0.25)
    return root


def tiny_config(root: Path, *overrides: str):
    """The smoke config made quiet and small; `overrides` are --set strings."""
    base = [
        f"data.root={root}", "data.repeats=2", "data.batch_size=2", "data.num_workers=0",
        "log.progress=false", "log.tensorboard=false", "log.print_every=0", "log.val_every=0",
        "log.image_every=0", "checkpoint.every=0", "loss.random_vgg=true", "loss.start_iters={gan: 1000000}",
        "train.total_iter=4", "optim.milestones=[1000]",
    ]
    return load_config("smoke", base + list(overrides))


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, keyed 'file/name'."""
    from safetensors.torch import load_file

    out = {}
    for name in ("model.safetensors", "generator.safetensors", "discriminator.safetensors"):
        for k, v in load_file(str(folder / name)).items():
            out[f"{name}/{k}"] = v
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- learning -----------------------------------------------------------------------------------

def test_short_run_lowers_the_reconstruction_loss(data_root, tmp_path):
    # 40 steps at 32 px on 6 clips, every term on except the GAN.
    config = tiny_config(data_root, "train.total_iter=40", "optim.lr=5e-4", "data.repeats=8")
    result = train(config, None)
    l1 = [row["l1"] for row in result.history]
    start, end = sum(l1[:5]) / 5, sum(l1[-10:]) / 10
    print(f"L1 first 5 steps {start:.4f} -> last 10 steps {end:.4f}")
    assert end < 0.7 * start, (start, end)
    assert all(k in result.history[-1] for k in ("perceptual", "motion_vq", "appearance_vq", "motion_recon",
                                                 "equivariance_value", "equivariance_jacobian", "low_res_l1"))


# ---- resume -------------------------------------------------------------------------------------

def test_resume_continues_exactly(data_root, tmp_path):
    settings = ("train.total_iter=6", "loss.start_iters={gan: 2}", "data.num_workers=1", "data.repeats=1")
    full = train(tiny_config(data_root, *settings), tmp_path / "full")
    first = train(tiny_config(data_root, *settings), tmp_path / "split", stop_at=3)
    assert first.interrupted and first.step == 3 and first.checkpoint.name == "step_00000003"
    second = train(tiny_config(data_root, *settings), tmp_path / "split", resume="latest")
    assert second.step == 6
    assert full.history[3:] == second.history, "losses after the resume differ"
    assert full.history[:3] == first.history
    a, b = weights_of(full.checkpoint), weights_of(second.checkpoint)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    for name in ("model.safetensors", "generator.safetensors", "discriminator.safetensors"):  # byte for byte
        assert (full.checkpoint / name).read_bytes() == (second.checkpoint / name).read_bytes(), name
    state_a = load_checkpoint(full.checkpoint).state
    state_b = load_checkpoint(second.checkpoint).state
    assert state_a["data"] == state_b["data"]
    assert _same_nested(state_a["rng"], state_b["rng"]), "the saved RNG states differ"
    assert torch.equal(state_a["optimizers"]["discriminator"]["state"][0]["exp_avg"],
                       state_b["optimizers"]["discriminator"]["state"][0]["exp_avg"])
    with pytest.raises(ConfigError, match="--stop-at 2: the run is already at step 3"):
        train(tiny_config(data_root, *settings), tmp_path / "split", resume=first.checkpoint, stop_at=2)
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir() if p.name.startswith("step_")) \
        == ["step_00000003", "step_00000006"]  # nothing written by the refused run


def _same_nested(a, b) -> bool:
    """Whether two nested dicts / lists / tuples of tensors and plain values are equal, tensors bitwise."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_nested(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same_nested, a, b))
    return a == b


def test_resume_restores_the_global_rngs_and_the_gradient_scalers(data_root, tmp_path, monkeypatch):
    """Code that draws from torch's / Python's / NumPy's global RNGs during training (a user's
    augmentation) sees the same numbers after a resume, and fp16's gradient scalers continue
    (their growth trackers count on): the checkpoint's states are restored, not re-seeded."""
    import random

    real_step = Trainer.train_step

    def drawing_step(self, micro_batches):
        torch.rand(3), random.random(), np.random.rand()
        return real_step(self, micro_batches)

    monkeypatch.setattr(Trainer, "train_step", drawing_step)
    settings = ("train.total_iter=3", "train.precision=fp16", "data.repeats=1")
    full = train(tiny_config(data_root, *settings), tmp_path / "full")
    first = train(tiny_config(data_root, *settings), tmp_path / "split", stop_at=1)
    assert first.checkpoint.name == "step_00000001"
    second = train(tiny_config(data_root, *settings), tmp_path / "split", resume="latest")
    state_a = load_checkpoint(full.checkpoint).state
    state_b = load_checkpoint(second.checkpoint).state
    assert state_a["scalers"]["generator"], "fp16 training should use a gradient scaler"
    assert _same_nested(state_a["scalers"], state_b["scalers"]), (state_a["scalers"], state_b["scalers"])
    assert _same_nested(state_a["rng"], state_b["rng"]), "the RNG states after a resume differ"


def test_a_fresh_run_seeds_the_global_rngs_from_the_config(data_root, tmp_path):
    import random

    states = []
    for run in ("a", "b"):
        torch.manual_seed(len(run) * 7 + ord(run))  # whatever the caller's RNGs hold before
        random.seed(ord(run))
        np.random.seed(ord(run))
        result = train(tiny_config(data_root, "train.total_iter=1"), tmp_path / run)
        states.append(load_checkpoint(result.checkpoint).state["rng"])
    assert _same_nested(*states)


def test_resume_applies_changed_optimizer_settings(data_root, tmp_path):
    settings = ("train.total_iter=3", "optim.lr=1e-4", "optim.milestones=[1000]")
    train(tiny_config(data_root, *settings), tmp_path / "run", stop_at=2)
    changed = ("optim.lr=1e-6", "optim.betas=[0.5, 0.9]", "optim.weight_decay=0.01",
               "optim.milestones=[1, 3]", "optim.gamma=0.1")
    trainer = Trainer(tiny_config(data_root, *settings, *changed), tmp_path / "run", resume="latest")
    try:
        assert trainer.step == 2
        for name, opt in trainer.optimizers.items():
            group = opt.param_groups[0]
            assert group["lr"] == pytest.approx(1e-7, rel=1e-12), name  # 1e-6 past the milestone 1
            assert tuple(group["betas"]) == (0.5, 0.9) and group["weight_decay"] == 0.01, name
        trainer.train_step(trainer.stream.next_step())  # step 3: the new milestone 3
        assert trainer.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(1e-8, rel=1e-12)
    finally:
        trainer.close()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "optim.lr 0.0001 -> 1e-06" in log and "optim.betas" in log and "optim.gamma" in log


@pytest.mark.parametrize("change, named", [
    ("model.width=16", "model.width: 8 (checkpoint) vs 16 (config)"),
    ("discriminator.base_channels=4", "discriminator.base_channels: 8 (checkpoint) vs 4 (config)"),
])
def test_resume_with_another_architecture_names_the_changed_keys(data_root, tmp_path, change, named):
    train(tiny_config(data_root, "train.total_iter=2"), tmp_path / "run", stop_at=1)
    with pytest.raises(CheckpointError, match=re.escape(named)):
        Trainer(tiny_config(data_root, "train.total_iter=2", change), tmp_path / "run", resume="latest")


def test_resume_without_a_readable_saved_config_names_the_model_fields(data_root, tmp_path, monkeypatch):
    import mcc_fast.training.trainer as trainer_module

    train(tiny_config(data_root, "train.total_iter=2"), tmp_path / "run", stop_at=1)
    monkeypatch.setattr(trainer_module, "_saved_config", lambda text: None)  # e.g. a config that no longer parses
    with pytest.raises(CheckpointError, match=re.escape("model config generator.base_channels: 8 (checkpoint) "
                                                        "vs 16 (config)")):
        Trainer(tiny_config(data_root, "train.total_iter=2", "model.width=16"), tmp_path / "run", resume="latest")


def test_the_logged_lr_is_the_one_the_step_trained_with(data_root, tmp_path):
    # MultiStepLR at milestone 2: steps 1 and 2 train with 2e-4, step 3 with 1e-4 (the
    # official basicsr loop logs the lr of the iteration it reports, too).
    train(tiny_config(data_root, "train.total_iter=3", "optim.lr=2e-4", "optim.milestones=[2]",
                      "log.print_every=1"), tmp_path / "run")
    log = (tmp_path / "run" / "train.log").read_text()
    logged = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"step (\d+)/3 lr (\S+) ", log)}
    assert logged == {1: 2e-4, 2: 2e-4, 3: 1e-4}, logged


# ---- distributed --------------------------------------------------------------------------------

def _run_and_dump(config, out: Path, rank: int = 0) -> None:
    """Train, then save this rank's per-step losses and the last step's gradients."""
    trainer = Trainer(config, out)
    try:
        result = trainer.train()
    finally:
        trainer.close()
    Path(out, f"history_rank{rank}.json").write_text(json.dumps(result.history))
    named = {**{f"model.{k}": p for k, p in trainer.model.named_parameters()},
             **{f"discriminator.{k}": p for k, p in trainer.discriminator.named_parameters()}}
    torch.save({k: p.grad.clone() for k, p in named.items() if p.grad is not None}, Path(out, f"grads_rank{rank}.pt"))


_DDP_SETTINGS = ("train.total_iter=3", "loss.start_iters={gan: 1}", "data.repeats=1", "optim.lr=1e-4")


def _outcomes_of_ranks(worker, args, out: Path, after: str, ranks: int = 2, wait_s: float = 240) -> list[str]:
    """Spawn `ranks` processes of `worker(rank, *args)` and return what each wrote to
    out/error_rank{r}.txt; fails the test when one is still running `wait_s` seconds later."""
    import torch.multiprocessing as mp

    context = mp.spawn(worker, args=args, nprocs=ranks, join=False)
    deadline = time.monotonic() + wait_s
    while any(p.is_alive() for p in context.processes):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"a rank is still running {wait_s:.0f} s after {after}")
        time.sleep(0.5)
    missing = [r for r in range(ranks) if not (out / f"error_rank{r}.txt").is_file()]
    assert not missing, f"ranks {missing} ended without writing their outcome (exit codes " \
                        f"{[p.exitcode for p in context.processes]})"
    return [(out / f"error_rank{r}.txt").read_text() for r in range(ranks)]


@pytest.mark.parametrize("what", ["save", "validate"])
def test_a_rank0_failure_stops_every_rank(data_root, tmp_path, what):
    """Rank 0 writes checkpoints and validates while the others wait at a barrier: when it failed, they
    waited there as long as its process lived (here: gloo's "Connection closed by peer" once it ended),
    instead of stopping with an error that says what rank 0 could not do."""
    from training_workers import failing_rank0_worker

    errors = _outcomes_of_ranks(failing_rank0_worker, (2, _free_port(), str(data_root), str(tmp_path), what),
                                tmp_path, f"rank 0 failed to {what}")
    if what == "save":
        assert errors[0].startswith("CheckpointWriteError: could not write the checkpoint of step 1"), errors[0]
        assert errors[1].startswith("CheckpointWriteError: rank 0 could not write the checkpoint of step 1, so "
                                    "this rank stops too: CheckpointWriteError: could not write"), errors[1]
    else:
        assert errors[0] == "ValueError: the validation video is broken"
        assert errors[1] == ("RuntimeError: rank 0 could not validate at step 1, so this rank stops too: "
                             "ValueError: the validation video is broken")


def test_two_rank_ddp_equals_one_process_accumulating(data_root, tmp_path):
    import torch.multiprocessing as mp

    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    from training_workers import ddp_worker  # see there: spawned processes cannot import this file

    mp.spawn(ddp_worker, args=(2, _free_port(), str(data_root), str(ddp_out)), nprocs=2, join=True)
    _run_and_dump(tiny_config(data_root, *_DDP_SETTINGS, "data.batch_size=1", "train.accumulate=2"), single_out)
    ranks = [json.loads((ddp_out / f"history_rank{r}.json").read_text()) for r in range(2)]
    single = json.loads((single_out / "history_rank0.json").read_text())
    assert len(single) == 3 and "d_real" in single[-1]
    for step, row in enumerate(single):  # rank r's micro-batch == micro-batch r of the single process
        for key, value in row.items():
            mean = (ranks[0][step][key] + ranks[1][step][key]) / 2
            assert mean == pytest.approx(value, rel=1e-4, abs=1e-5), (step, key)
    # The last step's gradients: DDP's average over ranks == the accumulated gradient.
    g_ddp, g_single = torch.load(ddp_out / "grads_rank0.pt"), torch.load(single_out / "grads_rank0.pt")
    assert g_ddp.keys() == g_single.keys() and any(k.startswith("discriminator.") for k in g_ddp)
    # Parameters (or elements) whose true gradient is 0 (a conv bias right before a norm, an
    # attention key bias) only get float noise (< 1e-6 here), which Adam then scales up to ~lr
    # per step: those elements are compared for size only.
    signal = {k: g.abs() >= 1e-6 for k, g in g_single.items()}
    assert sum(int(m.sum()) for m in signal.values()) > 0.8 * sum(m.numel() for m in signal.values())
    for k in g_single:
        scale = g_single[k].abs().max().item()
        assert g_ddp[k][~signal[k]].abs().max().item() < 1e-5 if (~signal[k]).any() else True, k
        torch.testing.assert_close(g_ddp[k][signal[k]], g_single[k][signal[k]], rtol=1e-2, atol=1e-3 * scale, msg=k)
    # The weights after 3 steps (BatchNorm running statistics legitimately differ: each rank
    # tracks its own micro-batch).
    a = weights_of(latest_checkpoint(ddp_out / "checkpoints"))
    b = weights_of(latest_checkpoint(single_out / "checkpoints"))

    def network_name(key: str) -> str:  # "generator.safetensors/encoder.x" -> "model.generator.encoder.x"
        file, name = key.split("/", 1)
        return f"model.{name}" if file != "discriminator.safetensors" else f"discriminator.{name}"

    worst, compared = 0.0, 0
    for k in a:
        if "running_" in k or "num_batches_tracked" in k:
            continue
        name = network_name(k if not k.startswith("generator.safetensors/") else "x/generator." + k.split("/", 1)[1])
        diff = (a[k] - b[k]).abs()
        if name in signal:
            diff = diff[signal[name]]
        compared += diff.numel()
        worst = max(worst, diff.max().item() if diff.numel() else 0.0)
    assert compared > 100_000
    print(f"largest weight difference DDP vs accumulation: {worst:.2e} over {compared} elements")
    assert worst < 2e-5, worst


# ---- checkpoint safety --------------------------------------------------------------------------

def test_interrupted_checkpoint_write_leaves_the_previous_one(data_root, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(data_root, "train.total_iter=2"), tmp_path / "run")
    try:
        trainer.train()
        previous = latest_checkpoint(tmp_path / "run" / "checkpoints")
        assert previous.name == "step_00000002"
        calls = []
        real_write = checkpointing._write_file

        def failing_write(path, data):
            calls.append(path)
            if len(calls) == 2:  # die half-way through the next checkpoint
                real_write(path, data[: len(data) // 2])
                raise OSError("disk full (simulated)")
            real_write(path, data)

        monkeypatch.setattr(checkpointing, "_write_file", failing_write)
        trainer.step = 3
        with pytest.raises(OSError, match="simulated"):
            trainer.save()
    finally:
        trainer.close()
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_00000002"]
    assert latest_checkpoint(root) == previous
    assert load_checkpoint(previous).step == 2
    resumed = train(tiny_config(data_root, "train.total_iter=3"), tmp_path / "run", resume="latest")
    assert resumed.step == 3 and len(resumed.history) == 1


def test_failed_resave_swap_restores_the_old_checkpoint(data_root, tmp_path, monkeypatch):
    root = tmp_path / "run" / "checkpoints"
    trainer = Trainer(tiny_config(data_root, "train.total_iter=1"), tmp_path / "run")
    try:
        trainer.train()
        saved = weights_of(root / "step_00000001")
        real_rename, calls = os.rename, []

        def failing_rename(src, dst, *args, **kwargs):
            if Path(src).parent == root:  # the checkpoint folder swaps only
                calls.append(src)
                if len(calls) == 2:
                    raise OSError("rename failed (simulated)")
            return real_rename(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "rename", failing_rename)
        monkeypatch.setattr(os, "replace", failing_rename)
        with pytest.raises(OSError, match="simulated"):
            trainer.save()  # re-saving step 1
        monkeypatch.undo()
        assert sorted(os.listdir(root)) == ["step_00000001"]
        assert latest_checkpoint(root) == root / "step_00000001"
        # A save killed between the two renames leaves only the backup: the next save restores it.
        os.rename(root / "step_00000001", root / ".tmp-step_old-00000001-99999")
        trainer.step = 2
        trainer.save()
    finally:
        trainer.close()
    assert sorted(os.listdir(root)) == ["step_00000001", "step_00000002"]
    assert load_checkpoint(root / "step_00000001").step == 1
    restored = weights_of(root / "step_00000001")
    assert all(torch.equal(saved[k], restored[k]) for k in saved)


def _nan_l1_at(monkeypatch, bad_step: int) -> None:
    """Make the l1 term NaN at iteration `bad_step` (a diverging step)."""
    from mcc_fast.training.objective import TrainingObjective

    real = TrainingObjective.generator_terms

    def terms_with_nan(self, output, driving, step, **kwargs):
        terms, diagnostics = real(self, output, driving, step, **kwargs)
        if step == bad_step:
            terms["l1"] = terms["l1"] * float("nan")
        return terms, diagnostics

    monkeypatch.setattr(TrainingObjective, "generator_terms", terms_with_nan)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    from mcc_fast.training.trainer import TrainingDiverged

    run = tmp_path / "run"
    settings = ("train.total_iter=6", "checkpoint.every=2", "checkpoint.keep_last=1")
    _nan_l1_at(monkeypatch, 3)
    with pytest.raises(TrainingDiverged, match=r"step 3: the loss is not finite \(.*l1 nan.*\).*no checkpoint "
                       r"written.*" + re.escape(str(run / "checkpoints" / "step_00000002")) + r".*--resume"):
        train(tiny_config(data_root, *settings), run)
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_00000002"]  # not pruned by NaN checkpoints
    assert all(torch.isfinite(t).all() for t in weights_of(root / "step_00000002").values())
    assert "step 3: the loss is not finite" in (run / "train.log").read_text()
    monkeypatch.undo()
    resumed = train(tiny_config(data_root, *settings, "train.total_iter=3"), run, resume="latest")
    assert resumed.step == 3 and all(math.isfinite(v) for v in resumed.history[0].values())


def test_fp16_stops_after_a_run_of_skipped_updates(data_root, tmp_path, monkeypatch):
    """Under fp16 a non-finite loss is skipped by the gradient scaler; a loss that stayed non-finite
    went on skipping every update to the last step without a word beyond the log."""
    import mcc_fast.training.trainer as trainer_module
    from mcc_fast.training.objective import TrainingObjective
    from mcc_fast.training.trainer import TrainingDiverged

    real = TrainingObjective.generator_terms

    def nan_from_step_2(self, output, driving, step, **kwargs):
        terms, diagnostics = real(self, output, driving, step, **kwargs)
        if step >= 2:
            terms["l1"] = terms["l1"] * float("nan")
        return terms, diagnostics

    monkeypatch.setattr(TrainingObjective, "generator_terms", nan_from_step_2)
    monkeypatch.setattr(trainer_module, "MAX_SKIPPED_IN_A_ROW", 3)
    with pytest.raises(TrainingDiverged, match=r"step 4: the loss is not finite \(.*l1 nan.*\).*for 3 steps in a "
                       r"row, each update skipped by the fp16 gradient scaler"):
        train(tiny_config(data_root, "train.total_iter=20", "train.precision=fp16"), tmp_path / "run")


def test_fp16_counts_the_updates_skipped_on_every_rank(data_root, tmp_path):
    """Under DDP a non-finite loss on any rank skips the update on all of them (the gradients are
    averaged). Each rank counted only its own non-finite losses: with them on alternate ranks every
    update was skipped to the last step, and no rank's count reached MAX_SKIPPED_IN_A_ROW."""
    from training_workers import fp16_alternating_nan_worker

    errors = _outcomes_of_ranks(fp16_alternating_nan_worker, (2, _free_port(), str(data_root), str(tmp_path)),
                                tmp_path, "the run started")
    for error in errors:
        assert error.startswith("TrainingDiverged: step 4: the loss is not finite"), error
        assert "for 3 steps in a row, each update skipped by the fp16 gradient scaler" in error, error


def test_fp16_a_skipped_update_now_and_then_goes_on(data_root, tmp_path, monkeypatch):
    import mcc_fast.training.trainer as trainer_module

    _nan_l1_at(monkeypatch, 2)
    monkeypatch.setattr(trainer_module, "MAX_SKIPPED_IN_A_ROW", 1 + 1)
    result = train(tiny_config(data_root, "train.total_iter=4", "train.precision=fp16"), tmp_path / "run")
    assert result.step == 4 and not math.isfinite(result.history[1]["l1"])


def test_a_checkpoint_of_non_finite_weights_is_refused(data_root, tmp_path):
    trainer = Trainer(tiny_config(data_root, "train.total_iter=2"), tmp_path / "run")
    try:
        trainer.train()
        with torch.no_grad():
            trainer.model.generator.decoder.conv_out.weight[0] = float("nan")
        trainer.step = 3
        with pytest.raises(CheckpointError, match=r"not writing the checkpoint of step 3 \(generator\).*NaN or Inf"
                           r".*earlier checkpoints are kept"):
            trainer.save()
    finally:
        trainer.close()
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_00000002"]


def test_truncated_or_foreign_checkpoint_files_are_named(data_root, tmp_path):
    import shutil

    result = train(tiny_config(data_root, "train.total_iter=1"), tmp_path / "run")
    good = result.checkpoint
    for name, damage in (("generator.safetensors", "truncate"), ("state.pt", "foreign"),
                         ("model.safetensors", "truncate"), ("discriminator.safetensors", "flip")):
        bad = tmp_path / f"bad_{name}"
        shutil.copytree(good, bad)
        target = bad / name
        data = target.read_bytes()
        if damage == "truncate":
            target.write_bytes(data[: len(data) // 3])
        elif damage == "foreign":
            target.write_bytes(b"not a checkpoint at all" * 10)
        else:
            target.write_bytes(data[:-8] + bytes(8))
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")
    # --init-from accepts our inference file and rejects another model config, naming the file.
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Trainer(tiny_config(data_root, "model.width=16"), None, init_from=good / "model.safetensors")


def test_init_from_the_authors_pair_uses_params_and_params_ema(data_root, tmp_path):
    from mcc_fast.model import Model
    from mcc_fast.model.generator.keys import official_key_map
    from mcc_fast.model.motion.keys import motion_estimator_key_map

    config = tiny_config(data_root)
    torch.manual_seed(1)
    online, ema = Model(config.model_config), Model(config.model_config)
    to_official_g = {ours: off for off, ours in official_key_map(config.model_config.generator).items()}
    to_official_m = {ours: off for off, ours in motion_estimator_key_map(config.model_config.motion).items()}
    folder = tmp_path / "authors"
    folder.mkdir()
    torch.save({"params": {to_official_g[k]: v for k, v in online.generator.state_dict().items()},
                "params_ema": {to_official_g[k]: v for k, v in ema.generator.state_dict().items()}},
               folder / "net_g_latest.pth")
    torch.save({"params": {f"module.{to_official_m[k]}": v for k, v in online.motion_estimator.state_dict().items()}},
               folder / "net_motion_estimator_latest.pth")
    trainer = Trainer(config, None, init_from=folder)
    try:
        for k, v in online.generator.state_dict().items():
            assert torch.equal(trainer.model.generator.state_dict()[k], v), k
        for k, v in ema.generator.state_dict().items():
            assert torch.equal(trainer.ema.average.state_dict()[k], v), k
        for k, v in online.motion_estimator.state_dict().items():
            assert torch.equal(trainer.model.motion_estimator.state_dict()[k], v), k
    finally:
        trainer.close()
    (folder / "net_motion_estimator_latest.pth").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="net_motion_estimator_latest.pth"):
        Trainer(config, None, init_from=folder)


# ---- data -----------------------------------------------------------------------------------------

def test_corrupt_video_is_skipped_and_counted(data_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    for name in sorted(os.listdir(data_root / "train"))[:2]:
        shutil.copytree(data_root / "train" / name, root / "train" / name)
    (root / "train" / "broken.mp4").write_bytes(b"\x00\x01garbage, not a video" * 40)
    config = tiny_config(root, "data.repeats=2", "data.batch_size=1", "train.total_iter=6", "log.print_every=3",
                         "data.id_sampling=false")
    with pytest.warns(Warning, match="unreadable"):
        result = train(config, tmp_path / "run", stop_at=3)
    assert result.step == 3
    assert result.unreadable_videos == ["broken.mp4"]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "unreadable videos skipped: 1" in log and "broken.mp4" in log
    assert load_checkpoint(result.checkpoint).state["unreadable_videos"] == ["broken.mp4"]
    # The count survives a resume, even when the resumed steps cannot meet the video again
    # (here: the user mended the file).
    from mcc_fast.training.data.video_io import list_frame_files, read_image, write_video

    frames = [read_image(f) for f in list_frame_files(next(p for p in (root / "train").iterdir() if p.is_dir()))]
    write_video(root / "train" / "broken.mp4", np.stack(frames), fps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = train(config, tmp_path / "run", resume="latest")
    assert resumed.step == 6 and resumed.unreadable_videos == ["broken.mp4"]
    # ... but not once the video left the training set.
    (root / "train" / "broken.mp4").unlink()
    config = tiny_config(root, "data.repeats=2", "data.batch_size=1", "train.total_iter=8", "log.print_every=3",
                         "data.id_sampling=false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        later = train(config, tmp_path / "run", resume="latest")
    assert later.step == 8 and later.unreadable_videos == []


# ---- loss wiring ----------------------------------------------------------------------------------

def test_each_loss_term_matches_a_hand_computation(data_root):
    from mcc_fast.model import Model
    from mcc_fast.model.generator.warping import identity_grid
    from mcc_fast.training.losses import RandomTransform
    from mcc_fast.training.objective import TrainingObjective

    config = tiny_config(data_root, "loss.l1=2", "loss.perceptual=0", "loss.low_res=0.5", "loss.motion_vq=0.5",
                         "loss.appearance_vq=0.25", "loss.motion_recon=3", "loss.keypoint_distance=1.5",
                         "loss.equivariance_value=2", "loss.equivariance_jacobian=0")
    objective = TrainingObjective(config.loss, None)
    assert objective.perceptual is None
    torch.manual_seed(0)
    model = Model(config.model_config).train()
    source, driving = torch.rand(2, 2, 3, SIZE, SIZE) * 2 - 1
    theta = torch.tensor([[[1.05, 0.02, 0.03], [-0.01, 0.97, -0.02]]]).repeat(2, 1, 1)
    transform = RandomTransform(theta)
    kp_t = model.motion_estimator.keypoint_detector(transform.transform_frame(driving))
    out = model(source, driving, return_all=True, training=True)
    terms, _ = objective.generator_terms(out, driving, 1, kp_transformed=kp_t, transform=transform)
    assert set(terms) == {"l1", "low_res_l1", "motion_vq", "appearance_vq", "motion_recon",
                          "equivariance_value", "keypoint_distance"}
    t = out.generator.training
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
    close(terms["l1"], 2 * (out.frame - driving).abs().mean())
    close(terms["low_res_l1"], 0.5 * 2 * (t.low_res_frame - driving).abs().mean())
    close(terms["motion_vq"], 0.5 * sum(t.motion_vq_losses))
    close(terms["appearance_vq"], 0.25 * sum(t.appearance_vq_losses))
    grid = identity_grid(out.generator.flows[0].shape[1])
    recon = sum((r - (f - grid)).abs().mean() for r, f in zip(t.motion_reconstructions, out.generator.flows))
    close(terms["motion_recon"], 3 * recon)
    kp_d = out.motion.kp_driving.value
    warped = torch.einsum("bij,bkj->bki", theta[:, :, :2], kp_t.value) + theta[:, None, :, 2]
    close(terms["equivariance_value"], 2 * (kp_d - warped).abs().mean())
    k = kp_d.shape[1]

    def close_pairs(kp):  # off-diagonal pairs nearer than 0.2 count 2 each, over B K K entries
        d = torch.cdist(kp, kp)
        return 2 * ((d < 0.2) & ~torch.eye(k, dtype=torch.bool)).sum() / (kp.shape[0] * k * k)

    close(terms["keypoint_distance"], 1.5 * (close_pairs(out.motion.kp_source.value) + close_pairs(kp_d)))
    # Gradients reach both networks through the total.
    sum(terms.values()).backward()
    assert model.generator.decoder.conv_out.weight.grad.abs().sum() > 0
    assert model.motion_estimator.keypoint_detector.heatmap_head.weight.grad.abs().sum() > 0


def test_gan_starts_at_its_iteration_and_zero_weights_turn_terms_off(data_root):
    config = tiny_config(data_root, "loss.start_iters={gan: 2}", "train.total_iter=3", "loss.perceptual=0",
                         "loss.random_vgg=false", "loss.equivariance_jacobian=0", "loss.motion_recon=0")
    trainer = Trainer(config, None)
    try:
        assert trainer.objective.perceptual is None  # no VGG needed, none built
        before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
        history = [trainer.train_step(trainer.stream.next_step()) for _ in range(2)]
        after_two = trainer.discriminator.state_dict()
        assert all(torch.equal(before[k], after_two[k]) for k in before), "D changed before the GAN started"
        history.append(trainer.train_step(trainer.stream.next_step()))
        changed = trainer.discriminator.state_dict()
        assert not torch.equal(before["head.weight"], changed["head.weight"])
    finally:
        trainer.close()
    for row in history[:2]:
        assert not {"gan", "gan_weight", "d_real", "d_fake"} & set(row)
    assert {"gan", "gan_weight", "d_real", "d_fake"} <= set(history[2])
    assert 0 <= history[2]["gan_weight"] <= 0.8
    for row in history:
        assert not {"perceptual", "low_res_perceptual", "equivariance_jacobian", "motion_recon"} & set(row)
        assert {"l1", "equivariance_value", "motion_vq", "appearance_vq"} <= set(row)


def test_sync_bn_synchronises_the_motion_estimator_but_not_the_discriminator(data_root, monkeypatch):
    """train.sync_bn on a multi-GPU run converts the motion estimator's BatchNorm (official:
    SynchronizedBatchNorm2d there) but leaves the discriminator's per process, as the
    authors' VQGANDiscriminator (plain nn.BatchNorm2d under DDP). The CUDA placement and the
    DDP wrapping are stubbed out so this runs on the CPU."""
    from torch import nn

    from mcc_fast.training.distributed import DistributedContext

    monkeypatch.setattr(nn.Module, "to", lambda self, *args, **kwargs: self)
    monkeypatch.setattr(Trainer, "_wrap_distributed", lambda self: None)
    context = DistributedContext(rank=0, world_size=2, device=torch.device("cuda"))
    trainer = Trainer(tiny_config(data_root, "train.sync_bn=true", "train.fused_ops=false"), None, context=context)
    try:
        assert any(isinstance(m, nn.SyncBatchNorm) for m in trainer.model.motion_estimator.modules())
        assert not any(isinstance(m, nn.SyncBatchNorm) for m in trainer.discriminator.modules())
        assert any(type(m) is nn.BatchNorm2d for m in trainer.discriminator.modules())
    finally:
        trainer.close()


def test_mixed_precision_steps_run(data_root):
    for precision in ("bf16", "fp16"):
        config = tiny_config(data_root, f"train.precision={precision}", "loss.start_iters={gan: 0}",
                             "train.total_iter=1")
        trainer = Trainer(config, None)
        try:
            row = trainer.train_step(trainer.stream.next_step())
        finally:
            trainer.close()
        assert all(torch.isfinite(torch.tensor(v)) for v in row.values()), (precision, row)
        assert "gan" in row


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_ops_training_step_matches_the_reference_ops(data_root, precision):
    """train.fused_ops=true (Model.use_fused_ops; the torch kernels on CPU) gives the reference
    step's losses, also under autocast; auto is off on CPU."""
    rows = {}
    for fused in ("false", "true", "auto"):
        config = tiny_config(data_root, f"train.precision={precision}", "loss.start_iters={gan: 0}",
                             "train.total_iter=1", f"train.fused_ops={fused}")
        trainer = Trainer(config, None)
        try:
            assert (trainer.model.generator.fused is not None) == (fused == "true")
            rows[fused] = trainer.train_step(trainer.stream.next_step())
        finally:
            trainer.close()
    assert all(math.isfinite(v) for row in rows.values() for v in row.values()), rows
    assert rows["auto"] == rows["false"]
    tol = 1e-4 if precision == "fp32" else 2e-2
    for key, value in rows["false"].items():
        assert rows["true"][key] == pytest.approx(value, rel=tol, abs=tol), key


# ---- command line -------------------------------------------------------------------------------

def test_cli_trains_resumes_and_reports_errors(data_root, tmp_path, capsys):
    from mcc_fast.cli import main

    out = tmp_path / "run"
    common = ["train", "--config", "smoke", "--data", str(data_root), "--out", str(out), "--random-vgg",
              "--set", "log.progress=false", "--set", "log.tensorboard=false", "--set", "log.val_every=2",
              "--set", "train.total_iter=2", "--set", "data.repeats=2"]
    assert main(common) == 0
    assert (out / "checkpoints" / "step_00000002" / "model.safetensors").is_file()
    assert "validation step 2" in (out / "train.log").read_text()
    capsys.readouterr()
    assert main(common) == 2  # a second fresh run into the same folder
    err = capsys.readouterr().err
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert main(common[:-4] + ["--set", "train.total_iter=3", "--set", "data.repeats=2", "--resume"]) == 0
    assert "resumed from" in (out / "train.log").read_text()
    assert latest_checkpoint(out / "checkpoints").name == "step_00000003"
    # Our inference file loads as a Model.
    from mcc_fast.model import Model

    Model.from_pretrained(out / "checkpoints" / "step_00000003", device="cpu")
    capsys.readouterr()
    assert main(["train", "--config", "smoke", "--data", str(data_root), "--set", "optim.lrr=1"]) == 2
    assert "optim" in capsys.readouterr().err
    assert main(["train", "--config", "smoke", "--data", str(data_root), "--out", str(tmp_path / "x")]) == 2
    assert "--vgg-weights" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.precision"):
        load_config("smoke", ["train.precision=fp8"])
    with pytest.raises(ConfigError, match="train.fused_ops"):
        load_config("smoke", ["train.fused_ops=sometimes"])


def test_cli_paths_are_not_read_as_yaml(data_root, tmp_path):
    import argparse

    from mcc_fast.commands.train import add_arguments, build_config

    data = tmp_path / "my #2: data"
    data.mkdir()
    (data / "train").symlink_to(data_root / "train")
    vgg = tmp_path / "vgg #19: weights.pth"
    vgg.write_bytes(b"")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = build_config(parser.parse_args(["--config", "smoke", "--data", str(data), "--vgg-weights", str(vgg)]))
    assert config.data.root == str(data.resolve())
    assert config.loss.vgg_weights == str(vgg.resolve()) and config.loss.random_vgg is False
    config = build_config(parser.parse_args(["--config", "smoke", "--data", str(data), "--random-vgg",
                                             "--set", "data.root=/elsewhere"]))
    assert config.data.root == "/elsewhere" and config.loss.vgg_weights is None and config.loss.random_vgg


def test_training_benchmark_compares_runs(capsys):
    """`python -m mcc_fast.training.benchmark`: one JSON line per PRECISION:OPS run, then the comparison."""
    import json

    from mcc_fast.training import benchmark

    assert benchmark.main(["--config", "smoke", "--batch", "1", "--steps", "1", "--warmup", "0",
                           "--runs", "fp32:reference", "fp32:fused"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [(r["precision"], r["ops"]) for r in lines[:2]] == [("fp32", "reference"), ("fp32", "fused")]
    assert all(r["seconds_per_iter"] > 0 and r["peak_memory_mib"] is None for r in lines[:2])
    assert lines[2]["compare"] == ["fp32:fused", "fp32:reference"] and lines[2]["speedup"] > 0
    with pytest.raises(SystemExit):
        benchmark.main(["--runs", "fp32:fast"])


def test_resume_over_a_changed_training_set_says_the_data_order_restarts(data_root, tmp_path):
    first = train(tiny_config(data_root, "train.total_iter=4"), tmp_path / "run", stop_at=2)
    assert first.checkpoint.name == "step_00000002"
    state = load_checkpoint(first.checkpoint).state
    assert state["data"]["dataset_size"] == 12  # 6 training videos x 2 repeats
    second = train(tiny_config(data_root, "train.total_iter=4", "data.repeats=3"), tmp_path / "run", resume="latest")
    assert second.step == 4
    log = (tmp_path / "run" / "train.log").read_text()
    assert "the training set changed (12 -> 18 pairs per epoch); the data order restarts" in log


def test_zero_validation_videos_and_frames_mean_all_of_them(data_root, tmp_path):
    from mcc_fast.training.trainer import Trainer

    trainer = Trainer(tiny_config(data_root, "log.val_every=1", "log.val_videos=0", "log.val_frames=0"), tmp_path / "v")
    try:
        result = trainer._validate()
    finally:
        trainer.close()
    assert result.videos == 2 and result.frames == 2 * 8  # both test videos, all 8 frames each
    assert math.isfinite(result.l1) and math.isfinite(result.l1_no_motion)


def test_validate_keeps_each_submodules_mode():
    """validate() runs the networks in eval mode and gives every submodule back its own mode (a
    frozen keypoint detector stayed frozen; restoring with train(True) unfroze it)."""
    from mcc_fast.model import Model, ModelConfig
    from mcc_fast.training.validation import validate

    torch.manual_seed(0)
    model = Model(ModelConfig.small(SIZE, 3, 8)).train()
    model.motion_estimator.keypoint_detector.eval()
    before = {name: m.training for name, m in model.named_modules()}
    video = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    result = validate(model.motion_estimator, model.generator, [{"ok": True, "video": video}], torch.device("cpu"))
    assert result.frames == 3
    assert {name: m.training for name, m in model.named_modules()} == before


def test_validation_says_how_many_test_videos_it_left_out(data_root, tmp_path):
    import shutil

    from mcc_fast.training.trainer import Trainer

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    (root / "test" / "broken.mp4").write_bytes(b"not a video")
    trainer = Trainer(tiny_config(root, "log.val_every=1", "log.val_videos=0"), tmp_path / "v")
    try:
        with pytest.warns(Warning, match="unreadable"):
            result = trainer._validate()
    finally:
        trainer.close()
    assert result.videos == 2 and result.unreadable == 1
    assert "(1 unreadable test videos left out)" in (tmp_path / "v" / "train.log").read_text()


def test_rank0_error_survives_a_failed_collective():
    """When rank 0's work raised and the collective then failed too (another rank gone), the
    error the user sees is rank 0's own, with the collective's as its cause."""
    from types import SimpleNamespace

    def gather(_):
        raise RuntimeError("connection closed by peer")

    def work():
        raise OSError("disk full")

    fake = SimpleNamespace(ctx=SimpleNamespace(is_main=True, all_gather_objects=gather))
    with pytest.raises(OSError, match="disk full") as caught:
        Trainer._on_rank0(fake, work, "save")
    assert isinstance(caught.value.__cause__, RuntimeError)
    ok = SimpleNamespace(ctx=SimpleNamespace(is_main=True, all_gather_objects=gather))
    with pytest.raises(RuntimeError, match="connection closed"):
        Trainer._on_rank0(ok, lambda: 1, "save")


def test_global_generators_end_seeded_per_rank(data_root, tmp_path, monkeypatch):
    """The weights' init seeds every device's generator with config.seed (the same weights on
    every rank); the per-rank seed of the global generators comes after it, so the CUDA
    generators of different ranks do not draw the same numbers."""
    from mcc_fast.training import trainer as trainer_module

    seeds: list[int] = []
    real = torch.manual_seed
    monkeypatch.setattr(trainer_module.torch, "manual_seed", lambda s: (seeds.append(int(s)), real(s))[1])
    config = tiny_config(data_root, "train.total_iter=1", "seed=5")
    Trainer(config, None).close()
    assert seeds and seeds[0] != seeds[-1]
    assert seeds[-1] == (5 * 1_000_003 + 0) % 2**32
