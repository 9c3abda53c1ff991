"""Training under failures: a broken TensorBoard writer or train.log, a failed checkpoint write,
a damaged newest checkpoint, an --out folder that cannot hold checkpoints. Nothing saved is
lost, errors are one line naming the cause, and `--resume` continues."""
# ruff: noqa: F811  (the fixtures imported from test_trainer are test arguments)
from __future__ import annotations

import errno
import os

import pytest


from mcc_fast.training import monitor
from mcc_fast.training.trainer import train
from test_trainer import data_root, one_thread, tiny_config  # noqa: F401  (fixtures)


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failing_tensorboard_writer_turns_tensorboard_off_not_the_run(data_root, tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def broken(self, *args, **kwargs):
        raise _enospc()

    monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    monkeypatch.setattr(SummaryWriter, "close", broken)
    run = tmp_path / "run"
    result = train(tiny_config(data_root, "train.total_iter=2", "log.tensorboard=true", "log.print_every=1"), run)
    assert result.step == 2 and result.checkpoint == run / "checkpoints" / "step_00000002"
    log = (run / "train.log").read_text()
    assert log.count("TensorBoard logging off") == 1 and "No space left on device" in log
    assert "done at step 2" in log


def test_a_failing_train_log_goes_on_on_the_console(data_root, tmp_path, monkeypatch, capsys):
    class FailingLog:
        def __init__(self, path, *args, **kwargs):
            self.file, self.lines = open(path, *args, **kwargs), 0

        def write(self, text):
            self.lines += 1
            if self.lines > 2:
                raise _enospc()
            return self.file.write(text)

        def close(self):
            self.file.close()

    monkeypatch.setattr(monitor, "open", FailingLog, raising=False)
    run = tmp_path / "run"
    result = train(tiny_config(data_root, "train.total_iter=2", "log.print_every=1"), run)
    assert result.step == 2 and (result.checkpoint / "state.pt").is_file()
    err = capsys.readouterr().err
    assert err.count("cannot write") == 1 and str(run / "train.log") in err and "No space left" in err
    assert "done at step 2" in err  # the console keeps the log


def _cli(data_root, out, *settings: str) -> list[str]:
    """`mcc-fast train` argv of the quiet tiny config (see tiny_config) plus `settings`."""
    base = ["data.repeats=2", "data.batch_size=2", "data.num_workers=0", "log.progress=false",
            "log.tensorboard=false", "log.print_every=0", "log.val_every=0", "log.image_every=0",
            "loss.start_iters={gan: 1000000}", "optim.milestones=[1000]", *settings]
    argv = ["train", "--config", "smoke", "--data", str(data_root), "--out", str(out), "--random-vgg"]
    for setting in base:
        argv += ["--set", setting]
    return argv


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if "mcc-fast train: error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_failed_checkpoint_write_says_what_failed_and_what_is_kept(data_root, tmp_path, monkeypatch, capsys):
    from mcc_fast.cli import main
    from mcc_fast.training import checkpointing

    run = tmp_path / "run"
    real_write = checkpointing._write_file

    def full_disk(path, data):
        if path.parent.name.startswith(".tmp-step_00000004"):
            raise _enospc()
        real_write(path, data)

    monkeypatch.setattr(checkpointing, "_write_file", full_disk)
    settings = ("train.total_iter=4", "checkpoint.every=2")
    assert main(_cli(data_root, run, *settings)) == 2
    line = _one_error_line(capsys)
    good = run / "checkpoints" / "step_00000002"
    assert "could not write the checkpoint of step 4" in line and "No space left on device" in line
    assert f"the earlier checkpoints are intact (the newest: {good})" in line and "--resume" in line
    assert sorted(os.listdir(run / "checkpoints")) == ["step_00000002"]
    monkeypatch.undo()
    assert main(_cli(data_root, run, *settings) + ["--resume"]) == 0
    assert sorted(os.listdir(run / "checkpoints")) == ["step_00000002", "step_00000004"]


def test_a_failed_pruning_is_noted(data_root, tmp_path, monkeypatch):
    from mcc_fast.training import checkpointing

    monkeypatch.setattr(checkpointing.shutil, "rmtree", lambda *args, **kwargs: None)  # e.g. EACCES, ignored
    run = tmp_path / "run"
    train(tiny_config(data_root, "train.total_iter=2", "checkpoint.every=1", "checkpoint.keep_last=1"), run)
    assert sorted(os.listdir(run / "checkpoints")) == ["step_00000001", "step_00000002"]
    log = (run / "train.log").read_text()
    assert "could not delete the older checkpoint(s) step_00000001" in log and "checkpoint.keep_last 1" in log


@pytest.mark.parametrize("damage", ["truncate generator.safetensors", "delete state.pt"])
def test_resume_of_a_damaged_newest_checkpoint_names_the_previous_good_one(data_root, tmp_path, capsys, damage):
    from mcc_fast.cli import main

    run = tmp_path / "run"
    settings = ("train.total_iter=4", "checkpoint.every=2")
    assert main(_cli(data_root, run, *settings)) == 0
    how, name = damage.split()
    bad = run / "checkpoints" / "step_00000004" / name
    if how == "truncate":
        bad.write_bytes(bad.read_bytes()[:100])
    else:
        bad.unlink()
    capsys.readouterr()
    assert main(_cli(data_root, run, *settings) + ["--resume"]) == 2
    line = _one_error_line(capsys)
    good = run / "checkpoints" / "step_00000002"
    assert str(bad) in line and f"continue from the previous intact one with --resume {good}" in line, line
    assert sorted(os.listdir(run / "checkpoints")) == ["step_00000002", "step_00000004"]  # nothing moved or lost
    assert main(_cli(data_root, run, *settings) + ["--resume", str(good)]) == 0
    aside = [p for p in (run / "checkpoints").iterdir() if p.name.startswith("abandoned-")]
    assert len(aside) == 1 and (aside[0] / "step_00000004").is_dir()  # the damaged one, kept aside


def _free_bytes(monkeypatch, free: int) -> None:
    from collections import namedtuple

    import shutil

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * free + 1, 9 * free + 1, free))


