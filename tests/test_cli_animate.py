"""`mcc-fast animate` end to end on short generated clips (tiny random-weight model, CPU)."""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mcc_fast.assets import DEMO_MODEL_NOTE
from mcc_fast.cli import main
from mcc_fast.commands import animate as animate_command
from mcc_fast.io import video as video_io
from mcc_fast.model.config import ModelConfig
from mcc_fast.model.model import Model

av = pytest.importorskip("av")

SIZE = 64
NTSC = Fraction(30000, 1001)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The CI machine's 2 cores are shared: one intra-op thread is several times faster here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_clip(path: Path, frames: int, rate: Fraction, width: int, height: int, audio: bool) -> None:
    """A small H.264 clip (moving square), with a mono AAC sine track when `audio`."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if audio:
            sound = container.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for i in range(frames):
            image = np.full((height, width, 3), 40, np.uint8)
            image[10 + 3 * i:40 + 3 * i, 15:45] = 220
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio:
            samples = int(16000 * frames / rate)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32)[None]
            chunk = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 16000, 0
            for packet in sound.encode(chunk):
                container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("animate")
    torch.manual_seed(0)
    model = folder / "model.safetensors"
    Model(ModelConfig.small(SIZE, num_kp=5, width=16)).save_pretrained(model)
    face = folder / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(face)
    clip = folder / "clip.mp4"
    write_clip(clip, 5, NTSC, SIZE, SIZE, audio=True)
    wide = folder / "wide.mkv"
    write_clip(wide, 3, Fraction(25), 80, SIZE, audio=False)
    text = folder / "notes.txt"
    text.write_text("not a video\n")
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    return {"model": model, "face": face, "clip": clip, "wide": wide, "text": text, "empty": empty}


def run_cli(*args: str | Path) -> int:
    return main(["animate", *map(str, args)])


def decoded_frames(path: Path) -> list[np.ndarray]:
    return list(video_io.iter_video_frames(path))


def audio_payloads(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("mcc-fast animate: error: ") and "Traceback" not in err
    return lines[0]


def test_end_to_end_keeps_frames_rate_and_audio(files, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert run_cli("--source", files["face"], "--driving", files["clip"], "--output", out,
                   "--checkpoint", files["model"], "--batch", "2", "--device", "cpu") == 0
    info = video_io.probe_video(out)
    assert (info.width, info.height, info.codec) == (SIZE, SIZE, "h264")
    assert info.fps == NTSC
    assert len(decoded_frames(out)) == 5
    assert info.audio_codec == "aac"
    assert audio_payloads(out) == audio_payloads(files["clip"])  # stream-copied, packet for packet
    stdout = capsys.readouterr().out
    assert "wrote" in stdout and "5 frames" in stdout and "29.97 fps (30000/1001)" in stdout and "audio copied" in stdout
    assert leftovers(tmp_path) == []


def test_side_by_side_crop_and_demo_model(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(animate_command, "DEMO_MODEL", files["model"])  # no --checkpoint: the demo model
    out = tmp_path / "side.mkv"
    assert run_cli("--source", files["face"], "--driving", files["wide"], "--output", out, "--side-by-side",
                   "--crop", "center", "--strict", "--absolute", "--no-adapt-scale", "--quiet") == 0
    info = video_io.probe_video(out)
    assert (info.width, info.height) == (3 * SIZE, SIZE)  # source | driving | result
    assert info.fps == 25 and not info.has_audio
    frames = decoded_frames(out)
    assert len(frames) == 3
    captured = capsys.readouterr()
    assert "no audio" in captured.out and "absolute motion" in captured.out
    notes = [line for line in captured.err.splitlines() if "note:" in line]
    assert notes == [f"mcc-fast animate: note: {DEMO_MODEL_NOTE}"]  # the demo model is named; the centre
    # crop made the frames 64x64, so nothing was resized


def test_reference_path_flag_gives_the_same_video(files, tmp_path):
    fast, ref = tmp_path / "fast.mp4", tmp_path / "ref.mp4"
    common = ("--source", files["face"], "--driving", files["clip"], "--checkpoint", files["model"], "--quiet")
    assert run_cli(*common, "--output", fast) == 0
    assert run_cli(*common, "--output", ref, "--reference-path") == 0
    a, b = np.stack(decoded_frames(fast)).astype(int), np.stack(decoded_frames(ref)).astype(int)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 1.0  # same frames up to rounding before the H.264 encode


def test_existing_output_needs_overwrite(files, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    args = ("--source", files["face"], "--driving", files["clip"], "--output", out, "--checkpoint", files["model"])
    assert run_cli(*args) == 2
    assert "--overwrite" in one_error_line(capsys.readouterr().err)
    assert out.read_bytes() == b"keep me"
    assert run_cli(*args, "--overwrite", "--quiet") == 0
    assert len(decoded_frames(out)) == 5
    assert leftovers(tmp_path) == []


def test_interrupted_run_leaves_no_partial_file(files, tmp_path, monkeypatch, capsys):
    written = []
    original = video_io.VideoWriter.write

    def write_then_interrupt(self, frame):
        if written:
            raise KeyboardInterrupt
        written.append(1)
        original(self, frame)

    monkeypatch.setattr(video_io.VideoWriter, "write", write_then_interrupt)
    out = tmp_path / "out.mp4"
    assert run_cli("--source", files["face"], "--driving", files["clip"], "--output", out,
                   "--checkpoint", files["model"], "--quiet") == 130
    assert not out.exists() and leftovers(tmp_path) == []
    # with --overwrite, an interrupted run leaves the old file as it was
    out.write_bytes(b"old")
    written.clear()
    assert run_cli("--source", files["face"], "--driving", files["clip"], "--output", out,
                   "--checkpoint", files["model"], "--quiet", "--overwrite") == 130
    assert out.read_bytes() == b"old" and leftovers(tmp_path) == []


BAD_INPUTS = {
    "missing source": (dict(source="missing.png"), "does not exist"),
    "video as source": (dict(source="clip"), "is not a readable image"),
    "missing driving": (dict(driving="missing.mp4"), "does not exist"),
    "image as driving": (dict(driving="face"), "is a still image, not a video"),
    "text as driving": (dict(driving="text"), "video"),
    "empty driving file": (dict(driving="empty"), "is not a readable video"),
    "missing checkpoint": (dict(checkpoint="missing.safetensors"), "--checkpoint"),
    "not a checkpoint": (dict(checkpoint="text"), "notes.txt"),
    "output suffix": (dict(output="out.txt"), "--output"),
    "output folder": (dict(output="no/such/folder/out.mp4"), "does not exist"),
    "output is the driving video": (dict(output="clip", extra=["--overwrite"]), "is one of the inputs"),
    "bad crop": (dict(extra=["--crop", "1,2"]), "crop must be 'x,y,w,h'"),
    "crop outside the frame": (dict(extra=["--crop", "0,0,500,500"]), "driving crop"),
    "empty crop box": (dict(extra=["--crop", "0,0,0,0"]), "error: --crop (x=0, y=0, w=0, h=0) needs"),
    "bad source crop": (dict(extra=["--source-crop", "1,2"]), "error: --source-crop: crop must be"),
    "empty source crop box": (dict(extra=["--source-crop", "3,3,0,5"]), "error: --source-crop (x=3"),
    "no demo model": (dict(checkpoint=None), "pass --checkpoint PATH"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_one_line_error(case, files, tmp_path, capsys, monkeypatch):
    spec, expected = BAD_INPUTS[case]
    monkeypatch.setattr(animate_command, "DEMO_MODEL", tmp_path / "absent.safetensors")

    def resolve(name: str) -> str:
        return str(files[name]) if name in files else str(tmp_path / name)

    args = ["--source", resolve(spec.get("source", "face")), "--driving", resolve(spec.get("driving", "clip")),
            "--output", resolve(spec.get("output", "out.mp4")), "--quiet", *spec.get("extra", [])]
    checkpoint = spec.get("checkpoint", "model")
    if checkpoint is not None:
        args += ["--checkpoint", resolve(checkpoint)]
    assert main(["animate", *args]) == 2
    assert expected in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


def test_output_ending_in_a_slash_is_refused(files, tmp_path, capsys):
    assert run_cli("--source", files["face"], "--driving", files["clip"], "--output", f"{tmp_path}/out.mp4/",
                   "--checkpoint", files["model"], "--quiet") == 2
    assert "ends with a slash" in one_error_line(capsys.readouterr().err)
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("kind", ["read-only", "proc"])
def test_unwritable_output_folder_is_refused_before_rendering(files, tmp_path, capsys, monkeypatch, kind):
    """Found up front, not once the whole video is rendered (the encoder opens its file lazily)."""
    import os
    import tempfile

    folder = Path("/proc") if kind == "proc" else tmp_path / "ro"
    if kind == "read-only":
        folder.mkdir()
        folder.chmod(0o500)
    try:
        try:
            with tempfile.TemporaryFile(dir=folder):
                pytest.skip(f"{folder} is writable here (uid {os.getuid()})")
        except OSError:
            pass

        def refuse(*args, **kwargs):
            raise AssertionError("the model was loaded: the output folder was not checked first")

        monkeypatch.setattr(Model, "from_pretrained", refuse)
        assert run_cli("--source", files["face"], "--driving", files["clip"], "--output", folder / "out.mp4",
                       "--checkpoint", files["model"], "--quiet") == 2
    finally:
        if kind == "read-only":
            folder.chmod(0o700)
    line = one_error_line(capsys.readouterr().err)
    assert "--output" in line and "cannot write in" in line and str(folder) in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_gpu_requested_without_one(files, tmp_path, capsys):
    assert run_cli("--source", files["face"], "--driving", files["clip"], "--output", tmp_path / "o.mp4",
                   "--checkpoint", files["model"], "--device", "cuda") == 2
    assert "use --device cpu" in one_error_line(capsys.readouterr().err)


def test_module_entry_point_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mcc_fast", "animate", "--source", str(tmp_path / "none.png"),
         "--driving", str(tmp_path / "none.mp4"), "--output", str(tmp_path / "o.mp4")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)  # not the checkout: the installed package
    assert result.returncode == 2
    one_error_line(result.stderr)


def test_video_writer_reencodes_audio_and_refuses_empty(files, tmp_path):
    frames = decoded_frames(files["clip"])
    out = tmp_path / "aac.mov"
    with video_io.VideoWriter(out, NTSC, audio_from=files["clip"], audio="aac") as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.audio == "aac"
    info = video_io.probe_video(out)
    assert info.audio_codec == "aac" and info.fps == NTSC and len(decoded_frames(out)) == len(frames)
    with pytest.raises(video_io.VideoWriteError, match="no frames were written"):
        with video_io.VideoWriter(tmp_path / "none.mp4", 25):
            pass
    assert not (tmp_path / "none.mp4").exists() and leftovers(tmp_path) == []


def write_clip_with_audio(path: Path, codec: str, sample_format: str, layout: str, rate: int = 48000) -> None:
    """A 3-frame H.264 clip at 25 fps with a silent `codec` audio track (`layout` channels)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = SIZE, SIZE, "yuv420p"
        sound = container.add_stream(codec, rate=rate)
        sound.layout = layout
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((SIZE, SIZE, 3), 60 * i, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        channels, pts = len(av.AudioLayout(layout).channels), 0
        while pts < rate * 3 // 25:
            samples = np.zeros((1, 960 * channels), np.int16 if sample_format == "s16" else np.float32)
            chunk = av.AudioFrame.from_ndarray(samples, format=sample_format, layout=layout)
            chunk.sample_rate, chunk.pts = rate, pts
            pts += 960
            for packet in sound.encode(chunk):
                container.mux(packet)
        for packet in sound.encode(None):
            container.mux(packet)


@pytest.mark.parametrize("codec, sample_format, layout, output", [
    ("pcm_s16le", "s16", "stereo", "out.mp4"),  # Matroska stores it as "2 channels": MP4 refuses to copy it
    ("libopus", "flt", "mono", "out.mov"),  # in FFmpeg's MOV codec list, yet "opus only supported in MP4"
])
def test_video_writer_reencodes_audio_the_container_refuses(tmp_path, codec, sample_format, layout, output):
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg has no {codec} encoder")
    source = tmp_path / "driving.mkv"
    write_clip_with_audio(source, codec, sample_format, layout)
    out = tmp_path / output
    with video_io.VideoWriter(out, 25, audio_from=source) as writer:  # audio="auto": copy when it muxes
        for frame in decoded_frames(source):
            writer.write(frame)
    assert writer.audio == "aac"
    info = video_io.probe_video(out)
    assert info.audio_codec == "aac" and len(decoded_frames(out)) == 3 and leftovers(tmp_path) == []
