"""`mcc-fast evaluate` end to end on a tiny synthetic test set with a small random model."""
from __future__ import annotations

import json
from pathlib import Path

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


# ---------------------------------------------------------------------------- bad input, kept files

def _evaluate(setup, *extra):
    _, data, ckpt = setup
    return main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--metrics", "l1,psnr",
                 "--device", "cpu", "--max-frames", "2", *extra])


@pytest.fixture
def no_model(monkeypatch):
    """Checks that must fail before anything is loaded or evaluated."""
    from mcc_fast.commands import evaluate

    def refuse(args):
        raise AssertionError("the model was loaded: the check did not run first")

    monkeypatch.setattr(evaluate, "_load_model", refuse)


def _first_test_video(data):
    return min((data / "test").glob("id*.mp4"))


@pytest.mark.parametrize("name", ["video", "r.csv", "r", "r.json.bak"])
def test_output_must_be_a_json_file_name(setup, capsys, no_model, name):
    root, data, _ = setup
    video = _first_test_video(data)
    output = video if name == "video" else root / name
    before = video.read_bytes()
    assert _evaluate(setup, "--output", str(output)) == 2
    err = capsys.readouterr().err
    assert "--output" in err and ".json" in err and "Traceback" not in err
    assert video.read_bytes() == before and not video.with_suffix(".csv").exists()
    assert not (root / "r.csv").exists()


def test_existing_json_or_csv_is_kept_unless_overwrite(setup, capsys, tmp_path):
    mine_csv = tmp_path / "mine.csv"
    mine_csv.write_text("my own table\n")
    assert _evaluate(setup, "--output", str(tmp_path / "mine.json")) == 2
    err = capsys.readouterr().err
    assert "mine.csv" in err and "--overwrite" in err
    assert mine_csv.read_text() == "my own table\n" and not (tmp_path / "mine.json").exists()
    old = tmp_path / "results.json"
    old.write_text("{}")
    assert _evaluate(setup, "--output", str(old)) == 2
    assert old.read_text() == "{}"
    assert _evaluate(setup, "--output", str(old), "--overwrite") == 0
    assert json.loads(old.read_text())["mean"]["l1"] > 0 and (tmp_path / "results.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.csv", "results.csv", "results.json"]  # no temp files


def test_outputs_that_are_inputs_are_refused_even_with_overwrite(setup, capsys, no_model, tmp_path):
    data = setup[1]
    pairs = tmp_path / "p.csv"
    pairs.write_text(f"source,driving\n{_first_test_video(data).stem},{_first_test_video(data).stem}\n")
    assert _evaluate(setup, "--mode", "cross-id", "--pairs", str(pairs), "--output", str(tmp_path / "p.json"),
                     "--overwrite") == 2
    assert "one of the inputs" in capsys.readouterr().err
    assert pairs.read_text().startswith("source,driving")
    meta = next((data / "meta").rglob("*.json"))
    before = meta.read_bytes()
    assert _evaluate(setup, "--output", str(meta), "--overwrite") == 2
    assert "one of the inputs" in capsys.readouterr().err and meta.read_bytes() == before


def test_failed_videos_keep_their_reason_in_the_json_and_csv(setup, tmp_path):
    """The results say why a video failed (what the note on the console said), not only that it did."""
    import csv

    out = tmp_path / "r.json"
    assert _evaluate(setup, "--output", str(out)) == 0
    failed = json.loads(out.read_text())["failed"]
    assert [f["name"] for f in failed] == ["broken.mp4"]
    assert "broken.mp4" in failed[0]["error"] and "not a readable video" in failed[0]["error"]
    rows = {row["name"]: row for row in csv.DictReader(out.with_suffix(".csv").open())}
    assert "not a readable video" in rows["broken.mp4"]["status"]


def test_output_folder_is_refused_up_front(setup, capsys, no_model, tmp_path):
    (tmp_path / "out.json").mkdir()
    assert _evaluate(setup, "--output", str(tmp_path / "out.json")) == 2
    assert "is a folder" in capsys.readouterr().err


