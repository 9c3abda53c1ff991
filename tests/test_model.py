"""mcc_fast.Model end to end: official-checkpoint parity, checkpoint formats, sizes, bad input."""
from __future__ import annotations

import os

import pytest
import torch

import golden
import mcc_fast
from mcc_fast.model import CheckpointError, ModelConfig, convert_official_checkpoint


@pytest.fixture(scope="module")
def official_model() -> mcc_fast.Model:
    me, gen = golden.official_state_dicts()
    model = mcc_fast.Model()
    model.load_state_dict(convert_official_checkpoint({"generator": {"params_ema": gen}, "motion_estimator": {"params": me}}))
    return model.eval()


@pytest.fixture(scope="module")
def official_outputs(official_model):
    source, driving = golden.inputs()
    with torch.no_grad():
        return official_model(source, driving, return_all=True)


def test_parameter_counts_match_the_paper(official_model):
    counts = official_model.num_parameters()
    assert counts["motion_estimator"] == 52_054_701
    assert counts["generator"] == 30_118_854
    assert counts["total"] == 82_173_555


def test_end_to_end_parity_with_the_official_model(official_outputs):
    out = official_outputs
    golden.assert_close_to_recorded("infer.kp_source.value", out.motion.kp_source.value)
    golden.assert_close_to_recorded("infer.kp_driving.jacobian", out.motion.kp_driving.jacobian)
    golden.assert_close_to_recorded("infer.dm.deformation", out.motion.deformation)
    golden.assert_close_to_recorded("infer.dm.occlusion_map", out.motion.occlusion_map)
    for i, flow in enumerate(out.generator.flows):
        golden.assert_close_to_recorded(f"infer.deformation_list.{i}", flow)
    for i, occ in enumerate(out.generator.occlusions):
        golden.assert_close_to_recorded(f"infer.out_occ.{i}", occ)
    for i, mask in enumerate(out.generator.appearance_token_masks):
        ref = golden.recorded()[f"infer.app_token_mask.{i}"].bool()
        assert torch.equal(mask.reshape(ref.shape).bool(), ref), f"app_token_mask.{i}"
    golden.assert_close_to_recorded("infer.out", out.frame)


def test_default_flops_match_the_spec(official_model):
    flops = official_model.flops(batch=1)
    # SPEC.md: about 357 G for the generator and 14.6 G for the motion estimator (2 x MAC); we count 14.42 G.
    assert 340e9 < flops["generator"] < 375e9, flops
    assert 13e9 < flops["motion_estimator"] < 16e9, flops


def _write_official_pair(folder, me, gen, prefix=""):
    folder.mkdir(parents=True, exist_ok=True)
    pre = lambda d: {prefix + k: v for k, v in d.items()}  # noqa: E731
    torch.save({"params": pre(gen), "params_ema": pre(gen)}, folder / "net_g_latest.pth")
    torch.save({"params": pre(me)}, folder / "net_motion_estimator_latest.pth")


def test_from_pretrained_reads_the_official_pair_from_a_folder(tmp_path, official_model):
    me, gen = golden.official_state_dicts()
    _write_official_pair(tmp_path / "release", me, gen, prefix="module.")
    loaded = mcc_fast.Model.from_pretrained(tmp_path / "release", device="cpu")
    assert not loaded.training
    theirs = official_model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name


def test_converter_prefers_params_ema(tmp_path):
    me, gen = golden.official_state_dicts()
    noisy = {k: v + 1 if v.is_floating_point() else v for k, v in gen.items()}
    state = convert_official_checkpoint({"generator": {"params": noisy, "params_ema": gen},
                                         "motion_estimator": {"params": me}})
    ours = convert_official_checkpoint({"generator": {"params_ema": gen}, "motion_estimator": {"params": me}})
    assert all(torch.equal(state[k], ours[k]) for k in ours)


