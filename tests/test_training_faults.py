"""Training under failures: a broken TensorBoard writer or train.log, a failed checkpoint write,
a damaged newest checkpoint, an --out folder that cannot hold checkpoints. Nothing saved is
lost, errors are one line naming the cause, and `--resume` continues."""
# ruff: noqa: F811  (the fixtures imported from test_trainer are test arguments)
from __future__ import annotations

import errno
import os


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
