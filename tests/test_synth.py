"""The procedural talking-head generator (``mcc_fast.training.synth``) and its CLI."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from mcc_fast.training import synth
from mcc_fast.training.data import FramePairDataset, VideoSequenceDataset, read_video_frames
from mcc_fast.training.synth_cli import add_synth_arguments, main, run_synth


def _person(k: int, seed: int = 0, seconds: float = 2.56) -> tuple[dict, dict]:
    return (synth.sample_identity(np.random.default_rng([seed, 0, k])),
            synth.sample_motion(np.random.default_rng([seed, 1, k]), seconds))


def _still(**angles) -> dict:
    """A motion holding constant values (sinusoids of frequency 0), no blinks."""
    motion = synth.sample_motion(np.random.default_rng(0), 1.0)
    for key in motion:
        if isinstance(motion[key], dict):
            motion[key] = {"amp": [0.0], "freq": [0.0], "phase": [0.0]} | (
                {"bias": -5.0} if key == "talk" else {})
    for key, value in angles.items():
        motion[key] = {"amp": [value], "freq": [0.0], "phase": [math.pi / 2]}
    motion["blinks"] = []
    return motion


def test_render_shapes_dtype_and_smoothness():
    identity, motion = _person(0)
    video = synth.render_video(identity, motion, frames=6, size=64)
    assert video.dtype == np.uint8 and video.shape == (6, 64, 64, 3)
    assert video.min() < 80 and video.max() > 150  # a real picture, not a flat field
    # anti-aliased smooth shapes, not pixel noise: small mean neighbour difference ...
    step = np.abs(np.diff(video.astype(np.int16), axis=2)).mean()
    assert step < 8, step
    # ... and soft edges: many distinct values (blends), not a few flat colours
    assert len(np.unique(video[0].reshape(-1, 3), axis=0)) > 300


def test_render_is_deterministic():
    identity, motion = _person(3)
    assert _person(3) == (identity, motion)  # seeded parameters
    a = synth.render_video(identity, motion, frames=5, size=48)
    b = synth.render_video(identity, motion, frames=5, size=48)
    assert np.array_equal(a, b)
    other = synth.render_video(*_person(4), frames=5, size=48)
    assert not np.array_equal(a, other)


def test_motion_is_real():
    identity, motion = _person(1)
    video = synth.render_video(identity, motion, frames=64, size=48).astype(np.int16)
    diffs = np.abs(np.diff(video, axis=0)).mean((1, 2, 3))
    assert (diffs > 0).all()  # every frame differs from the previous one
    assert diffs.max() < 20  # ... smoothly
    params = synth.frame_parameters(identity, motion, frames=64, size=48)
    assert len(params) == 64 and params[0]["frame"] == 0
    series = {k: np.array([p[k] for p in params]) for k in ("yaw", "pitch", "roll", "mouth_open", "eye_open", "tx")}
    assert np.ptp(series["yaw"]) > 3 and np.ptp(series["pitch"]) > 1 and np.ptp(series["tx"]) > 0
    assert np.abs(series["yaw"]).max() < 50 and np.abs(series["pitch"]).max() < 25
    assert series["eye_open"].min() < 0.2 and series["eye_open"].max() == 1.0  # a blink
    assert np.ptp(series["mouth_open"]) > 0.05  # talking
    assert np.abs(np.diff(series["yaw"])).max() < 5  # smooth over time


def test_parallax_of_face_features():
    identity, _ = _person(2)
    size = 96
    frames = {}
    for yaw in (-25.0, 0.0, 25.0):
        motion = _still(yaw=yaw)
        params = synth.frame_parameters(identity, motion, frames=1, size=size)[0]
        assert params["yaw"] == pytest.approx(yaw)
        frames[yaw] = (params["landmarks"], synth.render_video(identity, motion, frames=1, size=size)[0])
    # turning the head moves the nose tip much further than the head's centre
    shift = lambda name: frames[25.0][0][name][0] - frames[-25.0][0][name][0]  # noqa: E731
    assert shift("nose_tip") > 3 + abs(shift("head_centre"))
    assert shift("eye_left") > 2 and shift("mouth") > 2  # features slide towards the image right
    assert not np.array_equal(frames[25.0][1], frames[0.0][1])
    # mirror-ish: the 2D feature layout at -yaw mirrors the one at +yaw around the centre
    c = frames[0.0][0]["head_centre"][0]
    assert frames[25.0][0]["nose_tip"][0] - c == pytest.approx(c - frames[-25.0][0]["nose_tip"][0], abs=0.5)


def test_parameters_validation():
    identity, motion = _person(0)
    with pytest.raises(ValueError, match="size"):
        synth.render_video(identity, motion, frames=2, size=8)
    with pytest.raises(ValueError, match="frames"):
        synth.render_video(identity, motion, frames=0, size=32)
    with pytest.raises(ValueError, match="duration"):
        synth.sample_motion(np.random.default_rng(0), 0.0)


def test_head_motion_scales_the_pose_and_nothing_else():
    rng = lambda: np.random.default_rng([5, 1, 2])  # noqa: E731
    calm, wide, still = (synth.sample_motion(rng(), 2.0, head_motion=h) for h in (1.0, 2.5, 0.0))
    assert synth.sample_motion(rng(), 2.0) == calm  # 1 is the default
    pose = ("yaw", "pitch", "nod", "roll", "tx", "ty", "zoom")
    for key in calm:
        if key in pose:
            assert np.allclose(wide[key]["amp"], np.asarray(calm[key]["amp"]) * 2.5, atol=1e-5)
            assert wide[key]["freq"] == calm[key]["freq"] and wide[key]["phase"] == calm[key]["phase"]
            assert not any(still[key]["amp"])
        else:  # talking, blinks, gaze and brows are the same draws
            assert wide[key] == calm[key] == still[key]
    identity = synth.sample_identity(np.random.default_rng([5, 0, 2]))
    moved = [np.abs(v[1:].astype(np.int16) - v[:1]).mean() for v in
             (synth.render_video(identity, m, frames=12, size=32) for m in (still, calm, wide))]
    assert moved[0] < moved[1] < moved[2], moved  # a still head moves least, a wide one most
    for bad in (-0.5, float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="head_motion"):
            synth.sample_motion(rng(), 2.0, head_motion=bad)
    with pytest.raises(ValueError, match="head_motion"):
        synth.write_dataset("unused", videos=1, frames=2, size=32, head_motion=-1)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_dataset_png_layout_and_determinism(tmp_path):
    kw = dict(videos=5, frames=6, size=32, seed=3, format="png", test_fraction=0.4, videos_per_identity=2)
    summary = synth.write_dataset(tmp_path / "a", **kw)
    synth.write_dataset(tmp_path / "b", **kw)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")  # byte-identical
    assert summary["num_train"] == 3 and summary["num_test"] == 2
    root = tmp_path / "a"
    train = sorted(p.name for p in (root / "train").iterdir())
    test = sorted(p.name for p in (root / "test").iterdir())
    assert train == ["id00000#000", "id00000#001", "id00001#000"] and test == ["id00002#000", "id00002#001"]
    assert len(list((root / "train" / train[0]).glob("*.png"))) == 6
    assert not list(root.rglob(".*"))  # no temporary files left
    listing = json.loads((root / "synth.json").read_text())["list"]
    train_ids = {e["identity_id"] for e in listing if e["split"] == "train"}
    test_ids = {e["identity_id"] for e in listing if e["split"] == "test"}
    assert train_ids and test_ids and not train_ids & test_ids  # unseen identities in test
    meta = json.loads((root / "meta" / "test" / "id00002#001.json").read_text())
    assert meta["video"] == "test/id00002#001" and len(meta["frames"]) == 6
    assert {"yaw", "pitch", "roll", "eye_open", "mouth_open", "landmarks"} <= set(meta["frames"][0])
    frames = read_video_frames(root / "train" / train[1])
    again = synth.render_video(*_person(0, seed=3, seconds=6 / 25)[:1],
                               synth.sample_motion(np.random.default_rng([3, 1, 0, 1]), 6 / 25), 6, 32)
    assert np.array_equal(frames, again)  # the files hold exactly the documented render
    ds = FramePairDataset(root, size=32, repeats=2, id_sampling=True)
    assert len(ds) == 4 and ds[0]["source"].shape == (3, 32, 32)
    with pytest.raises(FileExistsError, match="overwrite"):
        synth.write_dataset(root, **kw)
    synth.write_dataset(root, **(kw | {"videos": 2, "test_fraction": 0.0}), overwrite=True)
    assert sorted(p.name for p in (root / "train").iterdir()) == ["id00000#000", "id00000#001"]


def test_write_dataset_mp4_and_workers(tmp_path):
    kw = dict(videos=3, frames=5, size=32, seed=1, test_fraction=0.34)
    synth.write_dataset(tmp_path / "one", **kw)
    synth.write_dataset(tmp_path / "two", workers=2, **kw)
    assert _tree(tmp_path / "one") == _tree(tmp_path / "two")  # independent of the process count
    ds = VideoSequenceDataset(tmp_path / "one", size=32)
    item = ds[0]
    assert item["ok"] and item["video"].shape == (5, 3, 32, 32) and item["name"].endswith(".mp4")
    with pytest.raises(ValueError, match="format"):
        synth.write_dataset(tmp_path / "x", format="gif")
    with pytest.raises(ValueError, match="size must be even"):
        synth.write_dataset(tmp_path / "x", size=33)
    with pytest.raises(ValueError, match="test_fraction"):
        synth.write_dataset(tmp_path / "x", test_fraction=1.0)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--videos", "2", "--frames", "3", "--size", "32", "--seed", "4",
                 "--format", "png", "--quiet"]) == 0
    assert json.loads((out / "synth.json").read_text())["seed"] == 4
    assert main(["--out", str(out), "--videos", "2", "--frames", "3", "--size", "32"]) == 2  # exists
    assert "overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--videos", "0"])
    assert "--videos" in capsys.readouterr().err
    for bad in ("-1", "inf", "fast"):
        with pytest.raises(SystemExit):
            main(["--out", str(out), "--head-motion", bad])
        assert "--head-motion" in capsys.readouterr().err
    wide = tmp_path / "wide"
    assert main(["--out", str(wide), "--videos", "1", "--frames", "2", "--size", "32", "--format", "png",
                 "--head-motion", "2.5", "--test-fraction", "0", "--quiet"]) == 0
    assert json.loads((wide / "synth.json").read_text())["head_motion"] == 2.5
    meta = json.loads((wide / "meta" / "train" / "id00000#000.json").read_text())
    assert meta["motion"] == synth.sample_motion(np.random.default_rng([0, 1, 0, 0]), 2 / 25, head_motion=2.5)
    import argparse

    parser = add_synth_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--out", str(out), "--videos", "1", "--frames", "2", "--size", "32", "--overwrite"])
    assert run_synth(args) == 0 and "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("fps", ["1e-300", "1e308", "inf", "nan", "0", "0.5", "241", "fast"])
def test_cli_fps_is_checked_before_anything_is_written(tmp_path, capsys, fps):
    out = tmp_path / "s"
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(out), "--videos", "2", "--frames", "2", "--size", "16", "--workers", "1", "--fps", fps])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--fps" in err and "[1, 240]" in err and "Traceback" not in err
    assert not out.exists()


def test_fps_and_duration_limits_in_the_library(tmp_path):
    for bad in (1e-300, 0.5, 241.0, 1e308, float("inf"), float("nan"), "25", True):
        with pytest.raises(ValueError, match="fps"):
            synth.write_dataset(tmp_path / "x", videos=1, frames=2, size=16, fps=bad)
    with pytest.raises(ValueError, match="frames / fps"):
        synth.write_dataset(tmp_path / "x", videos=1, frames=10 ** 6, size=16, fps=1.0)
    for bad in (0.0, -1.0, float("inf"), float("nan"), 1e300):
        with pytest.raises(ValueError, match="duration"):
            synth.sample_motion(np.random.default_rng(0), bad)
    assert not (tmp_path / "x").exists()
    synth.write_dataset(tmp_path / "x", videos=1, frames=2, size=16, fps=240, format="png", test_fraction=0)
    assert json.loads((tmp_path / "x" / "synth.json").read_text())["fps"] == 240


def _fail_on_second_video(monkeypatch):
    make = synth._make_video

    def flaky(job):
        if job[1:4] == ("train", 0, 1):  # the second of the plan, after one was written
            raise RuntimeError("disk full")
        return make(job)

    monkeypatch.setattr(synth, "_make_video", flaky)


def test_failed_run_leaves_no_half_made_dataset(tmp_path, monkeypatch):
    kw = dict(videos=3, frames=2, size=16, format="png", workers=1)
    _fail_on_second_video(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        synth.write_dataset(tmp_path / "new" / "s", **kw)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its new parent, nor a staging folder
    mine = tmp_path / "mine"  # a folder the user had, with their own file in it
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(RuntimeError, match="disk full"):
        synth.write_dataset(mine, **kw)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    monkeypatch.undo()
    synth.write_dataset(mine, **kw)
    before = _tree(mine)
    _fail_on_second_video(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        synth.write_dataset(mine, **(kw | {"seed": 9}), overwrite=True)
    assert _tree(mine) == before and not list(mine.glob(".*"))  # the old dataset is intact
    monkeypatch.undo()
    synth.write_dataset(mine, **(kw | {"seed": 9}), overwrite=True)
    assert _tree(mine) != before and (mine / "notes.txt").read_text() == "keep me"
    assert not list(mine.glob(".*"))


def test_cli_out_must_be_a_folder(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (str(afile), str(afile / "sub"), ""):
        assert main(["--out", out, "--videos", "1", "--frames", "2", "--size", "16"]) == 2
        err = capsys.readouterr().err
        assert "--out" in err and "folder" in err
    assert afile.read_text() == "x"


def test_report_speed():
    """Reports (does not assert) the render speed and extrapolates the issue's
    benchmark, 200 videos x 64 frames at 128x128 (the full run adds mp4 encoding)."""
    identity, motion = _person(5)
    synth.render_video(identity, motion, frames=4, size=128)  # warm-up
    start = time.perf_counter()
    n = 2
    for k in range(n):
        synth.render_video(*_person(k), frames=64, size=128)
    per_video = (time.perf_counter() - start) / n
    print(f"\nsynth render: {per_video * 1e3:.0f} ms per 64-frame 128x128 video, "
          f"{64 / per_video:.0f} frames/s; 200 videos ~ {200 * per_video:.1f} s (rendering only)")


def test_a_new_dataset_folder_has_the_usual_permissions(tmp_path):
    """The dataset is built in a private temporary folder (mkdtemp: 0700); the folder `out`
    it becomes must get mkdir's mode (0777 less the umask), readable by the group as usual."""
    reference = tmp_path / "reference"
    reference.mkdir()
    out = tmp_path / "new"
    synth.write_dataset(out, videos=1, frames=2, size=16, format="png", workers=1)
    assert out.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_long_videos_render_in_bounded_chunks(monkeypatch):
    """render_video draws a bounded number of frames per _render call (its float32 work
    tensors take ~30 bytes per pixel: a 1000-frame 256x256 video drawn at once needed ~6 GB
    per worker and `synth` died with 'process pool terminated abruptly'), and the chunked
    frames are the frames of a render of the whole clip at once."""
    identity, motion = _person(2)
    whole = synth.render_video(identity, motion, frames=7, size=16)  # one chunk (7 x 16 x 16 px)
    calls = []
    render = synth._render

    def recording(identity, m, size):
        calls.append(len(m["yaw"]))
        return render(identity, m, size)

    monkeypatch.setattr(synth, "_render", recording)
    monkeypatch.setattr(synth, "RENDER_CHUNK_PIXELS", 3 * 16 * 16, raising=False)
    chunked = synth.render_video(identity, motion, frames=7, size=16)
    assert calls == [3, 3, 1]
    assert np.array_equal(chunked, whole)


