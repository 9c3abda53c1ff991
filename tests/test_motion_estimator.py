"""MotionEstimator: official parity, parameter count, key conversion, small configs, bad inputs."""
from __future__ import annotations

import dataclasses

import golden
import pytest
import torch

from mcc_fast.model.motion.antialias import AntiAliasDownsample
from mcc_fast.model.motion import (
    Keypoints,
    MotionEstimator,
    MotionEstimatorConfig,
    StateDictMismatchError,
    convert_motion_estimator_state_dict,
    motion_estimator_key_map,
)

SMALL = MotionEstimatorConfig(
    num_kp=5,
    image_size=64,
    kp_block_expansion=8,
    kp_max_features=64,
    kp_num_blocks=3,
    dm_block_expansion=8,
    dm_max_features=64,
    dm_num_blocks=3,
)


# ------------------------------------------------------------------------- parity
@pytest.fixture(scope="module")
def official_run():
    with torch.device("meta"):  # skip the random init: every entry comes from the fixture
        model = MotionEstimator(MotionEstimatorConfig())
    weights = convert_motion_estimator_state_dict(golden.official_state_dicts()[0])
    model.load_state_dict({k: v.clone() for k, v in weights.items()}, strict=True, assign=True)
    model.eval()
    source, driving = golden.inputs()
    with torch.no_grad():
        out = model(driving, source, return_sparse_motion=True)
    return {
        "infer.kp_source.value": out.kp_source.value,
        "infer.kp_source.jacobian": out.kp_source.jacobian,
        "infer.kp_driving.value": out.kp_driving.value,
        "infer.kp_driving.jacobian": out.kp_driving.jacobian,
        "infer.dm.deformation": out.deformation,
        "infer.dm.occlusion_map": out.occlusion_map,
        "infer.dm.mask": out.mask,
        "infer.dm.driving_kp_heatmap": out.driving_kp_heatmap,
        "infer.dm.sparse_motion": out.sparse_motion,
    }


@pytest.mark.parametrize(
    "name",
    [
        "infer.kp_source.value",
        "infer.kp_source.jacobian",
        "infer.kp_driving.value",
        "infer.kp_driving.jacobian",
        "infer.dm.deformation",
        "infer.dm.occlusion_map",
        "infer.dm.mask",
        "infer.dm.driving_kp_heatmap",
        "infer.dm.sparse_motion",
    ],
)
def test_official_parity(official_run, name):
    assert official_run[name].dtype == torch.float32
    golden.assert_close_to_recorded(name, official_run[name])


# -------------------------------------------------------------- counts and keys
def test_parameter_count_matches_official():
    with torch.device("meta"):
        model = MotionEstimator(MotionEstimatorConfig())
    # the official 52,054,701 counts parameters only; the two anti-aliasing kernels and the
    # BatchNorm statistics are buffers (but are in the state dict: 150 entries)
    assert sum(p.numel() for p in model.parameters()) == 52_054_701
    # per network, as the fixture's weight list gives them (paper: 14.3M + 37.8M)
    assert sum(p.numel() for p in model.keypoint_detector.parameters()) == 14_258_268
    assert sum(p.numel() for p in model.dense_motion_net.parameters()) == 37_796_433
    assert len(model.state_dict()) == 150
    assert golden.fixture_meta()["parameter_counts"]["motion_estimator"] == 52_054_701


def test_key_map_is_a_bijection_onto_the_official_names():
    official = [w["name"] for w in golden.fixture_meta()["weights"] if w["network"] == "motion_estimator"]
    key_map = motion_estimator_key_map()
    assert sorted(key_map) == sorted(official)
    assert len(set(key_map.values())) == len(key_map)


def test_converter_reports_missing_unexpected_and_misshapen_keys():
    official = dict(golden.official_state_dicts()[0])
    prefixed = {"module." + k: v for k, v in official.items()}
    assert convert_motion_estimator_state_dict(prefixed).keys() == convert_motion_estimator_state_dict(official).keys()

    broken = dict(official)
    del broken["kp_detector.kp.weight"]
    broken["kp_detector.extra.weight"] = torch.zeros(1)
    broken["dense_motion_network.mask.bias"] = torch.zeros(3)
    with pytest.raises(StateDictMismatchError) as info:
        convert_motion_estimator_state_dict(broken)
    message = str(info.value)
    assert "missing keys (1): keypoint_detector.heatmap_head.weight" in message
    assert "unexpected keys (1): kp_detector.extra.weight" in message
    assert "dense_motion_network.mask.bias (3,)" in message


