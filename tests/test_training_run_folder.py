"""The run folder's checkpoints: a fresh run refuses (or with overwrite, clears) a folder that
holds another run's checkpoints; a resume from an older checkpoint moves the later ones (an
abandoned branch) aside; pruning never deletes the checkpoint just written."""
from __future__ import annotations

import os
import re
import shutil

import pytest

from mcc_fast.training.checkpointing import latest_checkpoint, list_checkpoints, prune_checkpoints
from mcc_fast.training.config import ConfigError
from mcc_fast.training.trainer import Trainer, train
from test_trainer import data_root, one_thread, tiny_config  # noqa: F401  (fixtures)


def names(root) -> list[str]:
    """The checkpoint folder names under `root`, oldest first."""
    return [p.name for p in list_checkpoints(root)]


def test_pruning_keeps_the_checkpoint_just_written_and_later_ones(tmp_path):
    for step in (2, 4, 6):
        (tmp_path / f"step_{step:08d}").mkdir()
    assert prune_checkpoints(tmp_path, 2, newest_step=2) == []
    assert prune_checkpoints(tmp_path, 1, newest_step=4) == [tmp_path / "step_00000002"]
    assert names(tmp_path) == ["step_00000004", "step_00000006"]


def test_latest_checkpoint_is_the_newest_folder_with_a_state_file(tmp_path):
    """list_checkpoints takes complete step_* names only; latest_checkpoint skips a newer folder
    without its state file (damaged by hand) and returns None when none has one."""
    assert latest_checkpoint(tmp_path / "missing") is None
    for step in (3, 10, 12):
        (tmp_path / f"step_{step:08d}").mkdir()
    (tmp_path / "step_1").mkdir()  # too short a number: not a checkpoint name
    (tmp_path / ".tmp-step_00000099-1").mkdir()
    assert names(tmp_path) == ["step_00000003", "step_00000010", "step_00000012"]
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "step_00000003" / "state.pt").write_bytes(b"")
    (tmp_path / "step_00000010" / "state.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000010"


def test_fresh_run_into_a_folder_with_checkpoints_is_refused_unless_overwrite(data_root, tmp_path):
    run = tmp_path / "run"
    root = run / "checkpoints"
    first = train(tiny_config(data_root, "train.total_iter=1"), run)
    for step in (4, 6):  # an earlier, longer run's checkpoints (copies: only their names matter here)
        shutil.copytree(first.checkpoint, root / f"step_{step:08d}")
    config_yaml = (run / "config.yaml").read_bytes()
    settings = ("train.total_iter=3", "checkpoint.keep_last=2", "optim.lr=1e-3")
    with pytest.raises(ConfigError, match=re.escape(str(run)) + ".*--resume.*--overwrite"):
        Trainer(tiny_config(data_root, *settings), run)
    elsewhere = shutil.copytree(first.checkpoint, tmp_path / "other" / "checkpoints" / first.checkpoint.name)
    with pytest.raises(ConfigError, match="--overwrite"):  # another run's checkpoint into this folder
        Trainer(tiny_config(data_root, *settings), run, resume=elsewhere)
    with pytest.raises(ConfigError, match="--overwrite.*--resume"):  # would delete what it resumes from
        Trainer(tiny_config(data_root, *settings), run, resume="latest", overwrite=True)
    assert names(root) == ["step_00000001", "step_00000004", "step_00000006"]
    assert (run / "config.yaml").read_bytes() == config_yaml
    result = train(tiny_config(data_root, *settings), run, stop_at=2, overwrite=True)
    assert result.checkpoint == root / "step_00000002" and result.checkpoint.is_dir()
    assert names(root) == ["step_00000002"]
    assert "--overwrite: deleted 3 earlier checkpoint(s)" in (run / "train.log").read_text()


def test_resuming_an_older_checkpoint_moves_the_later_ones_aside(data_root, tmp_path):
    run = tmp_path / "run"
    root = run / "checkpoints"
    settings = ("train.total_iter=4", "checkpoint.keep_last=1")
    first = train(tiny_config(data_root, *settings), run, stop_at=2)
    for step in (4, 6):  # a branch continued past step 2, then abandoned
        shutil.copytree(first.checkpoint, root / f"step_{step:08d}")
    result = train(tiny_config(data_root, *settings), run, resume=first.checkpoint, stop_at=3)
    assert result.step == 3 and result.checkpoint == root / "step_00000003" and result.checkpoint.is_dir()
    assert names(root) == ["step_00000003"]  # step 2 pruned (keep_last 1)
    aside = [p for p in root.iterdir() if p.name.startswith("abandoned-")]
    assert len(aside) == 1 and sorted(os.listdir(aside[0])) == ["step_00000004", "step_00000006"]
    assert str(aside[0]) in (run / "train.log").read_text()
    assert latest_checkpoint(root) == result.checkpoint
    abandoned = aside[0] / "step_00000004"  # changing one's mind: that branch goes on in another folder
    with pytest.raises(ConfigError, match=r"abandoned branch of this run.*--out NEW_RUN --resume"):
        Trainer(tiny_config(data_root, *settings), run, resume=abandoned)
    with pytest.raises(ConfigError, match="abandoned branch"):  # and --overwrite would not delete this branch
        Trainer(tiny_config(data_root, *settings), run, resume=abandoned, overwrite=True)
    assert names(root) == ["step_00000003"] and sorted(os.listdir(aside[0])) == ["step_00000004", "step_00000006"]
    moved = Trainer(tiny_config(data_root, *settings), tmp_path / "branch", resume=abandoned)
    moved.close()


def test_resume_of_a_run_folder_says_which_folder_to_pass(data_root, tmp_path):
    run = tmp_path / "run"
    first = train(tiny_config(data_root, "train.total_iter=2"), run, stop_at=1)
    for given in (run, run / "checkpoints"):  # the run folder instead of one of its checkpoints
        with pytest.raises(ConfigError, match=re.escape(f"--resume {str(given)!r}: a run folder") + ".*"
                           + re.escape(f"--out {run} --resume") + ".*" + re.escape(str(first.checkpoint))):
            Trainer(tiny_config(data_root, "train.total_iter=2"), tmp_path / "other", resume=given)
    with pytest.raises(ConfigError, match="--resume .*: no such checkpoint folder"):
        Trainer(tiny_config(data_root, "train.total_iter=2"), tmp_path / "other", resume=tmp_path / "missing")
    with pytest.raises(ConfigError, match="--resume .*: expected a checkpoint folder .* got a file"):
        Trainer(tiny_config(data_root, "train.total_iter=2"), tmp_path / "other", resume=run / "config.yaml")


def test_resume_logs_the_other_settings_that_changed(data_root, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(data_root, "train.total_iter=2"), run, stop_at=1)
    trainer = Trainer(tiny_config(data_root, "train.total_iter=2", "seed=1", "loss.gan=0.5"), run, resume="latest")
    trainer.close()
    log = (run / "train.log").read_text()
    assert "resume: settings changed versus the checkpoint's config" in log
    assert "seed 0 -> 1" in log and "loss.gan 0.8 -> 0.5" in log
    assert "train.total_iter" not in log.split("settings changed")[1]  # unchanged settings are not listed
