"""Inputs read through `mcc_fast.io`: 16-bit images and output folder checks."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mcc_fast.io import output_folder, read_image
from mcc_fast.io.video import VideoReadError


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
