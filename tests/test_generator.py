"""Generator tests: official-model parity (golden fixture), key conversion, small configs, errors."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

import golden
from mcc_fast.model.generator.codebook import Codebook, quantize_nearest
from mcc_fast.model.generator.fusion import FusionBlock
from mcc_fast.model.generator.motion_compensation import MotionCompensation
from mcc_fast.model.generator import (
    CODEBOOK_ALLOCATIONS,
    Generator,
    GeneratorConfig,
    GeneratorOutput,
    convert_generator_state_dict,
    official_key_map,
)

SCALES = range(4)
NEAR_TIE_GAP = 1e-2
DM_FIELDS = ("deformation", "occlusion_map", "driving_kp_heatmap")


# ---------------------------------------------------------------------------------------
# Parity with the official model (one full-size forward call, shared by every test)
# ---------------------------------------------------------------------------------------


def recorded_dm() -> dict[str, torch.Tensor]:
    rec = golden.recorded()
    return {name: rec[f"infer.dm.{name}"].float() for name in DM_FIELDS}


@pytest.fixture(scope="module")
def official_generator() -> Generator:
    model = Generator().eval()
    model.load_state_dict(convert_generator_state_dict(golden.official_state_dicts()[1]), strict=True)
    return model


@pytest.fixture(scope="module")
def parity_output(official_generator: Generator) -> GeneratorOutput:
    """Inference and training outputs in one call (the frame is the same in both official calls)."""
    source, driving = golden.inputs()
    with torch.no_grad():
        torch.manual_seed(0)
        return official_generator(source, recorded_dm(), return_all=True, driving=driving)


def test_parameter_count_and_keys() -> None:
    model = Generator()
    assert sum(p.numel() for p in model.parameters()) == 30_118_854
    official = golden.official_state_dicts()[1]
    key_map = official_key_map()
    assert len(key_map) == 472
    assert set(key_map) == set(official)
    assert set(key_map.values()) == set(model.state_dict())
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert all(shapes[ours] == tuple(official[k].shape) for k, ours in key_map.items())


def test_frame(parity_output: GeneratorOutput) -> None:
    golden.assert_close_to_recorded("infer.out", parity_output.frame)


@pytest.mark.parametrize("i", range(5))
def test_flows(parity_output: GeneratorOutput, i: int) -> None:
    golden.assert_close_to_recorded(f"infer.deformation_list.{i}", parity_output.flows[i])


@pytest.mark.parametrize("i", SCALES)
def test_flow_residuals(parity_output: GeneratorOutput, i: int) -> None:
    golden.assert_close_to_recorded(f"infer.res_deform_list.{i}", parity_output.flow_residuals[i])


@pytest.mark.parametrize("i", SCALES)
def test_occlusions(parity_output: GeneratorOutput, i: int) -> None:
    golden.assert_close_to_recorded(f"infer.out_occ.{i}", parity_output.occlusions[i])


@pytest.mark.parametrize("i", SCALES)
def test_appearance_token_masks_exact(parity_output: GeneratorOutput, i: int) -> None:
    ours = parity_output.appearance_token_masks[i]
    assert ours.dtype == torch.bool
    assert torch.equal(ours.to(torch.uint8), golden.recorded()[f"infer.app_token_mask.{i}"])


@pytest.mark.parametrize("i", SCALES)
@pytest.mark.parametrize("kind", ["motion", "app"])
def test_vq_losses(parity_output: GeneratorOutput, kind: str, i: int) -> None:
    training = parity_output.training
    losses = training.motion_vq_losses if kind == "motion" else training.appearance_vq_losses
    golden.assert_close_to_recorded(f"train.codebook_loss_{kind}.{i}", losses[i])


def _index_mismatch(kind: str, i: int, ours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rec = golden.recorded()
    reference = rec[f"train.{kind}_code_index.{i}"].long()
    gap = rec[f"train.{kind}_code_gap.{i}"]
    assert ours.shape == reference.shape and ours.dtype == torch.int64
    return ours != reference, gap


@pytest.mark.parametrize("i", SCALES)
@pytest.mark.parametrize("kind", ["motion", "app"])
def test_code_indices(parity_output: GeneratorOutput, kind: str, i: int) -> None:
    training = parity_output.training
    ours = (training.motion_code_indices if kind == "motion" else training.appearance_code_indices)[i]
    mismatch, gap = _index_mismatch(kind, i, ours)
    decisive = gap >= NEAR_TIE_GAP
    assert not bool((mismatch & decisive).any()), f"{kind} scale {i}: index differs on a decisive token"


@pytest.mark.parametrize("i", SCALES)
def test_motion_reconstructions(parity_output: GeneratorOutput, i: int) -> None:
    name = f"train.motion_recon.{i}"
    reference = golden.recorded()[name].float()
    ours = parity_output.training.motion_reconstructions[i]
    assert ours.shape == reference.shape
    mismatch, _ = _index_mismatch("motion", i, parity_output.training.motion_code_indices[i])
    tol = golden.tolerance(reference)
    compared = 0
    for b in range(reference.shape[0]):
        if bool(mismatch[b].any()):  # differs only at near-ties (test_code_indices): skip, per README
            continue
        compared += 1
        diff = float((ours[b] - reference[b]).abs().max())
        assert diff <= tol, f"{name}[{b}]: max abs diff {diff:.3e} > {tol:.3e}"
    assert compared >= 1


def test_low_res_frame(parity_output: GeneratorOutput) -> None:
    golden.assert_close_to_recorded("train.out_lr.0", parity_output.training.low_res_frame)


# ---------------------------------------------------------------------------------------
# Key conversion
# ---------------------------------------------------------------------------------------


def test_converter_accepts_checkpoint_wrappers() -> None:
    official = golden.official_state_dicts()[1]
    prefixed = {f"module.{k}": v for k, v in official.items()}
    converted = convert_generator_state_dict({"params": {}, "params_ema": prefixed})
    assert set(converted) == set(Generator().state_dict())
    assert converted["motion.codebook.weight"] is official["quantize_motion.embedding.weight"]


def test_converter_names_missing_and_unexpected_keys() -> None:
    official = dict(golden.official_state_dicts()[1])
    official.pop("refine.convo2.bias")
    official["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"1 missing key\(s\): refine\.convo2\.bias.*1 unexpected key\(s\): extra\.weight"):
        convert_generator_state_dict(official)


def test_converter_names_shape_mismatch() -> None:
    official = dict(golden.official_state_dicts()[1])
    official["driving_kp_enc.weight"] = torch.zeros(32, 10, 1, 1)
    with pytest.raises(ValueError, match=r"driving_kp_enc\.weight \(32, 10, 1, 1\)"):
        convert_generator_state_dict(official)


# ---------------------------------------------------------------------------------------
# Small configs
# ---------------------------------------------------------------------------------------


def small_config(**overrides) -> GeneratorConfig:
    base = dict(image_size=64, base_channels=16, channel_multipliers=(1, 2, 2, 4), num_keypoints=5,
                motion_codebook_size=64, motion_dim=16, appearance_codebook_size=32, appearance_dim=32,
                num_heads=4, updater_width=16, norm_groups=8)
    base.update(overrides)
    return GeneratorConfig(**base)


def make_inputs(config: GeneratorConfig, batch: int = 2, seed: int = 0):
    """(source, driving, dm) with a flow near identity that stays mostly inside the frame."""
    gen = torch.Generator().manual_seed(seed)
    s, f = config.image_size, config.flow_size
    source = torch.rand(batch, config.image_channels, s, s, generator=gen) * 2 - 1
    driving = torch.rand(batch, config.image_channels, s, s, generator=gen) * 2 - 1
    line = torch.linspace(-1, 1, f)
    identity = torch.stack((line.view(1, f).expand(f, f), line.view(f, 1).expand(f, f)), dim=-1)
    deformation = 0.9 * identity.expand(batch, f, f, 2) + 0.05 * torch.randn(batch, f, f, 2, generator=gen)
    dm = {
        "deformation": deformation.contiguous(),
        "occlusion_map": torch.sigmoid(torch.randn(batch, 1, f, f, generator=gen)),
        "driving_kp_heatmap": torch.rand(batch, config.num_keypoints, f, f, generator=gen),
    }
    return source, driving, dm


def randomise(model: Generator, seed: int = 0) -> Generator:
    """Give the zero-initialised position embeddings and the tiny codebooks visible values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (model.motion, model.appearance):
            module.position_embedding.copy_(0.1 * torch.randn(module.position_embedding.shape, generator=gen))
            module.codebook.weight.copy_(torch.randn(module.codebook.weight.shape, generator=gen))
    return model