def test_converter_checks_against_the_given_config():
    small = MotionEstimator(SMALL)
    official = {golden_name: small.state_dict()[ours] for golden_name, ours in motion_estimator_key_map(SMALL).items()}
    converted = convert_motion_estimator_state_dict(official, SMALL)
    MotionEstimator(SMALL).load_state_dict(converted, strict=True)
    with pytest.raises(StateDictMismatchError, match="shape mismatches"):
        convert_motion_estimator_state_dict(official)  # default config: shapes differ


# ------------------------------------------------------------------ small config
def _small_model(config=SMALL, seed=0) -> MotionEstimator:
    torch.manual_seed(seed)
    model = MotionEstimator(config)
    with torch.no_grad():  # non-trivial BatchNorm statistics and jacobians
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(1.0, 1.5)
        if model.keypoint_detector.jacobian_head is not None:
            model.keypoint_detector.jacobian_head.weight.normal_(0, 1e-3)
    return model.eval()


def _images(config=SMALL, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, config.num_channels, config.image_size, config.image_size)
    return torch.tanh(torch.randn(shape, generator=g)), torch.tanh(torch.randn(shape, generator=g))


def test_small_config_shapes():
    model = _small_model()
    driving, source = _images()
    with torch.no_grad():
        out = model(driving, source, return_sparse_motion=True)
    k, s = SMALL.num_kp, SMALL.dm_size
    assert s == 16 and SMALL.heatmap_size == 10
    assert out.kp_source.value.shape == (2, k, 2) and out.kp_driving.jacobian.shape == (2, k, 2, 2)
    assert out.deformation.shape == (2, s, s, 2)
    assert out.occlusion_map.shape == (2, 1, s, s)
    assert out.mask.shape == (2, k + 1, s, s)
    assert out.driving_kp_heatmap.shape == (2, k, s, s)
    assert out.sparse_motion.shape == (2, k + 1, s, s, 2)
    torch.testing.assert_close(out.mask.sum(1), torch.ones(2, s, s))
    assert out.kp_source.value.abs().max() <= 1
    assert model(driving, source).sparse_motion is None
    as_dict = out.as_dict()
    assert set(as_dict) >= {"kp_source", "kp_driving", "deformation", "occlusion_map", "mask", "driving_kp_heatmap"}


