"""Inputs read through `mcc_fast.io`: image modes, EXIF orientation, rotated and variable-rate videos, output folders."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mcc_fast.io import output_folder, read_image
from mcc_fast.io.video import VideoReadError, pil_to_rgb8


@pytest.mark.parametrize("dtype, suffix", [(np.uint16, ".png"), (">u2", ".tif"), (np.int32, ".tif")])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, dtype, suffix):
    grey = np.random.default_rng(0).integers(0, 65536, (64, 64)).astype(dtype)
    path = tmp_path / f"g16{suffix}"
    Image.fromarray(grey).save(path)
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    expected = np.round(grey.astype(np.float64) / 257)
    assert np.abs(rgb[..., 0] - expected).max() <= 0.5
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert rgb.mean() == pytest.approx(grey.mean() / 257, abs=0.5)
    assert (rgb == 255).mean() < 0.01  # not 99.7 % white


def test_16_bit_extremes_and_frame_folders(tmp_path):
    from mcc_fast.training.data import read_video_frames

    folder = tmp_path / "clip"
    folder.mkdir()
    for i, value in enumerate((0, 257 * 100, 65535)):
        Image.fromarray(np.full((8, 8), value, np.uint16)).save(folder / f"{i:05d}.png")
    frames = read_video_frames(folder)
    assert frames.dtype == np.uint8 and [int(f.mean()) for f in frames] == [0, 100, 255]


def test_32_bit_values_beyond_16_bits_are_refused(tmp_path):
    path = tmp_path / "i32.tif"
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(path)
    with pytest.raises(VideoReadError, match="i32.tif.*16-bit"):
        read_image(path)


def test_8_bit_images_are_unchanged(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    assert np.array_equal(read_image(tmp_path / "g.png"), np.repeat(rgb[..., :1], 3, axis=-1))


def test_output_folder(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert output_folder(tmp_path / "new" / "run", "--out") == tmp_path / "new" / "run"
    assert output_folder(tmp_path, "--out") == tmp_path
    with pytest.raises(ValueError, match="--out is empty"):
        output_folder("  ", "--out")
    with pytest.raises(NotADirectoryError, match="--output .*expected a folder, but it is an existing file"):
        output_folder(afile, "--output")
    with pytest.raises(NotADirectoryError, match="its parent .*afile"):
        output_folder(afile / "a" / "b", "--out")


def test_a_16_bit_pil_image_given_as_an_object_is_scaled_not_clipped():
    from PIL import Image

    from mcc_fast.inference.inputs import to_image_tensor

    grey = np.full((8, 8), 257 * 100, dtype=np.uint16)
    tensor = to_image_tensor(Image.fromarray(grey))
    expected = 100 / 255 * 2 - 1
    assert tensor.shape == (1, 3, 8, 8)
    assert abs(float(tensor.mean()) - expected) < 1e-6


def test_8_bit_grey_held_as_32_bit_and_float_grey(tmp_path):
    grey = np.random.default_rng(2).integers(0, 256, (8, 8))
    as_int = Image.fromarray(grey.astype(np.uint8)).convert("I")  # mode I holding 0..255
    as_int.save(tmp_path / "i.tif")
    assert np.array_equal(read_image(tmp_path / "i.tif")[..., 0], grey)
    unit = Image.fromarray((grey / 255.0).astype(np.float32), mode="F")  # float grey in 0..1
    unit.save(tmp_path / "f.tif")
    assert np.abs(read_image(tmp_path / "f.tif")[..., 0].astype(int) - grey).max() <= 1
    wide = Image.fromarray(grey.astype(np.float32), mode="F")  # float grey in 0..255
    wide.save(tmp_path / "f255.tif")
    assert np.array_equal(read_image(tmp_path / "f255.tif")[..., 0], grey)
    white = Image.fromarray(np.array([[0.0, 0.5], [0.25, 1.0]], np.float32), mode="F")  # 0..1 with a pure white
    assert np.array_equal(pil_to_rgb8(white)[..., 0], [[0, 128], [64, 255]])
    Image.fromarray(np.full((4, 4), -3.0, np.float32), mode="F").save(tmp_path / "neg.tif")
    with pytest.raises(VideoReadError, match=r"neg.tif.*mode F values -3..-3; expected 0..1 or 0..255"):
        read_image(tmp_path / "neg.tif")


def test_exif_orientation_is_applied(tmp_path):
    from mcc_fast.inference.inputs import to_image_tensor

    stored = np.zeros((96, 64, 3), np.uint8)
    stored[:10] = 255  # a bright top band as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "phone.jpg")
    assert shown.shape == (64, 96, 3)  # as viewers show it
    assert shown[:, -10:].mean() > 200 and shown[:, :10].mean() < 50  # the band is now on the right
    with Image.open(tmp_path / "phone.jpg") as img:
        assert to_image_tensor(img).shape == (1, 3, 64, 96)


def _encode(path, images, pts=None, rotation=None, options=None):
    """H.264 of uint8 (H, W, 3) `images` at 25 fps into `path` (frame pts `pts`, a display
    `rotation`, muxer `options`)."""
    import av

    h, w = images[0].shape[:2]
    out = av.open(str(path), "w", options=options or {})
    stream = out.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    if rotation is not None:
        stream.set_display_rotation(rotation)
    for i, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        if pts is not None:
            frame.pts = pts[i]
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    return path


def _clip(path, rotation=None, pts=None, size=(32, 64)):
    image = np.zeros((*size, 3), np.uint8)
    image[:, :10] = 255  # a bright left band as stored
    pts = list(pts if pts is not None else range(5))
    return _encode(path, [image] * len(pts), pts, rotation)


@pytest.mark.parametrize("rotation, band", [(90, "bottom"), (-90, "top"), (180, "right")])
def test_display_rotation_of_videos_is_applied(tmp_path, rotation, band):
    from mcc_fast.io.video import iter_video_frames, probe_video
    from mcc_fast.training.data import read_video_frames, read_video_frames_at

    path = _clip(tmp_path / "phone.mp4", rotation)
    info = probe_video(path)
    assert info.rotation == rotation % 360
    frames = list(iter_video_frames(path))
    assert (info.height, info.width) == frames[0].shape[:2] == ((64, 32) if rotation % 180 else (32, 64))
    f = frames[0].astype(float)
    sides = {"top": f[:10], "bottom": f[-10:], "left": f[:, :10], "right": f[:, -10:]}
    assert sides[band].mean() > 200 and min(v.mean() for k, v in sides.items() if k != band) < 50
    assert np.array_equal(read_video_frames_at(path, [0, 3])[0], frames[0])
    assert np.array_equal(read_video_frames(path)[0], frames[0])


def test_variable_rate_matroska_reports_its_average_rate(tmp_path):
    from fractions import Fraction

    from mcc_fast.io.video import probe_video

    pts = [0, 1, 2, 5, 6, 10, 11, 12, 20, 21, 22, 30]  # 12 frames over 31 ticks of 1/25 s
    info = probe_video(_clip(tmp_path / "vfr.mkv", pts=pts))
    assert info.num_frames == 12
    assert info.fps == Fraction(12 * 25, 31)  # not the nominal 25
    steady = probe_video(_clip(tmp_path / "cfr.mkv"))
    assert steady.fps == 25 and steady.num_frames == 5


def _faststart_clip(path, frames=20):
    """An mp4 with its index at the front (as web downloads are), random content (no tiny packets)."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(frames)]
    return _encode(path, images, options={"movflags": "faststart"})


