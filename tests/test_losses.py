"""Training losses and discriminator (mcc_fast.training.losses): hand-computed values on tiny inputs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mcc_fast.training.losses import (
    ImagePyramid,
    LossWeights,
    PatchDiscriminator,
    PatchDiscriminatorConfig,
    PyramidPerceptualLoss,
    RandomTransform,
    TransformParams,
    Vgg19,
    adaptive_gan_weight,
    convert_official_discriminator_state_dict,
    equivariance_jacobian_loss,
    equivariance_losses,
    equivariance_value_loss,
    hinge_discriminator_loss,
    hinge_fake_loss,
    hinge_generator_loss,
    hinge_real_loss,
    keypoint_distance_loss,
    l1_loss,
    load_vgg19,
    low_resolution_loss,
    motion_reconstruction_loss,
    motion_reconstruction_losses,
    read_vgg19_weights,
    weighted_sum,
)

TINY_VGG = (4, 6, 8, 8, 8)


# --------------------------------------------------------------------------- pixel / motion
def test_l1_hand_value():
    pred = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 0.0], [1.0, 4.0]])
    assert l1_loss(pred, target).item() == pytest.approx((1 + 2 + 2 + 0) / 4)
    with pytest.raises(ValueError, match="prediction"):
        l1_loss(pred, target[:1])


def test_low_resolution_loss_weights():
    frame = torch.full((1, 3, 2, 2), 0.5)
    target = torch.zeros(1, 3, 2, 2)
    out = low_resolution_loss(frame, target, lambda a, b: torch.tensor(2.0), weight=0.5)
    assert out.l1.item() == pytest.approx(0.5 * 0.5)
    assert out.perceptual.item() == pytest.approx(0.5 * 2.0)
    assert out.total.item() == pytest.approx(1.25)
    skipped = low_resolution_loss(frame, target, None)
    assert skipped.perceptual.item() == 0
    # the main output's l1 / perceptual weights scale their low-resolution terms too
    scaled = low_resolution_loss(frame, target, lambda a, b: torch.tensor(2.0), weight=0.5, l1_weight=3.0,
                                 perceptual_weight=0.25)
    assert scaled.l1.item() == pytest.approx(0.5 * 3.0 * 0.5)
    assert scaled.perceptual.item() == pytest.approx(0.5 * 0.25 * 2.0)


def test_motion_reconstruction_hand_value_and_stop_gradient():
    # 2x2 flow: grid is (-1,-1) (1,-1) / (-1,1) (1,1); offsets chosen by hand.
    offsets = torch.tensor([[[[0.1, -0.2], [0.0, 0.4]], [[-0.3, 0.0], [0.2, 0.2]]]])
    grid = torch.tensor([[[[-1.0, -1.0], [1.0, -1.0]], [[-1.0, 1.0], [1.0, 1.0]]]])
    flow = (grid + offsets).requires_grad_()
    recon = torch.zeros(1, 2, 2, 2, requires_grad=True)
    loss = motion_reconstruction_loss(recon, flow, weight=32.0)
    expected = 32 * (0.1 + 0.2 + 0.0 + 0.4 + 0.3 + 0.0 + 0.2 + 0.2) / 8
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert flow.grad is None and recon.grad is not None
    # the multi-scale sum pairs reconstructions[k] with flows[k] and ignores the final flow
    total = motion_reconstruction_losses([recon.detach(), recon.detach()], [flow.detach(), grid, grid], 32.0)
    assert total.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="flows"):
        motion_reconstruction_losses([recon], [flow, flow, flow])


def test_weighted_sum():
    assert weighted_sum([torch.tensor(1.0), torch.tensor(2.5)], 2.0).item() == pytest.approx(7.0)


# --------------------------------------------------------------------------- GAN
def test_hinge_losses_known_values():
    real = torch.tensor([[0.5, 2.0, -1.0]])
    fake = torch.tensor([[-2.0, 0.0, 0.5]])
    assert hinge_real_loss(real).item() == pytest.approx((0.5 + 0 + 2) / 3)
    assert hinge_fake_loss(fake).item() == pytest.approx((0 + 1 + 1.5) / 3)
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(2.5 / 3 + 2.5 / 3)
    assert hinge_generator_loss(torch.tensor([1.0, 2.0, 3.0])).item() == pytest.approx(-2.0)


def test_adaptive_weight_hand_value():
    # y = w x with x = 2, w = 1: rec = 0.25 (y - 1)^2 -> d/dw = 0.5 (y - 1) x = 1; gan = -y -> d/dw = -2.
    w = torch.tensor([1.0], requires_grad=True)
    y = w * 2.0
    rec = (0.25 * (y - 1) ** 2).sum()
    gan = -y.sum()
    weight = adaptive_gan_weight(rec, gan, w)
    assert weight.item() == pytest.approx(0.8 * 1.0 / (2.0 + 1e-4), rel=1e-6)
    assert not weight.requires_grad
    # clamp: a much larger reconstruction gradient saturates at 0.8 * 1
    assert adaptive_gan_weight(100 * rec, gan, w).item() == pytest.approx(0.8)
    # ... at 0.8 * max_ratio for another clamp (LossWeights.gan_max_ratio)
    assert adaptive_gan_weight(100 * rec, gan, w, max_ratio=0.25).item() == pytest.approx(0.8 * 0.25)
    assert adaptive_gan_weight(rec, gan, w, max_ratio=0.25).item() == pytest.approx(0.8 * 0.25)
    assert adaptive_gan_weight(3 * rec, gan, w, max_ratio=4.0).item() == pytest.approx(0.8 * 3 / (2 + 1e-4))


def test_adaptive_weight_toy_network_matches_manual_autograd():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3, padding=1))
    disc = torch.nn.Conv2d(3, 1, 3)
    x, target = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    out = net(x)
    rec = l1_loss(out, target) + 0.5 * (out - target).pow(2).mean()
    gan = hinge_generator_loss(disc(out))
    last = net[-1].weight
    weight = adaptive_gan_weight(rec, gan, last, scale=0.8)
    g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan, last, retain_graph=True)[0]
    manual = 0.8 * torch.clamp(g_rec.norm() / (g_gan.norm() + 1e-4), 0.0, 1.0)
    assert weight.item() == pytest.approx(manual.item(), rel=1e-6)
    (rec + weight * gan).backward()  # the graph was retained
    assert last.grad is not None
    with pytest.raises(ValueError, match="gan_loss"):
        adaptive_gan_weight(rec.detach() + 0 * last.sum(), disc.weight.sum(), last)


# --------------------------------------------------------------------------- discriminator
def test_discriminator_default_shapes_and_parameter_count():
    disc = PatchDiscriminator()
    assert sum(p.numel() for p in disc.parameters()) == 6_960_961  # SPEC: ~7.0M
    assert disc.config.output_size(256) == 14
    with torch.no_grad():
        assert disc(torch.randn(2, 3, 256, 256)).shape == (2, 1, 14, 14)


def test_discriminator_small_config_and_official_keys():
    cfg = PatchDiscriminatorConfig(base_channels=8, num_layers=2)
    disc = PatchDiscriminator(cfg)
    assert disc(torch.randn(3, 3, 32, 32)).shape == (3, 1, cfg.output_size(32), cfg.output_size(32))
    assert cfg.output_size(32) == 6
    # official nn.Sequential indices: 0 conv, 1 act, then (conv, bn, act) per block, then the head conv
    ours = disc.state_dict()
    official_names = {"stem": "main.0", "blocks.0.conv": "main.2", "blocks.0.norm": "main.3",
                      "blocks.1.conv": "main.5", "blocks.1.norm": "main.6", "head": "main.8"}
    official = {}
    for key, value in ours.items():
        module, leaf = key.rsplit(".", 1)
        official["module." + official_names[module] + "." + leaf] = value.clone()
    converted = convert_official_discriminator_state_dict(official, cfg)
    PatchDiscriminator(cfg).load_state_dict(converted, strict=True)
    with pytest.raises(ValueError, match="main.7"):
        convert_official_discriminator_state_dict({"main.7.weight": torch.zeros(1)}, cfg)
    with pytest.raises(ValueError, match="num_layers"):
        PatchDiscriminatorConfig(num_layers=0)


# --------------------------------------------------------------------------- equivariance
def test_identity_transform_leaves_frames_and_keypoints_unchanged():
    transform = RandomTransform.sample(2, TransformParams(sigma_affine=0.0, sigma_tps=0.0, points_tps=5),
                                       torch.Generator().manual_seed(3))
    frame = torch.randn(2, 3, 6, 7)
    assert torch.allclose(transform.transform_frame(frame, align_corners=True), frame, atol=1e-6)
    kp = torch.rand(2, 5, 2) * 2 - 1
    assert torch.allclose(transform.warp_coordinates(kp), kp, atol=1e-7)
    assert torch.allclose(transform.jacobian(kp), torch.eye(2).expand(2, 5, 2, 2))
    jac = torch.eye(2) + 0.1 * torch.randn(2, 5, 2, 2)
    value, jacobian = equivariance_losses({"value": kp, "jacobian": jac}, {"value": kp, "jacobian": jac}, transform)
    assert value.item() == pytest.approx(0.0, abs=1e-7)
    assert jacobian.item() == pytest.approx(0.0, abs=1e-6)


def test_official_align_corners_false_resamples_identity_by_w_over_w_minus_1():
    # identity grid read with align_corners=False: pixel j samples at j*W/(W-1) - 0.5 (reflected)
    transform = RandomTransform(torch.eye(2, 3).unsqueeze(0))
    w = 5
    frame = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, 2, w).contiguous()
    out = transform.transform_frame(frame)  # default: official align_corners=False
    positions = [j * w / (w - 1) - 0.5 for j in range(w)]  # -0.5 .. 4.5: reflection then clip at 0 and 4
    expected = [min(max(p, 0.0), w - 1.0) for p in positions]
    assert torch.allclose(out[0, 0, 0], torch.tensor(expected), atol=1e-6)


def test_known_affine_moves_coordinates_by_hand():
    theta = torch.tensor([[[1.1, 0.2, 0.05], [-0.1, 0.9, -0.2]]])
    transform = RandomTransform(theta)
    coords = torch.tensor([[[0.5, -0.5], [0.0, 0.0]]])
    expected = torch.tensor([[[0.55 - 0.1 + 0.05, -0.05 - 0.45 - 0.2], [0.05, -0.2]]])
    assert torch.allclose(transform.warp_coordinates(coords), expected, atol=1e-6)
    assert torch.allclose(transform.jacobian(coords), theta[:, None, :, :2].expand(1, 2, 2, 2))


def test_tps_term_by_hand():
    # 2x2 control points (-1,-1) (1,-1) (-1,1) (1,1); only the first has a parameter p.
    p = 0.3
    transform = RandomTransform(torch.eye(2, 3).unsqueeze(0), torch.tensor([[p, 0.0, 0.0, 0.0]]), points_tps=2)
    z = torch.tensor([[[0.0, 0.0]]])
    d = 2.0  # L1 distance from (0, 0) to (-1, -1)
    tps = p * d**2 * math.log(d + 1e-6)
    assert torch.allclose(transform.warp_coordinates(z), torch.tensor([[[tps, tps]]]), atol=1e-6)
    # derivative: p (2 d log(d+eps) + d^2/(d+eps)) sign(z - c) with sign(+1, +1), same row for x and y
    g = p * (2 * d * math.log(d + 1e-6) + d**2 / (d + 1e-6))
    expected = torch.tensor([[1 + g, g], [g, 1 + g]])
    assert torch.allclose(transform.jacobian(z)[0, 0], expected, atol=1e-5)


def test_closed_form_jacobian_matches_autograd():
    transform = RandomTransform.sample(3, TransformParams(0.05, 0.05, 5), torch.Generator().manual_seed(1))
    kp = (torch.rand(3, 7, 2, dtype=torch.float64) * 2 - 1).requires_grad_()
    warped = transform.warp_coordinates(kp)
    rows = [torch.autograd.grad(warped[..., i].sum(), kp, retain_graph=True)[0] for i in range(2)]
    autograd_jac = torch.stack(rows, dim=-2)
    assert torch.allclose(transform.jacobian(kp), autograd_jac, atol=1e-10)


def test_reflection_padding_by_hand():
    # translation by +0.5 in x = one pixel for W = 5 with align_corners=True
    transform = RandomTransform(torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]]))
    frame = torch.arange(5, dtype=torch.float32).view(1, 1, 1, 5).expand(1, 1, 2, 5).contiguous()
    out = transform.transform_frame(frame, align_corners=True)
    # pixels 1 2 3 4 then 5 -> reflected about the border pixel 4 -> 3
    assert torch.allclose(out[0, 0], torch.tensor([[1.0, 2.0, 3.0, 4.0, 3.0]] * 2), atol=1e-6)
    # align_corners=False: pixel j samples 1.25 j + 0.75; reflect about 4.5, clip to [0, 4]
    out = transform.transform_frame(frame, align_corners=False)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.75, 2.0, 3.25, 4.0, 3.25]), atol=1e-6)


def test_transform_is_seeded():
    params = TransformParams()
    a = RandomTransform.sample(4, params, torch.Generator().manual_seed(7))
    b = RandomTransform.sample(4, params, torch.Generator().manual_seed(7))
    c = RandomTransform.sample(4, params, torch.Generator().manual_seed(8))
    assert torch.equal(a.theta, b.theta) and torch.equal(a.control_params, b.control_params)
    assert not torch.equal(a.theta, c.theta)
    assert a.control_params.shape == (4, 25)
    # bad parameters are refused when the parameters are made, naming the field
    for bad in ({"points_tps": 1}, {"points_tps": -1}, {"sigma_affine": -0.1}, {"sigma_tps": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TransformParams(**bad)
    assert not TransformParams(points_tps=0).uses_tps and not TransformParams(sigma_tps=None).uses_tps


def test_equivariance_losses_by_hand():
    identity = RandomTransform(torch.eye(2, 3).unsqueeze(0))
    kp_d = torch.tensor([[[0.1, 0.2]]])
    kp_t = torch.zeros(1, 1, 2)
    assert equivariance_value_loss(kp_d, kp_t, identity).item() == pytest.approx(0.15)
    driving = {"value": kp_d, "jacobian": 2 * torch.eye(2).view(1, 1, 2, 2)}
    transformed = {"value": kp_t, "jacobian": torch.eye(2).view(1, 1, 2, 2)}
    # J_d^-1 J_t = 0.5 I -> |I - 0.5 I| = [[0.5, 0], [0, 0.5]] -> mean 0.25
    assert equivariance_jacobian_loss(driving, transformed, identity).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="kp_driving has no jacobian"):
        equivariance_jacobian_loss(kp_d, transformed, identity)


# --------------------------------------------------------------------------- keypoint distance
def test_keypoint_distance_hand_value_and_no_gradient():
    close = torch.tensor([[[0.0, 0.0], [0.1, 0.0]]], requires_grad=True)  # 2 pairs < 0.2 -> 2 * 2 / 4
    far = torch.tensor([[[0.0, 0.0], [0.5, 0.0]]])  # none
    loss = keypoint_distance_loss(close, far)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.count_nonzero(close.grad) == 0  # sign() has zero gradient: the official loss only reports
    assert keypoint_distance_loss({"value": far}, far).item() == 0


# --------------------------------------------------------------------------- VGG and perceptual
def _random_torchvision_vgg19_state() -> dict[str, torch.Tensor]:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
    state, index, in_ch = {}, 0, 3
    gen = torch.Generator().manual_seed(0)
    for v in cfg:
        if v == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(v, in_ch, 3, 3, generator=gen) * (2 / (9 * in_ch)) ** 0.5
        state[f"features.{index}.bias"] = torch.randn(v, generator=gen) * 0.01
        index += 2
        in_ch = v
    state["classifier.0.weight"] = torch.zeros(4, 4)  # ignored
    return state


def _reference_vgg_features(state, image):
    """Direct torchvision-order forward: conv/relu/pool over `features.N` up to relu5_1."""
    x = (image - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    outs = []
    for index in range(29):
        key = f"features.{index}.weight"
        if key in state:
            x = F.relu(F.conv2d(x, state[key], state[f"features.{index}.bias"], padding=1))
            if index in (0, 5, 10, 19, 28):
                outs.append(x)
        elif index in (4, 9, 18, 27):
            x = F.max_pool2d(x, 2)
    return outs


def test_vgg_loads_torchvision_format_file(tmp_path):
    state = _random_torchvision_vgg19_state()
    path = tmp_path / "vgg19-test.pth"
    torch.save(state, path)
    vgg = load_vgg19(path)
    assert all(not p.requires_grad for p in vgg.parameters())
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        ours = vgg(image)
        reference = _reference_vgg_features(state, image)
    assert [tuple(f.shape) for f in ours] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2), (1, 512, 1, 1)]
    for a, b in zip(ours, reference):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    # safetensors with a module. prefix reads the same
    from safetensors.torch import save_file

    st_path = tmp_path / "vgg19.safetensors"
    save_file({"module." + k: v for k, v in state.items()}, str(st_path))
    converted = read_vgg19_weights(st_path)
    assert torch.equal(converted["convs.12.weight"], state["features.28.weight"])
    # an in-memory torchvision-format dict loads too
    with torch.no_grad():
        assert torch.equal(Vgg19(state)(image)[4], ours[4])


def test_vgg_missing_file_and_bad_state(tmp_path):
    missing = tmp_path / "nope" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(FileNotFoundError, match="vgg19-dcbb9e9d.pth"):
        load_vgg19(missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        Vgg19(missing)
    bad = _random_torchvision_vgg19_state()
    del bad["features.28.bias"]
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(ValueError, match=r"features\.28\.bias"):
        load_vgg19(path)
    with pytest.raises(ValueError, match="random_init_ok"):
        Vgg19()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ValueError, match="truncated.pth"):
        load_vgg19(truncated)
    text = tmp_path / "notes.pth"  # torch.load's error is a bare KeyError(174812789) here
    text.write_bytes(b"junk\n")
    with pytest.raises(ValueError, match=r"notes\.pth': not a readable PyTorch file \(truncated or foreign\?\): "
                                         r"KeyError"):
        load_vgg19(text)


def test_vgg_signed_input_flag():
    official = Vgg19(random_init_ok=True, stage_channels=TINY_VGG)
    signed = Vgg19(random_init_ok=True, signed_input=True, stage_channels=TINY_VGG)
    signed.load_state_dict(official.state_dict())
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        for a, b in zip(signed(image), official((image + 1) / 2)):
            assert torch.allclose(a, b)


def test_image_pyramid_shapes_and_normalised_kernel():
    image = torch.ones(1, 3, 32, 32)
    levels = ImagePyramid()(image)
    assert [lvl.shape[-1] for lvl in levels] == [32, 16, 8, 4]
    assert levels[0] is image
    # kernel 5x5 at scale 0.5 sums to 1: away from the zero-padded border a constant stays constant
    assert torch.allclose(levels[1][..., 1:-1, 1:-1], torch.ones(1, 3, 14, 14), atol=1e-6)


def test_perceptual_loss_tiny_random_vgg():
    torch.manual_seed(0)
    vgg = Vgg19(random_init_ok=True, stage_channels=TINY_VGG)
    loss_fn = PyramidPerceptualLoss(vgg, scales=(1, 0.5), layer_weights=(1, 2, 0, 0, 0.5))
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loss_fn(target.clone(), target).item() == 0.0
    prediction = (target + 0.3 * torch.randn_like(target)).requires_grad_()
    target.requires_grad_()
    loss = loss_fn(prediction, target)
    assert loss.item() > 0
    # direct formula: plain sum over scales and layers of w_l * mean |f(p) - f(t)|
    with torch.no_grad():
        expected = 0.0
        for p_img, t_img in zip(ImagePyramid((1, 0.5))(prediction), ImagePyramid((1, 0.5))(target)):
            for w, a, b in zip((1, 2, 0, 0, 0.5), vgg(p_img), vgg(t_img)):
                expected += w * (a - b).abs().mean().item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    assert target.grad is None  # the target branch is detached


# --------------------------------------------------------------------------- weights
def test_loss_weights_defaults_and_start_iterations():
    weights = LossWeights()
    assert (weights.l1, weights.perceptual, weights.low_res, weights.gan) == (1.0, 1.0, 0.5, 0.8)
    assert (weights.motion_vq, weights.appearance_vq, weights.motion_recon) == (1.0, 1.0, 32.0)
    assert (weights.equivariance_value, weights.equivariance_jacobian, weights.keypoint_distance) == (1.0, 1.0, 1.0)
    assert not weights.is_active("gan", 5001) and weights.is_active("gan", 5002)
    assert weights.weight_at("gan", 1) == 0.0 and weights.weight_at("l1", 1) == 1.0
    custom = LossWeights.from_dict({"motion_recon": 16, "start_iters": {"keypoint_distance": 10}})
    assert custom.motion_recon == 16.0 and custom.start_iter("gan") == 5001
    assert not custom.is_active("keypoint_distance", 10) and custom.is_active("keypoint_distance", 11)
    assert LossWeights.from_dict(custom.to_dict()) == custom
    with pytest.raises(ValueError, match="unknown loss weight keys"):
        LossWeights.from_dict({"l2": 1.0})
    with pytest.raises(ValueError, match="start_iters"):
        LossWeights(start_iters={"vgg": 3})
    with pytest.raises(ValueError, match="gan"):
        LossWeights(gan=-1)