def test_split_calls_equal_forward():
    model = _small_model()
    driving, source = _images()
    with torch.no_grad():
        full = model(driving, source, return_sparse_motion=True)
        kp_s = model.keypoints(source)
        kp_d = model.keypoints(driving)
        split = model.dense_motion(source, kp_s, kp_d, return_sparse_motion=True)
    for field in ("deformation", "occlusion_map", "mask", "driving_kp_heatmap", "sparse_motion"):
        torch.testing.assert_close(getattr(split, field), getattr(full, field), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(split.kp_source.value, full.kp_source.value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(split.kp_driving.jacobian, full.kp_driving.jacobian, rtol=1e-5, atol=1e-6)


def test_training_mode_uses_separate_batch_statistics_and_backpropagates():
    model = _small_model().train()
    driving, source = _images()
    out = model(driving, source)
    with torch.no_grad():  # the official calls the detector on driving, then on source
        expected_source = model.keypoints(source)  # BN statistics of the source batch alone
    torch.testing.assert_close(out.kp_source.value, expected_source.value, rtol=1e-5, atol=1e-6)
    loss = out.deformation.square().mean() + out.occlusion_map.mean() + out.kp_driving.jacobian.sum()
    loss.backward()
    assert model.keypoint_detector.heatmap_head.weight.grad is not None
    assert model.dense_motion_net.mask_head.weight.grad.abs().sum() > 0


def test_default_init_gives_identity_jacobians():
    torch.manual_seed(0)
    model = MotionEstimator(SMALL).eval()
    with torch.no_grad():
        kp = model.keypoints(_images()[0])
    torch.testing.assert_close(kp.jacobian, torch.eye(2).expand(2, SMALL.num_kp, 2, 2))


@pytest.mark.parametrize(
    "changes",
    [
        {"kp_estimate_jacobian": False},
        {"dm_estimate_occlusion": False},
        {"kp_single_jacobian_map": True},
        {"kp_scale_factor": 0.5, "dm_scale_factor": 0.5},
        {"kp_head_padding": 3, "num_kp": 1},
    ],
)
def test_config_variants_run(changes):
    config = dataclasses.replace(SMALL, **changes)
    model = _small_model(config)
    driving, source = _images(config)
    with torch.no_grad():
        out = model(driving, source)
    s = config.dm_size
    assert out.deformation.shape == (2, s, s, 2)
    assert torch.isfinite(out.deformation).all()
    assert (out.kp_source.jacobian is None) == (not config.kp_estimate_jacobian)
    assert (out.occlusion_map is None) == (not config.dm_estimate_occlusion)


def test_float64_model_agrees_with_float32():
    model = _small_model()
    driving, source = _images()
    with torch.no_grad():
        lo = model(driving, source)
        hi = model.double()(driving.double(), source.double())
    assert hi.deformation.dtype == torch.float64
    torch.testing.assert_close(lo.deformation.double(), hi.deformation, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- bad inputs
def test_bad_images_raise_clear_errors():
    model = _small_model()
    driving, source = _images()
    with pytest.raises(ValueError, match=r"driving must have shape \(B, 3, 64, 64\)"):
        model(driving[:, :2], source)
    with pytest.raises(ValueError, match=r"source must have shape \(B, 3, 64, 64\)"):
        model(driving, source[..., :32, :32])
    with pytest.raises(ValueError, match="batch"):
        model(driving, source[:1])
    with pytest.raises(TypeError, match="floating"):  # a dtype mistake: TypeError, as in the model and the ops
        model(driving, (source * 100).to(torch.uint8))
    with pytest.raises(ValueError, match="image must"):
        model.keypoints(driving[0])
    kp = model.keypoints(source)
    with pytest.raises(ValueError, match=r"kp_driving.value must have shape"):
        model.dense_motion(source, kp, Keypoints(kp.value[:, :2], kp.jacobian[:, :2]))
    with pytest.raises(ValueError, match=r"kp_source.jacobian"):
        model.dense_motion(source, Keypoints(kp.value, None), kp)


def test_nan_input_propagates_without_crashing():
    # documented: no data-dependent checks (they would sync the device); NaN flows out
    model = _small_model()
    driving, source = _images()
    driving[0, :, 5, 5] = float("nan")
    with torch.no_grad():
        out = model(driving, source)
    assert torch.isnan(out.kp_driving.value[0]).any()
    assert torch.isfinite(out.kp_driving.value[1]).all()  # other samples untouched in eval mode


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_kp", 0),
        ("num_channels", 2.5),
        ("kp_num_blocks", 5),  # 64 * 0.25 = 16 is not divisible by 32
        ("dm_scale_factor", 0.3),
        ("dm_scale_factor", 0.26),  # 1/0.26 rounds to 4, which divides everything: only the 1/n check refuses it
        ("kp_scale_factor", 1.5),
        ("kp_temperature", 0.0),
        ("kp_variance", -1.0),
        ("kp_estimate_jacobian", 1),
        ("kp_head_padding", 4),
        ("image_size", 62),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(SMALL, **{field: value})


def test_a_downsample_must_shrink():
    """scale 1 would be a Gaussian of sigma 0 (a NaN kernel); the configs skip the module then."""
    for scale in (1.0, 0.0, 1.5):
        with pytest.raises(ValueError, match="scale must be in"):
            AntiAliasDownsample(3, scale)


def test_single_jacobian_map_is_shared_by_every_keypoint():
    """kp_single_jacobian_map: one 4-channel jacobian map, each keypoint's jacobian its
    heatmap-weighted sum (FOMM's single_jacobian_map)."""
    config = dataclasses.replace(SMALL, kp_single_jacobian_map=True)
    torch.manual_seed(0)
    model = MotionEstimator(config).eval()
    detector = model.keypoint_detector
    assert detector.jacobian_head.out_channels == 4
    with torch.no_grad():
        detector.jacobian_head.weight.normal_(0, 0.1)
        image = _images(config)[0]
        kp = detector(image)
        features = detector.hourglass(detector.downsample(image))
        logits = detector.heatmap_head(features)
        b, k, h, w = logits.shape
        heatmap = torch.softmax(logits.view(b, k, h * w) / config.kp_temperature, dim=2)
        single = detector.jacobian_head(features).view(b, 4, h * w)
        expected = torch.einsum("bkn,bcn->bkc", heatmap, single).view(b, k, 2, 2)
    torch.testing.assert_close(kp.jacobian, expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_keypoints_are_float32_statistics(dtype):
    """The heatmap softmax and expectations run in float32 for a half-precision detector
    (its hourglass and heads in the half dtype)."""
    torch.manual_seed(0)
    detector = MotionEstimator(SMALL).eval().to(dtype).keypoint_detector
    image = _images()[0].to(dtype)
    with torch.no_grad():
        kp = detector(image)
        logits = detector.heatmap_head(detector.hourglass(detector.downsample(image))).float()
        b, k, h, w = logits.shape
        heatmap = torch.softmax(logits.view(b, k, h * w) / SMALL.kp_temperature, dim=2)
        line = torch.linspace(-1, 1, w)
        grid = torch.stack((line.view(1, w).expand(h, w), line.view(h, 1).expand(h, w)), dim=-1).view(h * w, 2)
    assert kp.value.dtype == torch.float32 and kp.jacobian.dtype == torch.float32
    torch.testing.assert_close(kp.value, heatmap @ grid)