def test_converter_names_missing_and_unexpected_keys():
    me, gen = golden.official_state_dicts()
    broken = dict(gen)
    dropped = next(iter(broken))
    del broken[dropped]
    broken["not.a.key"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        convert_official_checkpoint({"generator": broken, "motion_estimator": me})
    assert "not.a.key" in str(info.value)


def test_truncated_or_foreign_official_file_is_a_clear_error(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "net_g_latest.pth").write_bytes(b"\x80\x02not a checkpoint")
    (folder / "net_motion_estimator_latest.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="net_g_latest.pth"):
        mcc_fast.Model.from_pretrained(folder, device="cpu")
    with pytest.raises(CheckpointError, match="no net_g_latest.pth"):
        mcc_fast.Model.from_pretrained(tmp_path, device="cpu")


# ---- small models: our format ------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_model() -> mcc_fast.Model:
    torch.manual_seed(0)
    return mcc_fast.Model(ModelConfig.small(64)).eval()


def _pair(batch=2, size=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, size, size, generator=g) * 2 - 1, torch.rand(batch, 3, size, size, generator=g) * 2 - 1)


def test_save_and_load_round_trip(tmp_path, small_model):
    source, driving = _pair()
    with torch.no_grad():
        expected = small_model(source, driving)
    path = small_model.save_pretrained(tmp_path / "ckpt")
    assert path.name == "model.safetensors" and not list(path.parent.glob(".*"))  # no temporary file left
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file the user writes
    loaded = mcc_fast.Model.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.config == small_model.config
    with torch.no_grad():
        assert torch.equal(loaded(source, driving), expected)


def test_official_to_ours_round_trip_keeps_outputs(tmp_path, official_model):
    path = official_model.save_pretrained(tmp_path / "ours.safetensors")
    loaded = mcc_fast.Model.from_pretrained(path, device="cpu")
    theirs = official_model.state_dict()
    assert all(torch.equal(t, theirs[k]) for k, t in loaded.state_dict().items())


def test_fp16_save_halves_the_file(tmp_path, small_model):
    full = small_model.save_pretrained(tmp_path / "a.safetensors").stat().st_size
    half = small_model.save_pretrained(tmp_path / "b.safetensors", dtype=torch.float16).stat().st_size
    assert half < 0.6 * full
    loaded = mcc_fast.Model.from_pretrained(tmp_path / "b.safetensors", device="cpu", dtype=torch.float32)
    source, driving = _pair(batch=1)
    with torch.no_grad():
        diff = (loaded(source, driving) - small_model(source, driving)).abs().max()
    assert diff < 0.05


def test_foreign_and_truncated_safetensors_are_clear_errors(tmp_path, small_model):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="foreign.safetensors"):
        mcc_fast.Model.from_pretrained(foreign, device="cpu")
    good = small_model.save_pretrained(tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        mcc_fast.Model.from_pretrained(truncated, device="cpu")
    with pytest.raises(CheckpointError, match="not found"):
        mcc_fast.Model.from_pretrained(tmp_path / "missing.safetensors", device="cpu")


def test_config_json_round_trip_and_validation():
    for config in (ModelConfig(), ModelConfig.small(64), ModelConfig.small(128)):
        assert ModelConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown generator fields"):
        ModelConfig.from_dict({"generator": {"not_a_field": 1}})
    small = ModelConfig.small(64)
    with pytest.raises(ValueError, match="image_size"):
        ModelConfig(motion=ModelConfig.small(128).motion, generator=small.generator)


@pytest.mark.parametrize("data, match", [
    (None, "expected a dict"),
    ({"motion": None}, "motion"),
    ({"generator": [1, 2]}, "generator"),
    ({"motion": "abc"}, "motion"),
])
def test_config_from_dict_of_the_wrong_shape_is_a_clear_value_error(data, match):
    with pytest.raises(ValueError, match=rf"ModelConfig.from_dict: .*{match}"):
        ModelConfig.from_dict(data)


def test_config_parts_of_the_wrong_type_are_a_type_error_naming_them():
    small = ModelConfig.small(32)
    with pytest.raises(TypeError, match="motion must be a MotionEstimatorConfig"):
        ModelConfig(motion=small.to_dict()["motion"], generator=small.generator)
    with pytest.raises(TypeError, match="generator must be a GeneratorConfig"):
        ModelConfig(motion=small.motion, generator=None)


def test_config_to_dict_holds_lists_not_tuples():
    """As its docstring says; to_dict() == json.loads(to_json()) then."""
    import json

    config = ModelConfig.small(32)
    assert config.to_dict()["generator"]["channel_multipliers"] == [1, 2, 2]
    assert config.to_dict() == json.loads(config.to_json())


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size="64"), "image_size must be a positive int"),
    (dict(image_size=80), "image_size must be a multiple of 16 up to 64, or of 32 above, got 80"),
    (dict(image_size=8), "image_size must be a multiple of 16"),
    (dict(width=12), "width must be a multiple of 8"),
    (dict(width=True), "width must be a positive int"),
    (dict(num_kp=0), "num_kp must be a positive int"),
])
def test_small_names_its_own_arguments(kwargs, match):
    """small()'s errors name its arguments, not fields the caller never set (kp_num_blocks, norm_groups)."""
    with pytest.raises(ValueError, match=rf"ModelConfig\.small: {match}"):
        ModelConfig.small(**kwargs)