def test_an_out_folder_without_room_for_a_checkpoint_is_refused_before_training(data_root, tmp_path, monkeypatch,
                                                                              capsys):
    from mcc_fast.cli import main

    _free_bytes(monkeypatch, 1000)
    run = tmp_path / "run"
    assert main(_cli(data_root, run, "train.total_iter=2")) == 2
    line = _one_error_line(capsys)
    assert f"--out {run}" in line and "1000 bytes free" in line and "a checkpoint takes about" in line, line
    assert "step 1/" not in (run / "train.log").read_text()  # refused before the first step
    assert not [p for p in (run / "checkpoints").iterdir()]  # the probe left nothing


def test_an_out_folder_with_room_for_fewer_checkpoints_than_kept_is_noted(data_root, tmp_path, monkeypatch):
    from mcc_fast.training.trainer import Trainer

    trainer = Trainer(tiny_config(data_root, "train.total_iter=1", "checkpoint.keep_last=3"), tmp_path / "run")
    try:
        size = trainer.checkpoint_bytes()
        _free_bytes(monkeypatch, int(2.5 * size))
        trainer.train()
    finally:
        trainer.close()
    assert "room for about 2 checkpoint(s)" in (tmp_path / "run" / "train.log").read_text()


def test_an_unwritable_checkpoints_folder_is_found_before_training(data_root, tmp_path, monkeypatch, capsys):
    from mcc_fast.cli import main
    from mcc_fast.training import checkpointing

    def read_only(path, data):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(checkpointing, "_write_file", read_only)  # e.g. a read-only checkpoints/ folder
    run = tmp_path / "run"
    assert main(_cli(data_root, run, "train.total_iter=2")) == 2
    line = _one_error_line(capsys)
    assert f"--out {run}: cannot write checkpoints to {run / 'checkpoints'}" in line and "Permission denied" in line
    assert "step 1/" not in (run / "train.log").read_text()
    assert not [p for p in (run / "checkpoints").iterdir()]


