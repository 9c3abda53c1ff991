"""The shipped demo model: it loads offline, fits the size budget, and actually animates
(it follows the driving motion on held-out synthetic people better than the unchanged source)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import mcc_fast
from mcc_fast.assets import DEMO_DRIVING, DEMO_MODEL, DEMO_SOURCE
from mcc_fast.io.video import iter_video_frames, read_image
from mcc_fast.model import ModelConfig
from mcc_fast.training import demo_model
from mcc_fast.training.synth import render_video, sample_identity, sample_motion

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "demo_model.json"


@pytest.fixture(scope="module")
def shipped():
    return mcc_fast.Model.from_pretrained(DEMO_MODEL, device="cpu", dtype=torch.float32)


def test_the_demo_model_ships_as_small_fp16_safetensors(shipped):
    assert DEMO_MODEL.stat().st_size <= 20 * 2**20
    with safe_open(str(DEMO_MODEL), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert "F16" in dtypes and not dtypes - {"F16", "I64"}  # fp16 weights (I64: BatchNorm step counters)
    assert shipped.config.image_size == demo_model.DEMO_DATA["size"] == 64
    source, driving = read_image(DEMO_SOURCE), list(iter_video_frames(DEMO_DRIVING))
    assert source.shape == driving[0].shape == (64, 64, 3) and len(driving) >= 16


def test_held_out_people_are_not_training_people():
    clips = demo_model.held_out_clips(2, 3, first=4)
    assert len(clips) == 2 and clips[0].shape == (3, 64, 64, 3) and clips[0].dtype == np.uint8
    seed = demo_model.DEMO_DATA["seed"]
    assert demo_model.HELD_OUT_SEED != seed
    trained = sample_identity(np.random.default_rng([seed, 0, 4]))
    motion = sample_motion(np.random.default_rng([seed, 1, 4, 0]), 3 / 25, demo_model.DEMO_DATA["head_motion"])
    assert not np.array_equal(render_video(trained, motion, 3, 64), clips[0])


def test_the_demo_model_follows_the_driving_motion(shipped):
    """Same-identity reconstruction of held-out clips (frame 0 = source, absolute motion)
    beats the "no motion" baseline (the unchanged source) clearly, in L1 and in PSNR. The
    clips are those of the README's figures (docs/demo_model.json)."""
    report = demo_model.compare_with_no_motion(shipped, demo_model.held_out_clips(6, 48))
    print(f"\ndemo model on 6 held-out clips: {report}")
    assert report["frames"] == 6 * 47
    assert report["l1"] < 0.9 * report["l1_no_motion"], report
    assert report["psnr"] > report["psnr_no_motion"] + 2.0, report
    published = json.loads(FIGURES.read_text())  # the README's table comes from this file
    for key in ("l1", "l1_no_motion"):
        assert report[key] == pytest.approx(published[key], abs=2e-4), key
    for key in ("psnr", "psnr_no_motion"):
        assert report[key] == pytest.approx(published[key], abs=0.05), key
    readme = (FIGURES.parents[1] / "README.md").read_text()
    table = [f"{published['l1']:.4f} | {published['psnr']:.2f}",
             f"{published['l1_no_motion']:.4f} | {published['psnr_no_motion']:.2f}"]
    assert all(row in readme for row in table), table


def test_compare_with_no_motion_rejects_bad_clips(shipped):
    with pytest.raises(ValueError, match="clips must hold"):
        demo_model.compare_with_no_motion(shipped, [])
    with pytest.raises(ValueError, match=r"clips must be uint8 \(F, H, W, 3\)"):
        demo_model.compare_with_no_motion(shipped, [np.zeros((1, 64, 64, 3), np.uint8)])  # no frame after the source
    with pytest.raises(ValueError, match="uint8"):
        demo_model.compare_with_no_motion(shipped, [np.zeros((4, 64, 64, 3), np.float32)])


def test_export_writes_every_shipped_file(tmp_path):
    torch.manual_seed(0)
    checkpoint = mcc_fast.Model(ModelConfig.small(64, num_kp=5, width=16)).save_pretrained(tmp_path / "m.safetensors")
    assets, docs = tmp_path / "assets", tmp_path / "docs"
    report = demo_model.export_demo(checkpoint, assets, docs, held_out=1, frames=4)
    assert set(report) >= {"l1", "psnr", "l1_no_motion", "psnr_no_motion"} and report["frames"] == 3
    assert json.loads((docs / "demo_model.json").read_text()) == json.loads(json.dumps(report))
    exported = mcc_fast.Model.from_pretrained(assets / "demo_model.safetensors", device="cpu")
    original = mcc_fast.Model.from_pretrained(checkpoint, device="cpu")
    for (name, a), b in zip(original.state_dict().items(), exported.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), name  # fp16 rounding only
    assert read_image(assets / "demo_source.png").shape == (64, 64, 3)
    assert len(list(iter_video_frames(assets / "demo_driving.mp4"))) == 4
    strip = read_image(docs / "demo_strip.png")
    assert strip.shape[0] == 2 * 2 * 64  # two rows (driving, result), drawn at 2x
    assert not list(tmp_path.rglob(".*"))  # no temporary files left
    assert demo_model.main([str(tmp_path / "missing")]) == 2