def test_default_config_is_the_paper_model() -> None:
    cfg = GeneratorConfig()
    assert (cfg.token_grid, cfg.flow_size, cfg.displacement_scale) == (32, 64, 31.5)
    assert cfg.scales == (32, 64, 128, 256)
    assert cfg.scale_channels == (256, 128, 128, 64)
    assert [cfg.code_range(1024, k) for k in SCALES] == [(0, 256), (0, 512), (0, 768), (0, 1024)]


@pytest.mark.parametrize("allocation, ranges", [
    ("prefix", [(0, 256), (0, 512), (0, 768), (0, 1024)]),
    ("disjoint", [(0, 256), (256, 512), (512, 768), (768, 1024)]),
    ("shared", [(0, 1024)] * 4),
])
def test_code_ranges_of_each_allocation(allocation: str, ranges: list) -> None:
    """The rows of each scale, as the config docstring lists them (the forward tests check the
    indices against code_range itself, so a wrong range would pass them)."""
    assert [GeneratorConfig(codebook_allocation=allocation).code_range(1024, k) for k in SCALES] == ranges


@pytest.mark.parametrize("allocation", CODEBOOK_ALLOCATIONS)
def test_small_forward_backward(allocation: str) -> None:
    cfg = small_config(codebook_allocation=allocation)
    torch.manual_seed(0)
    model = randomise(Generator(cfg)).train()
    source, driving, dm = make_inputs(cfg)
    out = model(source, dm, return_all=True, driving=driving)
    b, t, f = 2, cfg.token_grid, cfg.flow_size
    assert out.frame.shape == (b, 3, 64, 64)
    assert len(out.flows) == 5 and all(x.shape == (b, f, f, 2) for x in out.flows)
    assert all(x.shape == (b, 1, f, f) for x in out.occlusions)
    assert all(x.shape == (b, t * t) and x.dtype == torch.bool for x in out.appearance_token_masks)
    tr = out.training
    assert tr.low_res_frame.shape == out.frame.shape
    assert all(x.shape == (b, f, f, 2) for x in tr.motion_reconstructions)
    for k in SCALES:
        for size, indices in ((64, tr.motion_code_indices[k]), (32, tr.appearance_code_indices[k])):
            start, stop = cfg.code_range(size, k)
            assert indices.shape == (b, t, t)
            assert int(indices.min()) >= start and int(indices.max()) < stop
    loss = (out.frame.abs().mean() + tr.low_res_frame.abs().mean() + sum(tr.motion_vq_losses)
            + sum(tr.appearance_vq_losses) + sum(r.abs().mean() for r in tr.motion_reconstructions))
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(param.grad).all(), f"non-finite gradient for {name}"