def test_a_stop_request_is_acknowledged_at_once(data_root, tmp_path, monkeypatch, capfd):
    import signal

    from mcc_fast.training.trainer import Trainer

    real_step = Trainer.train_step

    def step_then_sigterm(self, batches):
        losses = real_step(self, batches)
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. the cluster's scheduler, during the step
        return losses

    monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)
    result = train(tiny_config(data_root, "train.total_iter=3"), tmp_path / "run")
    assert result.interrupted and result.step == 1 and result.checkpoint.name == "step_00000001"
    err = capfd.readouterr().err
    assert err.count("stop requested (SIGTERM)") == 1 and "then a checkpoint" in err and "Ctrl-C again" in err


def test_spawned_data_workers_leave_a_ctrl_c_to_the_main_process():
    """Ctrl-C reaches the data workers too; a spawned (or forkserver, Python 3.14's default) worker
    does not inherit the main's stop handler and died of it, failing the step the stop finishes."""
    from torch.utils.data import DataLoader

    from mcc_fast.training.trainer import _worker_init
    from training_workers import SigintDisposition  # spawned workers cannot import test files

    loader = DataLoader(SigintDisposition(), batch_size=None, num_workers=1, worker_init_fn=_worker_init,
                        multiprocessing_context="spawn")
    assert list(loader) == [True, True]


def test_a_sigterm_to_every_process_stops_with_a_checkpoint(data_root, tmp_path):
    """SLURM's scancel (and a kill of the process group) sends SIGTERM to every process, the data
    workers too: they died of it, and the main process, finishing its step to checkpoint, failed
    with "DataLoader worker (pid N) is killed by signal: Terminated" and wrote no checkpoint."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    run = tmp_path / "run"
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    code = f"import training_workers; training_workers.train_until_stopped({str(data_root)!r}, {str(run)!r})"
    process = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "train.log").is_file() or "step 3/" not in (run / "train.log").read_text():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0][-2000:]
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    log = (run / "train.log").read_text()
    assert process.returncode == 0 and "stopped at step" in log, output[-2000:]
    assert list((run / "checkpoints").glob("step_*")), log[-2000:]


def test_closing_the_stream_ends_a_worker_that_outlives_its_sigterm(tmp_path):
    """The loader's shutdown sends a worker that does not stop SIGTERM once, then leaves it; a data
    worker ignores its first SIGTERM (above), so one busy in a long C call outlived the run."""
    from torch.utils.data import DataLoader

    from mcc_fast.training.sampler import MicroBatchStream
    from training_workers import DeafToSigterm

    import time

    started = tmp_path / "started"
    loader = DataLoader(DeafToSigterm(str(started)), batch_size=None, num_workers=1, persistent_workers=True)
    iter(loader)  # the worker starts on its item
    workers = list(loader._iterator._workers)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline and all(w.is_alive() for w in workers)
        time.sleep(0.05)
    MicroBatchStream(loader, sampler=None).close()
    assert not any(w.is_alive() for w in workers)


def test_stop_handler_exit_after_a_handler_installed_from_c(monkeypatch):
    """signal.signal returns None for a handler installed from C (Python embedded in a program):
    putting that back was a TypeError when training ended."""
    import signal

    from mcc_fast.training.trainer import _StopRequest

    real, calls = signal.signal, []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def from_c(sig, handler):
        calls.append((sig, handler))
        real(sig, handler)
        return None  # what signal.signal reports for a handler it did not install

    monkeypatch.setattr(signal, "signal", from_c)
    with _StopRequest(announce=False):
        pass
    monkeypatch.undo()
    assert calls[-2:] == [(signal.SIGINT, signal.SIG_DFL), (signal.SIGTERM, signal.SIG_DFL)]
    for sig, handler in before.items():
        signal.signal(sig, handler)