@pytest.mark.parametrize("size", [16, 48, 96, 160])
def test_small_builds_every_size_it_allows(size):
    assert ModelConfig.small(size, 3, 8).image_size == size


def test_a_motion_estimator_without_occlusion_head_is_refused_by_the_model_config():
    """The generator needs the occlusion map: dm_estimate_occlusion=False is a ValueError naming the
    field at construction, not a TypeError in the first forward."""
    import dataclasses

    small = ModelConfig.small(32, 5, 8)
    motion = dataclasses.replace(small.motion, dm_estimate_occlusion=False)
    with pytest.raises(ValueError, match="dm_estimate_occlusion"):
        ModelConfig(motion=motion, generator=small.generator)


def test_flops_of_a_one_channel_model_and_bad_batches():
    """flops() feeds images of the config's channel count (it built 3-channel ones), and a bad
    `batch` is a ValueError naming it (was a TypeError from torch.zeros)."""
    import dataclasses

    small = ModelConfig.small(32, 3, 8)
    config = ModelConfig(motion=dataclasses.replace(small.motion, num_channels=1),
                         generator=dataclasses.replace(small.generator, image_channels=1))
    model = mcc_fast.Model(config)
    one, two = model.flops()["total"], model.flops(2)["total"]
    assert one > 0 and two == 2 * one
    for batch in (0, -1, True, 2.0, "2"):
        with pytest.raises(ValueError, match="batch"):
            model.flops(batch)


def test_flops_keeps_each_submodules_mode():
    """flops() runs in eval mode and gives every submodule back its own mode (a training model
    with a frozen motion estimator: restoring with train(True) unfroze it)."""
    model = mcc_fast.Model(ModelConfig.small(32, 3, 8)).train()
    model.motion_estimator.eval()
    before = {name: m.training for name, m in model.named_modules()}
    model.flops()
    assert {name: m.training for name, m in model.named_modules()} == before


def test_training_outputs_only_when_asked(small_model):
    source, driving = _pair()
    with torch.no_grad():
        plain = small_model(source, driving, return_all=True)
        train = small_model(source, driving, return_all=True, training=True)
    assert plain.generator.training is None
    t = train.generator.training
    n = len(small_model.config.generator.scales)
    assert len(t.motion_vq_losses) == n and len(t.appearance_vq_losses) == n
    assert t.low_res_frame.shape == source.shape
    assert torch.equal(train.frame, plain.frame)


@pytest.mark.parametrize("bad, match", [
    (lambda s, d: (s[:, :2], d), "source"),
    (lambda s, d: (s, d[:, :, :32]), "driving"),
    (lambda s, d: (s, d[:1]), "batch"),
])
def test_bad_inputs_are_clear_errors(small_model, bad, match):
    source, driving = bad(*_pair())
    with pytest.raises(ValueError, match=match):
        small_model(source, driving)


def test_training_flag_requires_return_all(small_model):
    with pytest.raises(ValueError, match="return_all"):
        small_model(*_pair(), training=True)


@pytest.mark.parametrize("dtype, bound", [(torch.float16, 0.05), (torch.bfloat16, 0.3)])
def test_half_precision_reference_forward(small_model, dtype, bound):
    """A model cast to fp16/bf16 runs end to end (flows stay fp32 inside) and stays near fp32."""
    source, driving = _pair(batch=1)
    half = mcc_fast.Model(small_model.config)
    half.load_state_dict(small_model.state_dict())
    half = half.eval().to(dtype)
    with torch.no_grad():
        expected = small_model(source, driving)
        out = half(source.to(dtype), driving.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.float() - expected).abs().max() < bound * max(1.0, float(expected.abs().max()))