def _unwritable_folder(tmp_path, kind):
    """A folder this process cannot create files in (skipped where there is none)."""
    import os
    import tempfile

    if kind == "read-only":
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
    else:
        folder = Path("/proc")  # no process, root included, creates files there
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return folder
    if kind == "read-only":
        folder.chmod(0o700)
    pytest.skip(f"{folder} is writable here (uid {os.getuid()})")


@pytest.mark.parametrize("kind", ["read-only", "proc"])
@pytest.mark.parametrize("sub", ["", "new/"])
def test_unwritable_output_folder_is_refused_up_front(setup, capsys, no_model, tmp_path, kind, sub):
    folder = _unwritable_folder(tmp_path, kind)
    try:
        assert _evaluate(setup, "--output", f"{folder}/{sub}r.json") == 2
    finally:
        if kind == "read-only":
            folder.chmod(0o700)
    err = capsys.readouterr().err
    assert "--output" in err and "cannot write in" in err and str(folder) in err and "Traceback" not in err


# ---------------------------------------------------------------------------- cross-identity

def _small_clip(folder):
    import numpy as np
    from PIL import Image

    from mcc_fast.io.video import VideoWriter

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / "src.png")
    with VideoWriter(folder / "v5.mp4", 10) as writer:
        for _ in range(5):
            writer.write(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    return folder / "src.png", folder / "v5.mp4"


class _MeanColour(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cross_identity_with_file_paths_and_identity_metrics(setup, capsys, tmp_path):
    source, driving = _small_clip(tmp_path)
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.jit.script(_MeanColour()).save(str(weights / "identity.torchscript.pt"))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"source,driving\n{source},{driving}\n")
    out = tmp_path / "cross.json"
    rc = _evaluate(setup, "--mode", "cross-id", "--pairs", str(pairs), "--metrics", "l1,aed,csim",
                   "--weights-dir", str(weights), "--output", str(out))
    err = capsys.readouterr().err
    assert rc == 0, err
    results = json.loads(out.read_text())
    assert results["failed"] == [] and results["videos"][0]["num_frames"] == 2  # --max-frames 2
    assert results["mean"]["l1"] > 0 and results["mean"]["aed"] >= 0 and -1 <= results["mean"]["csim"] <= 1
    assert "note: " in err and "resized from 48x48" in err and ".py:" not in err  # a note, not a raw warning
    assert "cross-id: l1 compare the output with the driving frames of another person" in err
    assert results["settings"]["mode"] == "cross-id"


def test_nothing_evaluated_exits_1_and_writes_nothing(setup, capsys, tmp_path):
    ckpt = setup[2]
    bad = tmp_path / "bad"
    (bad / "test").mkdir(parents=True)
    (bad / "test" / "x.mp4").write_text("just text")
    out = tmp_path / "r.json"
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--data", str(bad), "--metrics", "l1", "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "nothing could be evaluated" in err and not out.exists()
    assert "note: skipping unreadable video" in err and "Warning" not in err and ".py:" not in err
    fake = tmp_path / "fake.mp4"
    fake.write_text("just text")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"source,driving\n{_small_clip(tmp_path)[0]},{fake}\n")
    assert _evaluate(setup, "--mode", "cross-id", "--pairs", str(pairs), "--output", str(out)) == 1
    assert "nothing could be evaluated" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("content, expected", [
    ("source,driving\nsrc.png\n", "line 2: expected two values"),
    ("source,driving\n", "no pairs"),
    ("src,drv\na,b\n", "header line source,driving"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00binary", "not a text CSV"),
    ("source,driving\nsrc.png,nowhere.mp4\n", "line 2: 'nowhere.mp4' is neither"),
])
def test_bad_pairs_files_are_one_line_errors(setup, capsys, no_model, tmp_path, monkeypatch, content, expected):
    monkeypatch.chdir(tmp_path)
    _small_clip(tmp_path)
    pairs = tmp_path / "pairs.csv"
    pairs.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert _evaluate(setup, "--mode", "cross-id", "--pairs", str(pairs), "--output", str(tmp_path / "r.json")) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and str(pairs) in err and len(err.splitlines()) == 1


def test_option_errors_name_the_option(setup, capsys, no_model, tmp_path):
    assert _evaluate(setup, "--mode", "cross-id", "--pairs", str(tmp_path / "nope.csv")) == 2
    assert "--pairs" in (err := capsys.readouterr().err) and "does not exist" in err
    assert _evaluate(setup, "--pairs", str(tmp_path / "nope.csv")) == 2
    assert "--mode cross-id" in capsys.readouterr().err
    assert _evaluate(setup, "--weights-dir", str(tmp_path / "nope")) == 2
    assert "--weights-dir" in capsys.readouterr().err
    assert _evaluate(setup, "--metrics", "l1,ssim") == 2
    assert "--metrics" in capsys.readouterr().err
    for option in ("--batch", "--max-frames"):
        with pytest.raises(SystemExit) as exit_info:
            _evaluate(setup, option, "0")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {option}: expected an integer >= 1" in err and "batch_size" not in err


def test_generated_frames_are_held_as_uint8():
    """A video's generated frames were stacked as float32: 4x the memory of what the metrics read."""
    from types import SimpleNamespace

    from mcc_fast.commands import evaluate
    from mcc_fast.evaluation import as_uint8_frames

    frames = [torch.rand(3, 8, 8) * 2 - 1 for _ in range(5)]

    class Animator(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def animate(self, source, driving, **kwargs):
            return iter(frames)

    args = SimpleNamespace(motion="relative", adapt_scale=True, batch=2)
    out = evaluate._generated(Animator(), torch.zeros(1, 3, 8, 8), torch.zeros(5, 3, 8, 8), args)
    assert out.dtype == torch.uint8 and torch.equal(out, as_uint8_frames(torch.stack(frames)))


def test_no_computable_metric_exits_1_before_generating_anything(setup, capsys, monkeypatch, tmp_path):
    from mcc_fast.commands import evaluate

    generated = []
    original = evaluate._generated
    monkeypatch.setattr(evaluate, "_generated", lambda *a: generated.append(1) or original(*a))
    out = tmp_path / "r.json"
    assert _evaluate(setup, "--metrics", "lpips", "--output", str(out)) == 1  # no --weights-dir: lpips skipped
    err = capsys.readouterr().err
    assert "lpips skipped" in err and "none of the requested metrics could be computed" in err
    assert generated == [] and not out.exists()  # no video was animated for nothing


@pytest.mark.parametrize("device,expected", [
    ("tpu", "--device must be 'cpu', 'cuda' or 'cuda:N'"),
    pytest.param("cuda:0", "use --device cpu", marks=pytest.mark.skipif(torch.cuda.is_available(),
                                                                        reason="checks the no-GPU error"))])
def test_bad_device_is_one_line(setup, tmp_path, capsys, device, expected):
    root, data, ckpt = setup
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--metrics", "l1",
               "--output", str(tmp_path / "r.json"), "--device", device])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("mode,extra,relative,adapt_scale", [
    ("same-id", [], False, True),
    ("cross-id", [], True, True),
    ("cross-id", ["--motion", "absolute"], False, True),
    ("cross-id", ["--no-adapt-scale"], True, False),
    ("same-id", ["--motion", "relative", "--no-adapt-scale"], True, False),
])
def test_motion_options_reach_animate_and_the_results(setup, tmp_path, monkeypatch, mode, extra, relative,
                                                      adapt_scale):
    root, data, ckpt = setup
    seen = []
    original = mcc_fast.Model.animate

    def spy(self, *args, **kwargs):
        seen.append((kwargs["relative"], kwargs["adapt_scale"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(mcc_fast.Model, "animate", spy)
    names = sorted(p.stem for p in (data / "test").glob("id*.mp4"))
    (tmp_path / "pairs.csv").write_text(f"source,driving\n{names[0]},{names[-1]}\n")
    pairs = ["--pairs", str(tmp_path / "pairs.csv")] if mode == "cross-id" else []
    out = tmp_path / "r.json"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--mode", mode, *pairs,
                 "--metrics", "l1", "--max-frames", "2", "--device", "cpu", "--output", str(out), *extra]) == 0
    assert seen and set(seen) == {(relative, adapt_scale)}
    settings = json.loads(out.read_text())["settings"]
    assert (settings["motion"], settings["adapt_scale"]) == ("relative" if relative else "absolute", adapt_scale)


def test_results_record_what_was_evaluated(setup, tmp_path):
    """Two results.json files say whether they are comparable: checkpoint, data, split, frame limit."""
    _, data, ckpt = setup
    out = tmp_path / "r.json"
    assert _evaluate(setup, "--output", str(out)) == 0
    settings = json.loads(out.read_text())["settings"]
    assert settings["checkpoint"] == str(ckpt) and settings["data"] == str(data)
    assert (settings["split"], settings["max_frames"], settings["pairs"]) == ("test", 2, None)


def test_no_adapt_scale_with_absolute_motion_is_refused(setup, capsys, no_model):
    assert _evaluate(setup, "--no-adapt-scale") == 2
    assert "--no-adapt-scale applies to relative motion" in capsys.readouterr().err


def test_a_pairs_name_two_videos_share_is_refused(setup, capsys, no_model, tmp_path):
    """`a.mp4` and `a.mkv` in one split: the reference `a` is refused as ambiguous (the last
    one listed won silently); `a.mkv` with its suffix still names its own video."""
    import shutil

    from mcc_fast.commands.evaluate import _video_names

    root, data, ckpt = setup
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    first = sorted((copy / "test").glob("id*.mp4"))[0]
    shutil.copy(first, first.with_suffix(".mkv"))
    names = _video_names(copy / "test")
    assert isinstance(names[first.stem], tuple) and names[first.name] != names[first.with_suffix(".mkv").name]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"source,driving\n{first.stem},{first.with_suffix('.mkv').name}\n")
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--data", str(copy), "--mode", "cross-id",
               "--pairs", str(pairs), "--output", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "line 2" in err and "more than one video" in err and first.name in err
    assert not (tmp_path / "r.json").exists()


