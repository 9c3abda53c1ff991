"""`mcc-fast evaluate` end to end on a tiny synthetic test set with a small random model."""
from __future__ import annotations

import json

import pytest
import torch

import mcc_fast
from mcc_fast.cli import main
from mcc_fast.model import ModelConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mcc_fast.training.synth import write_dataset

    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    write_dataset(data, videos=6, frames=4, size=64, seed=3, format="mp4", test_fraction=0.34)
    (data / "test" / "broken.mp4").write_bytes(b"not a video at all")
    torch.manual_seed(0)
    ckpt = mcc_fast.Model(ModelConfig.small(64, num_kp=5, width=16)).save_pretrained(root / "model.safetensors")
    return root, data, ckpt


def test_same_identity_end_to_end(setup, capsys):
    root, data, ckpt = setup
    out = root / "results.json"
    (root / "no-weights").mkdir(exist_ok=True)
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--metrics", "l1,psnr,lpips",
               "--weights-dir", str(root / "no-weights"), "--output", str(out), "--device", "cpu"])
    assert rc == 0
    results = json.loads(out.read_text())
    assert out.with_suffix(".csv").is_file()
    text = json.dumps(results)
    assert "broken" in text  # the unreadable video is reported, not fatal
    assert 0 < results["mean"]["l1"] < 1
    assert results["mean"]["psnr"] > 0
    err = capsys.readouterr().err
    assert "lpips" in err and "no-weights" in err  # skipped with the file it needs


def test_cross_identity_needs_pairs(setup, capsys):
    root, data, ckpt = setup
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--mode", "cross-id"])
    assert rc == 2
    assert "--pairs" in capsys.readouterr().err


def test_cross_identity_with_pairs(setup):
    root, data, ckpt = setup
    names = sorted(p.stem for p in (data / "test").glob("id*.mp4"))
    pairs = root / "pairs.csv"
    pairs.write_text("source,driving\n" + f"{names[0]},{names[-1]}\n")
    out = root / "cross.json"
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--mode", "cross-id",
               "--pairs", str(pairs), "--metrics", "l1,psnr", "--output", str(out), "--device", "cpu"])
    assert rc == 0
    assert json.loads(out.read_text())["mean"]["l1"] > 0


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    rc = main(["evaluate", "--checkpoint", str(tmp_path), "--data", str(tmp_path / "nope")])
    assert rc == 2
    assert "no test/ folder" in capsys.readouterr().err