@pytest.mark.parametrize("allocation", CODEBOOK_ALLOCATIONS)
def test_allocation_decides_which_rows_a_scale_attends(allocation: str) -> None:
    """Changing the motion codes after the first quarter leaves scale 0's flow unchanged
    unless scale 0 attends to every code ("shared")."""
    cfg = small_config(codebook_allocation=allocation)
    torch.manual_seed(0)
    model = randomise(Generator(cfg)).eval()
    source, _, dm = make_inputs(cfg)
    quarter = cfg.motion_codebook_size // 4
    with torch.no_grad():
        before = model(source, dm, return_all=True)
        model.motion.codebook.weight[quarter:] += 1.0
        after = model(source, dm, return_all=True)
    same_scale0 = torch.equal(before.flows[1], after.flows[1])
    assert same_scale0 == (allocation != "shared")
    assert not torch.equal(before.frame, after.frame)


def test_cached_source_features_and_plain_call_match() -> None:
    cfg = small_config(image_size=128, num_scales=3, motion_codebook_size=48, appearance_codebook_size=24)
    torch.manual_seed(0)
    model = randomise(Generator(cfg)).eval()
    source, driving, dm = make_inputs(cfg)
    with torch.no_grad():
        frame = model(source, dm)
        features = model.encode_source(source)
        rendered = model.render(features, SimpleNamespace(**dm), return_all=True, driving=driving)
    assert frame.shape == (2, 3, 128, 128)
    assert len(features.per_scale) == 3 and len(rendered.flows) == 4
    assert torch.equal(frame, rendered.frame)
    assert len(rendered.training.motion_vq_losses) == 3