def test_cli_odd_size_for_mp4_names_the_options(tmp_path, capsys):
    out = tmp_path / "odd"
    assert main(["--out", str(out), "--videos", "1", "--frames", "2", "--size", "17"]) == 2
    assert "--size must be even with --format mp4" in capsys.readouterr().err and not out.exists()
    assert main(["--out", str(out), "--videos", "1", "--frames", "2", "--size", "17", "--format", "png",
                 "--workers", "1", "--quiet"]) == 0  # png frames may be odd


def test_overwrite_never_replaces_a_dataset_synth_did_not_write(tmp_path, capsys):
    real = tmp_path / "vox"  # the user's own FOMM dataset: no synth.json
    (real / "train" / "clip0").mkdir(parents=True)
    (real / "train" / "clip0" / "00000.png").write_bytes(b"my frame")
    (real / "test").mkdir()
    before = _tree(real)
    args = ["--out", str(real), "--videos", "2", "--frames", "2", "--size", "16", "--format", "png", "--quiet"]
    assert main([*args, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not a synthetic dataset" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _tree(real) == before and not list(real.glob(".*"))
    (real / "synth.json").write_text('{"not": "ours"}')  # a synth.json of something else
    assert main([*args, "--overwrite"]) == 2 and (real / "train" / "clip0" / "00000.png").read_bytes() == b"my frame"
    (real / "synth.json").unlink()
    ours = tmp_path / "ours"
    assert main([*args[:1], str(ours), *args[2:]]) == 0
    assert main([*args[:1], str(ours), *args[2:], "--seed", "5", "--overwrite"]) == 0  # its own: replaced
    assert json.loads((ours / "synth.json").read_text())["seed"] == 5
