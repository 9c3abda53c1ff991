"""What `Model` accepts: half-precision models on the CPU reference path, input dtypes and
batches (the same rule on both paths), checkpoint dtypes and paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mcc_fast
from mcc_fast.model import ModelConfig
from mcc_fast.model.checkpoint import CheckpointError
from mcc_fast.model.generator.warping import warp


@pytest.fixture(scope="module")
def small_model() -> mcc_fast.Model:
    torch.manual_seed(0)
    return mcc_fast.Model(ModelConfig.small(64)).eval()


def _images(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 64, 64, generator=g) * 2 - 1


def _psnr(frames: torch.Tensor, reference: torch.Tensor) -> float:
    mse = ((frames.float().clamp(-1, 1) - reference.clamp(-1, 1)) ** 2).mean(dim=(1, 2, 3)) / 4
    return (-10 * torch.log10(mse.clamp_min(1e-12))).min().item()


# ---- half precision on the CPU reference path --------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_warp_of_a_channels_last_half_feature_on_cpu_is_finite(dtype):
    """CPU grid_sample gives NaN for some channels-last half inputs; warp samples a contiguous copy."""
    g = torch.Generator().manual_seed(0)
    feature = torch.randn(1, 16, 64, 64, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    flow = torch.rand(2, 64, 64, 2, generator=g) * 2.2 - 1.1
    out = warp(feature.expand(2, -1, -1, -1), flow)
    assert torch.isfinite(out).all()
    assert torch.equal(out, warp(feature.contiguous().expand(2, -1, -1, -1), flow))


@pytest.mark.parametrize("dtype, min_db", [(torch.bfloat16, 40.0), (torch.float16, 55.0)])
def test_half_precision_demo_model_reference_path_is_near_fp32(dtype, min_db):
    """Measured: bf16 48.5 dB, fp16 67 dB (was 100% NaN frames before the warp fix)."""
    from mcc_fast.assets import DEMO_DRIVING, DEMO_MODEL, DEMO_SOURCE
    from mcc_fast.io.video import iter_video_frames, read_image

    def tensor(img):
        return (torch.from_numpy(np.asarray(img, dtype=np.float32)) / 127.5 - 1).permute(2, 0, 1)[None]

    driving = torch.cat([tensor(f) for _, f in zip(range(2), iter_video_frames(DEMO_DRIVING))])
    source = tensor(read_image(DEMO_SOURCE)).expand(2, -1, -1, -1)
    reference = mcc_fast.Model.from_pretrained(DEMO_MODEL, device="cpu")
    half = mcc_fast.Model.from_pretrained(DEMO_MODEL, device="cpu", dtype=dtype)
    with torch.no_grad():
        expected = reference(source, driving)
        frames = half(source.to(dtype), driving.to(dtype))
    assert frames.dtype == dtype and torch.isfinite(frames).all()
    assert _psnr(frames, expected) > min_db


# ---- inputs: the same rule on both paths -----------------------------------------------------

@pytest.mark.parametrize("fast_path", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_dtype_other_than_the_models_is_a_clear_type_error(small_model, fast_path, dtype):
    source, driving = _images(1), _images(1, seed=2)
    small_model.fast_path = fast_path
    try:
        with pytest.raises(TypeError, match=rf"source is {dtype} but the model is torch.float32"):
            small_model(source.to(dtype), driving.to(dtype))
        with pytest.raises(TypeError, match=rf"driving is {dtype}"):
            small_model(source, driving.to(dtype))
    finally:
        small_model.fast_path = False
    with pytest.raises(TypeError, match="source is"):
        small_model.fast()(source.to(dtype), driving)


@pytest.mark.parametrize("fast_path", [False, True])
def test_non_floating_inputs_are_a_type_error_on_both_paths(small_model, fast_path):
    # as a float input of another dtype, and as the ops' "must be a floating tensor"
    source, driving = _images(1), _images(1, seed=2)
    small_model.fast_path = fast_path
    try:
        with pytest.raises(TypeError, match="source must be a floating"):
            small_model(source.to(torch.uint8), driving)
        with pytest.raises(TypeError, match="driving must be a floating"):
            small_model(source, driving.to(torch.int64))
    finally:
        small_model.fast_path = False
    fast = small_model.fast()
    with pytest.raises(TypeError, match="source must be a floating"):
        fast.prepare_source(source.to(torch.uint8))
    with pytest.raises(TypeError, match="image must be a floating"):
        small_model.motion_estimator.keypoints(source.to(torch.uint8))
    kp = small_model.motion_estimator.keypoints(source)
    with pytest.raises(TypeError, match="kp_driving must be a Keypoints"):  # as FastModel.render_frame
        small_model.motion_estimator.dense_motion(source, kp, kp.value)


@pytest.mark.parametrize("fast_path", [False, True])
def test_batch_mismatch_is_the_same_error_on_both_paths(small_model, fast_path):
    small_model.fast_path = fast_path
    try:
        with pytest.raises(ValueError, match="driving batch 2 != source batch 1"):
            small_model(_images(1), _images(2))
    finally:
        small_model.fast_path = False
    with pytest.raises(ValueError, match="driving batch 2 != source batch 1"):
        small_model.fast()(_images(1), _images(2))
    fast = small_model.fast()  # video mode: one cached source serves many frames, on purpose
    assert fast.render_frame(fast.prepare_source(_images(1)), _images(2)).shape == (2, 3, 64, 64)


# ---- checkpoints: dtypes and paths -----------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.int8, torch.float64, torch.complex64, "int8", "float8", 16])
def test_save_pretrained_refuses_other_dtypes(tmp_path, small_model, dtype):
    with pytest.raises(ValueError, match="dtype must be one of"):
        small_model.save_pretrained(tmp_path / "m.safetensors", dtype=dtype)
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("name, expected", [("float16", torch.float16), ("fp16", torch.float16),
                                            ("half", torch.float16), ("bfloat16", torch.bfloat16),
                                            ("bf16", torch.bfloat16), ("float32", torch.float32),
                                            ("FP32", torch.float32)])
def test_dtype_names_are_accepted(tmp_path, small_model, name, expected):
    path = small_model.save_pretrained(tmp_path / "m.safetensors", dtype=name)
    loaded = mcc_fast.Model.from_pretrained(path, device="cpu", dtype=name)
    assert next(loaded.parameters()).dtype == expected


def test_from_pretrained_refuses_bad_dtypes(tmp_path, small_model):
    path = small_model.save_pretrained(tmp_path / "m.safetensors")
    for bad in ("bfloat", torch.int8, "int8"):
        with pytest.raises(ValueError, match="dtype must be one of"):
            mcc_fast.Model.from_pretrained(path, device="cpu", dtype=bad)


def test_save_pretrained_paths(tmp_path, small_model):
    assert small_model.save_pretrained(tmp_path / "a.safetensors") == tmp_path / "a.safetensors"
    assert small_model.save_pretrained(tmp_path / "folder") == tmp_path / "folder" / "model.safetensors"
    for name in ("x.pt", "x.pth", "x.PTH", "x.bin"):
        with pytest.raises(ValueError, match="safetensors"):
            small_model.save_pretrained(tmp_path / name)
        assert not (tmp_path / name).exists()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="safetensors"):
        small_model.save_pretrained(tmp_path / "notes.txt")


def test_two_generator_checkpoints_in_a_folder_are_named(tmp_path):
    for name in ("net_g_1000.pth", "net_g_2000.pth", "net_motion_estimator_latest.pth"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(CheckpointError, match="net_g_1000.pth, net_g_2000.pth"):
        mcc_fast.Model.from_pretrained(tmp_path, device="cpu")


def test_checkpoint_with_non_finite_weights_is_refused(tmp_path):
    torch.manual_seed(3)
    model = mcc_fast.Model(ModelConfig.small(64))
    with torch.no_grad():
        model.generator.decoder.conv_out.weight[0, 0, 0, 0] = float("nan")
        next(model.motion_estimator.parameters()).fill_(float("inf"))
    path = model.save_pretrained(tmp_path / "diverged.safetensors")
    with pytest.raises(CheckpointError, match=r"diverged\.safetensors: 2 weight tensor\(s\) hold NaN or Inf"):
        mcc_fast.Model.from_pretrained(path, device="cpu")
    with pytest.raises(CheckpointError, match="conv_out.weight"):
        mcc_fast.Model.from_pretrained(path, device="cpu")


@pytest.mark.parametrize("config", ["small", {"motion": {}}, ModelConfig.small(32).generator, 5])
def test_model_config_of_the_wrong_type_is_a_type_error(config):
    """Model(config) names the argument (was AttributeError: 'dict' object has no attribute 'motion')."""
    with pytest.raises(TypeError, match="config must be a ModelConfig or None"):
        mcc_fast.Model(config)


def test_fast_path_flag_of_the_wrong_type_is_a_type_error(small_model):
    # as every other flag (Model.from_pretrained's fast, animate's relative, the ops' align_corners)
    from mcc_fast.fast import FastOptions

    for bad in (1, "False", None):
        with pytest.raises(TypeError, match="channels_last must be a bool"):
            small_model.fast(channels_last=bad)
        with pytest.raises(TypeError, match="channels_last must be a bool"):
            FastOptions(channels_last=bad)