def test_fusion_weight_scales_the_modulation() -> None:
    """x + w (x scale(h) + shift(h)) + skip(compensated), as the fusion docstring says, with
    the config's fusion_weight reaching every fusion block."""
    torch.manual_seed(0)
    block = FusionBlock(16, 8).eval()
    compensated, x = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        h = block.merge(torch.cat((compensated, x), dim=1))
        expected = x + 0.25 * (x * block.scale(h) + block.shift(h)) + block.skip(compensated)
        torch.testing.assert_close(block(compensated, x, 0.25), expected)

    cfg = small_config()
    model = randomise(Generator(cfg)).eval()
    half = Generator(dataclasses.replace(cfg, fusion_weight=0.5)).eval()
    half.load_state_dict(model.state_dict())
    seen = []
    for module in half.fusions.values():
        original = module.forward
        module.forward = lambda c, x, w=1.0, f=original: seen.append(w) or f(c, x, w)
    source, _, dm = make_inputs(cfg)
    with torch.no_grad():
        assert not torch.equal(model(source, dm), half(source, dm))
    assert seen == [0.5] * (len(cfg.scales) - 1)


@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_vq_loss_weighs_the_commitment_by_beta(beta: float) -> None:
    """loss = beta mean((sg(z_q) - z)^2) + mean((z_q - sg(z))^2): both terms have the value
    mean((z_q - z)^2), so the loss is (1 + beta) times it, for the beta the caller passes."""
    cfg = small_config()
    torch.manual_seed(0)
    codebook = Codebook(8, 4, cfg)
    z = torch.randn(2, 4, 3, 3)
    q = quantize_nearest(z, codebook, 0, beta)
    chosen = codebook.weight[q.indices].permute(0, 3, 1, 2)
    torch.testing.assert_close(q.loss, (1 + beta) * torch.mean((chosen - z) ** 2))


def test_quantized_codes_pass_the_gradient_straight_through() -> None:
    """quantized has the codes' values and z's gradient (identity), so the motion reconstruction
    trains the displacement embedding."""
    torch.manual_seed(0)
    codebook = Codebook(8, 4, small_config())
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    q = quantize_nearest(z, codebook, 0, 0.25)
    torch.testing.assert_close(q.quantized, codebook.weight[q.indices].permute(0, 3, 1, 2))
    weights = torch.randn(2, 4, 3, 3)
    (q.quantized * weights).sum().backward()
    torch.testing.assert_close(z.grad, weights)


def test_motion_tokens_see_a_detached_displacement() -> None:
    """The motion embedding reads the displacement detached (module docstring, step 2): no
    gradient reaches the flow through the motion tokens; the query still gets one."""
    cfg = small_config()
    torch.manual_seed(0)
    motion = MotionCompensation(cfg)
    f, t = cfg.flow_size, cfg.token_grid
    displacement = torch.randn(2, f, f, 2, requires_grad=True)
    query = torch.randn(2, cfg.motion_dim, t, t, requires_grad=True)
    motion(1, displacement, query).tokens.square().sum().backward()
    assert displacement.grad is None
    assert query.grad is not None and query.grad.abs().sum() > 0


def test_redundant_warp_changes_nothing() -> None:
    cfg = small_config()
    torch.manual_seed(0)
    model = randomise(Generator(cfg)).eval()
    lean = Generator(dataclasses.replace(cfg, redundant_detached_warp=False)).eval()
    lean.load_state_dict(model.state_dict())
    source, _, dm = make_inputs(cfg)
    with torch.no_grad():
        assert torch.equal(model(source, dm), lean(source, dm))