def test_a_truncated_download_is_not_silently_shorter(tmp_path):
    """Frame-threaded decoding drops the cut-off packet's error: the short read must be said."""
    import warnings

    from mcc_fast.io.video import TruncatedVideoWarning, VideoReadError, iter_video_frames
    from mcc_fast.training.data import read_video_frames

    whole = _faststart_clip(tmp_path / "whole.mp4")
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:int(len(data) * 0.6)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the complete file: 20 frames, no warning
        assert len(list(iter_video_frames(whole))) == 20
        assert len(list(iter_video_frames(cut, max_frames=3))) == 3  # the frames asked for are there
    with pytest.warns(TruncatedVideoWarning, match=r"cut\.mp4.*decoded \d+ frames but its container lists 20"):
        frames = list(iter_video_frames(cut))
    assert 0 < len(frames) < 20
    with pytest.warns(TruncatedVideoWarning, match="looks truncated"):  # asked for more frames than are left
        assert len(list(iter_video_frames(cut, max_frames=19))) == len(frames)
    with pytest.raises(VideoReadError, match="looks truncated"):
        list(iter_video_frames(cut, strict=True))
    with pytest.raises(VideoReadError, match="cut.mp4"):
        read_video_frames(cut)  # training marks it unreadable, as its random-access reader does


def test_atomic_output_never_replaces_a_file_it_was_not_asked_to(tmp_path):
    """atomic_output: the temporary file becomes the target only when the block succeeds; an existing
    target is refused unless overwrite; a target that appears while writing is kept (the new one dropped)."""
    from mcc_fast.io import atomic_output

    target = tmp_path / "out.mp4"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and not tmp.exists()
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(FileExistsError, match="overwrite"):
        with atomic_output(target):
            pass
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_output(target, overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"first"

    late = tmp_path / "late.mp4"
    with pytest.raises(FileExistsError, match="appeared while writing"):
        with atomic_output(late) as tmp:
            tmp.write_bytes(b"ours")
            late.write_bytes(b"someone else's")  # another program saved it meanwhile
    assert late.read_bytes() == b"someone else's"
    with atomic_output(late, overwrite=True) as tmp:
        tmp.write_bytes(b"ours")
    assert late.read_bytes() == b"ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.mp4", "out.mp4"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match="output folder"):
        with atomic_output(tmp_path / "missing" / "x.mp4"):
            pass


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("name", ["clip.mp4", "face.png"])
def test_a_named_pipe_is_refused_not_waited_on(tmp_path, name):
    """A FIFO named like a video or an image (an archive can hold one; a --pairs row can name
    one) made FFmpeg and PIL block for ever waiting for a writer."""
    import os

    from mcc_fast.io.video import iter_video_frames, probe_video

    path = tmp_path / name
    os.mkfifo(path)
    for read in (probe_video, lambda p: next(iter_video_frames(p)), read_image):
        with pytest.raises(VideoReadError, match=rf"{name}' is not a regular file"):
            read(path)
