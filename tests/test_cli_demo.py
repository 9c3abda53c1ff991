"""`mcc-fast demo`: outputs, layout, refusal to overwrite, and a clear error without the model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import mcc_fast
from mcc_fast.cli import main
from mcc_fast.commands import demo
from mcc_fast.io.video import iter_video_frames
from mcc_fast.model import ModelConfig


@pytest.fixture()
def small_demo_model(tmp_path, monkeypatch):
    torch.manual_seed(0)
    path = mcc_fast.Model(ModelConfig.small(64, num_kp=5, width=16)).save_pretrained(tmp_path / "demo.safetensors")
    monkeypatch.setattr(demo, "DEMO_MODEL", path)
    return path


def test_demo_writes_video_side_by_side_and_contact_sheet(tmp_path, small_demo_model, capsys):
    out = tmp_path / "demo_out"
    assert main(["demo", "--output", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    assert "embedded demo model" in printed.err
    assert str(out / "out.mp4") in printed.out
    n_driving = len(list(iter_video_frames(demo.DEMO_DRIVING)))
    result = list(iter_video_frames(out / "out.mp4"))
    panels = list(iter_video_frames(out / "side_by_side.mp4"))
    assert len(result) == len(panels) == n_driving
    assert result[0].shape == (64, 64, 3) and panels[0].shape == (64, 192, 3)
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.shape[0] == 3 * 64 and sheet.shape[1] == 64 * len(range(0, n_driving, 4))
    # an existing output is not overwritten without --overwrite
    assert main(["demo", "--output", str(out), "--device", "cpu"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["demo", "--output", str(out), "--device", "cpu", "--overwrite"]) == 0


def test_demo_without_the_model_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEMO_MODEL", tmp_path / "missing.safetensors")
    assert main(["demo", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "missing.safetensors" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["file", "under_a_file", "empty"])
def test_demo_output_must_be_a_folder(tmp_path, small_demo_model, capsys, kind):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    output = {"file": str(afile), "under_a_file": str(afile / "sub"), "empty": ""}[kind]
    assert main(["demo", "--output", output, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and ("empty" if kind == "empty" else "existing file") in err and "Errno" not in err
    assert afile.read_text() == "mine"


@pytest.mark.parametrize("device,expected", [
    ("tpu", "--device must be 'cpu', 'cuda' or 'cuda:N'"),
    pytest.param("cuda:0", "use --device cpu", marks=pytest.mark.skipif(torch.cuda.is_available(),
                                                                        reason="checks the no-GPU error"))])
def test_demo_bad_device_is_one_line(tmp_path, small_demo_model, capsys, device, expected):
    assert main(["demo", "--output", str(tmp_path / "o"), "--device", device]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and not (tmp_path / "o").exists()


def test_demo_overwrite_that_fails_leaves_the_earlier_outputs_as_they_were(tmp_path, small_demo_model, capsys,
                                                                           monkeypatch):
    """--overwrite wrote out.mp4, side_by_side.mp4 and contact_sheet.png one after another: a failure at
    the last (a full disk) left new videos beside the old contact sheet."""
    import errno

    out = tmp_path / "demo_out"
    out.mkdir()
    before = {name: f"earlier {name}".encode() for name in ("out.mp4", "side_by_side.mp4", "contact_sheet.png")}
    for name, data in before.items():
        (out / name).write_bytes(data)

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    assert main(["demo", "--output", str(out), "--device", "cpu", "--overwrite"]) != 0
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # and no temporary file left