def test_all_tokens_masked_gives_nan_like_the_official() -> None:
    """nn.MultiheadAttention with every key masked returns NaN: the official frame for that
    sample is NaN. The reference reproduces it; the other sample is unaffected."""
    cfg = small_config()
    torch.manual_seed(0)
    model = randomise(Generator(cfg)).eval()
    source, _, dm = make_inputs(cfg)
    dm["deformation"][1] = 5.0  # every position of sample 1 samples far outside the frame
    with torch.no_grad():
        out = model(source, dm, return_all=True)
    assert bool(out.appearance_token_masks[0][1].all())
    assert not bool(out.appearance_token_masks[0][0].all())
    assert torch.isnan(out.frame[1]).all()
    assert torch.isfinite(out.frame[0]).all()


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(image_size=100), "image_size"),
        (dict(channel_multipliers=(4,)), "channel_multipliers"),
        (dict(num_scales=5), "num_scales"),
        (dict(codebook_allocation="random"), "codebook_allocation"),
        (dict(num_heads=3), "motion_dim"),
        (dict(norm_groups=32, base_channels=16), "norm_groups"),
        (dict(motion_dim=12), "norm_groups"),  # the levels divide by 8 groups, the motion width does not
        (dict(motion_codebook_size=63), "motion_codebook_size"),
        (dict(appearance_codebook_size=30), "appearance_codebook_size"),
        (dict(updater_width=10), "updater_width"),
        (dict(fusion_weight=0.0), "fusion_weight"),
        (dict(beta=-1.0), "beta"),
        (dict(num_keypoints=0), "num_keypoints"),
        # bools are not numbers here, and a bool field takes only a bool ("false" is truthy)
        (dict(beta=True), "beta"),
        (dict(fusion_weight=True), "fusion_weight"),
        (dict(num_scales=True), "num_scales"),
        (dict(channel_multipliers=(True, 2, 2)), "channel_multipliers"),
        (dict(channel_multipliers=3), "channel_multipliers"),
        (dict(redundant_detached_warp="false"), "redundant_detached_warp"),
        (dict(redundant_detached_warp=0), "redundant_detached_warp"),
    ],
)
def test_config_validation_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"GeneratorConfig\.{field}"):
        small_config(**overrides)


@pytest.fixture(scope="module")
def small_model() -> Generator:
    torch.manual_seed(0)
    return Generator(small_config()).eval()


def test_bad_source_shape(small_model: Generator) -> None:
    cfg = small_model.config
    source, _, dm = make_inputs(cfg)
    with pytest.raises(ValueError, match=r"source must have shape \(B, 3, 64, 64\)"):
        small_model(source[:, :, :32, :32], dm)
    with pytest.raises(ValueError, match="source must have shape"):
        small_model(source[:, :1], dm)
    with pytest.raises(TypeError, match="source must be a floating tensor"):  # as in the model and the ops
        small_model((source > 0).to(torch.uint8), dm)


def test_bad_dense_motion(small_model: Generator) -> None:
    cfg = small_model.config
    source, driving, dm = make_inputs(cfg)
    with pytest.raises(ValueError, match=r"dm\['deformation'\] has batch 1 but the source has batch 2"):
        small_model(source, {**dm, "deformation": dm["deformation"][:1]})
    with pytest.raises(ValueError, match=r"dm\['occlusion_map'\] must have shape"):
        small_model(source, {**dm, "occlusion_map": dm["occlusion_map"][:, :, :8]})
    with pytest.raises(ValueError, match=r"dm\['driving_kp_heatmap'\] must have shape \(B, 5"):
        small_model(source, {**dm, "driving_kp_heatmap": dm["driving_kp_heatmap"][:, :3]})
    with pytest.raises(KeyError, match="occlusion_map"):
        small_model(source, {k: v for k, v in dm.items() if k != "occlusion_map"})


def test_bad_driving(small_model: Generator) -> None:
    source, driving, dm = make_inputs(small_model.config)
    with pytest.raises(ValueError, match="driving has batch 1"):
        small_model(source, dm, return_all=True, driving=driving[:1])
    with pytest.raises(ValueError, match="driving must have shape"):
        small_model(source, dm, return_all=True, driving=driving[:, :, :32])
    with pytest.raises(ValueError, match="return_all=True"):
        small_model(source, dm, driving=driving)