def test_a_pairs_video_file_is_resized_frame_by_frame_as_it_is_decoded(tmp_path):
    """A --pairs driving video given by path was decoded whole at its own size, then converted to
    float32 whole (a 1080p minute: 9 GB of uint8, then 37 GB of float; a crafted file of huge
    uniform frames compresses that into kilobytes). Its frames are resized as they are decoded,
    as the split's videos are, to the same values."""
    import tracemalloc

    import numpy as np

    from mcc_fast.commands.evaluate import _load_frames
    from mcc_fast.inference.inputs import prepare_images
    from mcc_fast.io.video import VideoWriter, iter_video_frames

    rng = np.random.default_rng(0)
    path = tmp_path / "big.mp4"
    with VideoWriter(path, 10) as writer:
        for _ in range(20):
            writer.write(rng.integers(0, 256, (320, 320, 3), dtype=np.uint8))  # 300 kB a frame
    expected = prepare_images(np.stack(list(iter_video_frames(path))), size=32, name="v", note=lambda m: None)
    tracemalloc.start()
    try:
        with pytest.warns(UserWarning, match="resized from 320x320") as notes:
            frames = _load_frames(str(path), None, {}, 32, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(notes) == 1
    assert peak < 3 * 2**20, peak  # the whole clip at 320x320 is 6 MB (twice that while stacked)
    assert torch.equal(torch.as_tensor(frames), expected)
