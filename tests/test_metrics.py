"""Evaluation metrics: known answers for every metric, weight loading, the runner end to end.

Everything runs on CPU with tiny images and narrow random networks saved to temporary
files in the upstream layouts (torchvision VGG16, lpips vgg.pth, arcface_torch IResNet,
TorchScript). The comparison with the `lpips` package needs a GPU machine with lpips.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mcc_fast.evaluation import (METRICS, EvalItem, GaussianStats, HeadPoseEstimator, IdentityEmbedder,
                                 InceptionV3Pool3, LandmarkDetector, MissingWeightsError,
                                 SyntheticPoseOracle, aed, aed_per_frame, akd, akd_per_frame, ard, ard_per_frame,
                                 as_uint8_frames, csim, evaluate_sequences, frechet_distance, l1, l1_per_frame,
                                 load_inception_pool3, load_lpips_vgg, parse_landmarks_json, parse_pose_json, psnr,
                                 psnr_per_frame)
from mcc_fast.evaluation.face_networks import (ArcFaceEmbedder, FanLandmarkDetector, IResNet,
                                               TorchScriptHeadPoseEstimator, TorchScriptIdentityEmbedder,
                                               TorchScriptLandmarkDetector, decode_fan_heatmaps)
from mcc_fast.evaluation.lpips import VGG16_CONV_INDICES
from mcc_fast.evaluation.weights import find_weight_file

# the tests build small TorchScript networks, the format face_alignment ships its FAN in
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

TINY_VGG_WIDTHS = (4, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8)


def _rand_uint8(*shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def _smooth_frames(n=2, size=32, seed=0) -> torch.Tensor:
    """Float frames in [-1, 1] with some structure (a random low-resolution image upsampled)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g) * 1.6 - 0.8
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------- L1 / PSNR

def test_identical_frames_give_l1_zero_and_psnr_inf():
    frames = _rand_uint8(3, 3, 16, 16)
    assert l1_per_frame(frames, frames).tolist() == [0.0, 0.0, 0.0]
    assert psnr_per_frame(frames, frames).tolist() == [math.inf] * 3
    assert l1(frames, frames) == 0.0 and psnr(frames, frames) == math.inf
    as_float = frames.float() / 127.5 - 1.0  # [-1, 1] frames quantise back to the same pixels
    assert l1(as_float, frames) == 0.0 and psnr(as_float, frames) == math.inf


def test_constant_shift_gives_known_l1_and_psnr():
    target = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    generated = target + 10
    assert l1_per_frame(generated, target).tolist() == pytest.approx([10 / 255] * 2, abs=1e-15)
    assert psnr_per_frame(generated, target).tolist() == pytest.approx([20 * math.log10(255 / 10)] * 2, abs=1e-12)
    # the same frames as [-1, 1] floats and as numpy (F, H, W, 3)
    gen_float = generated.float() / 127.5 - 1.0
    target_numpy = target.permute(0, 2, 3, 1).numpy()
    assert l1(gen_float, target_numpy) == pytest.approx(10 / 255, abs=1e-15)
    assert psnr(gen_float, target_numpy) == pytest.approx(20 * math.log10(25.5), abs=1e-12)


def test_mixed_shift_psnr_is_mean_of_per_frame_values():
    target = torch.full((2, 3, 4, 4), 50, dtype=torch.uint8)
    generated = target.clone()
    generated[0] += 5
    generated[1] += 20
    expected = [20 * math.log10(255 / 5), 20 * math.log10(255 / 20)]
    assert psnr(generated, target) == pytest.approx(sum(expected) / 2, abs=1e-12)


def test_float_frames_are_clamped_and_rounded_like_the_official_tensor2img():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.001, 1.0, 2.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert as_uint8_frames(x)[0, 0, 0].tolist() == [0, 0, 128, 128, 255, 255]  # round(127.5) = 128


def test_pixel_metrics_reject_bad_inputs():
    a = _rand_uint8(1, 3, 8, 8)
    with pytest.raises(ValueError, match="generated and target"):
        l1(a, _rand_uint8(1, 3, 8, 9))
    with pytest.raises(TypeError, match="generated must be uint8"):
        psnr(a.to(torch.int16), a)
    with pytest.raises(ValueError, match="target must be frames"):
        l1(a, torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        l1(torch.full((1, 3, 8, 8), float("nan")), a)


# ---------------------------------------------------------------------------- FID

@pytest.mark.parametrize("method", ["scipy", "eigh"])
def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form(method):
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    var1, var2 = rng.uniform(0.1, 3, size=5), rng.uniform(0.1, 3, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    got = frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2), method=method)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-10)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(1.0, 4.0, -2.0, 1.0, method=method) == pytest.approx(9.0 + 1.0, abs=1e-12)
    assert frechet_distance(mu1, np.diag(var1), mu1, np.diag(var1), method=method) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_methods_agree_and_survive_singular_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    args = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(*args, method="scipy") == pytest.approx(frechet_distance(*args, method="eigh"), rel=1e-8)
    low_rank = rng.normal(size=(4, 6))  # 4 samples in 6-D: rank-3 covariance
    singular = (low_rank.mean(0), np.cov(low_rank, rowvar=False), a.mean(0), np.cov(a, rowvar=False))
    for method in ("scipy", "eigh"):
        value = frechet_distance(*singular, method=method)
        assert math.isfinite(value) and value > 0
    with pytest.raises(ValueError, match="sigma2 must be"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="method must be"):
        frechet_distance(0.0, 1.0, 0.0, 1.0, method="magic")


def test_gaussian_stats_match_numpy_and_weights_count_repeats():
    rng = np.random.default_rng(2)
    features = rng.normal(loc=100.0, size=(50, 4))  # a large offset checks the shifted sums
    stats = GaussianStats()
    for chunk in np.array_split(features, 7):
        stats.update(torch.from_numpy(chunk))
    np.testing.assert_allclose(stats.mean(), features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance(), np.cov(features, rowvar=False), rtol=1e-9, atol=1e-12)
    weighted, repeated = GaussianStats(), np.concatenate([features[:5]] * 3 + [features[5:]])
    weighted.update(features[:5], weight=3)
    weighted.update(features[5:])
    np.testing.assert_allclose(weighted.covariance(), np.cov(repeated, rowvar=False), rtol=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        GaussianStats().covariance()


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = InceptionV3Pool3()
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)  # pytorch-fid keeps its fc
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


def test_inception_matches_pytorch_fid_layout_and_loads(inception_file):
    model = load_inception_pool3(inception_file)
    # torchvision's inception_v3 has 27,161,264 parameters; minus AuxLogits (3,326,696) and fc (2,049,000)
    assert sum(p.numel() for p in model.parameters()) == 21_785_568
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["Mixed_7c.branch_pool.bn.running_var"] == (192,)
    model.resize_input = False  # (pytorch-fid resizes to 299x299; 75x75 is the smallest input, and faster)
    features = model(_rand_uint8(2, 3, 75, 75))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert find_weight_file(inception_file.parent, "inception")[1] == inception_file


def test_inception_loader_names_the_file_on_a_wrong_state_dict(tmp_path):
    path = tmp_path / "pt_inception-bad.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="pt_inception-bad.pth.*missing"):
        load_inception_pool3(path)


# ---------------------------------------------------------------------------- LPIPS

def _tiny_lpips_files(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A narrow VGG16 in torchvision's layout and LPIPS lin layers in the lpips layout."""
    g = torch.Generator().manual_seed(seed)
    vgg, in_ch = {}, 3
    for index, width in zip(VGG16_CONV_INDICES, TINY_VGG_WIDTHS):
        vgg[f"features.{index}.weight"] = torch.randn(width, in_ch, 3, 3, generator=g) * (2.0 / (9 * in_ch)) ** 0.5
        vgg[f"features.{index}.bias"] = torch.randn(width, generator=g) * 0.05
        in_ch = width
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files carry the classifier: ignored
    taps = [TINY_VGG_WIDTHS[i] for i in (1, 3, 6, 9, 12)]
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(taps)}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(vgg, folder / "vgg16-397923af.pth")
    torch.save(lins, folder / "vgg.pth")
    return folder / "vgg16-397923af.pth", folder / "vgg.pth"


def _reference_lpips(vgg: dict, lins: dict, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS written out from its definition, straight from the state dicts."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(x):
        x, out = (x - shift) / scale, []
        for i in range(30):
            if f"features.{i}.weight" in vgg:
                x = F.conv2d(x, vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"], padding=1)
            elif i in (4, 9, 16, 23):
                x = F.max_pool2d(x, 2)
            else:
                x = F.relu(x)
            if i in (3, 8, 15, 22, 29):
                out.append(x)
        return out

    total = torch.zeros(a.shape[0])
    for k, (fa, fb) in enumerate(zip(taps(a), taps(b))):
        na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total += F.conv2d((na - nb) ** 2, lins[f"lin{k}.model.1.weight"]).mean((2, 3)).flatten()
    return total


def test_lpips_is_zero_for_identical_images_and_grows_with_noise(tmp_path):
    model = load_lpips_vgg(*_tiny_lpips_files(tmp_path))
    clean = _smooth_frames(2, 32)
    assert model(clean, clean).tolist() == [0.0, 0.0]
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(clean.shape, generator=g)
    distances = [model(clean, (clean + s * noise).clamp(-1, 1)).mean().item() for s in (0.02, 0.1, 0.3, 0.8)]
    assert distances[0] > 0 and distances == sorted(distances), distances
    assert distances[-1] > 5 * distances[0]


def test_lpips_equals_its_definition_and_reads_uint8(tmp_path):
    vgg_path, lin_path = _tiny_lpips_files(tmp_path, seed=1)
    model = load_lpips_vgg(vgg_path, lin_path)
    a, b = _smooth_frames(3, 32, seed=4), _smooth_frames(3, 32, seed=5)
    expected = _reference_lpips(torch.load(vgg_path), torch.load(lin_path), a, b)
    torch.testing.assert_close(model(a, b), expected, rtol=1e-5, atol=1e-7)
    a8, b8 = as_uint8_frames(a), as_uint8_frames(b)
    torch.testing.assert_close(model(a8, b8), model(a8.float() / 127.5 - 1, b8.float() / 127.5 - 1))


def test_lpips_weight_errors_name_the_file(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"vgg16-397923af\.pth"):
        find_weight_file(tmp_path, "vgg16")
    with pytest.raises(MissingWeightsError, match="--weights-dir"):
        find_weight_file(None, "lpips_vgg")
    vgg_path, _ = _tiny_lpips_files(tmp_path)
    wrong = tmp_path / "lpips_vgg_wrong.pth"
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, 64, 1, 1) for k in range(5)}, wrong)
    with pytest.raises(ValueError, match=r"lpips_vgg_wrong\.pth.*lin0\.model\.1\.weight has shape"):
        load_lpips_vgg(vgg_path, wrong)
    broken = tmp_path / "vgg16-broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot read weights file .*vgg16-broken\.pth"):
        load_lpips_vgg(broken, wrong)


@pytest.mark.gpu
def test_lpips_matches_the_lpips_package_on_the_same_weights(tmp_path, monkeypatch):
    lpips = pytest.importorskip("lpips")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full fp32 convs on both sides
    reference = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).cuda().eval()
    # lpips keeps torchvision's `features` indices inside its slices: net.sliceK.<index>.<param>
    vgg = {}
    for name, tensor in reference.net.state_dict().items():
        _, index, param = name.split(".")
        vgg[f"features.{index}.{param}"] = tensor.detach().cpu()
    torch.save(vgg, tmp_path / "vgg16.pth")
    lin_path = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    ours = load_lpips_vgg(tmp_path / "vgg16.pth", lin_path, "cuda")
    a = _smooth_frames(4, 64, seed=6).cuda()
    b = (a + 0.2 * torch.randn_like(a)).clamp(-1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(a, b), reference(a, b).flatten(), rtol=1e-4, atol=1e-6)
        a8, b8 = as_uint8_frames(a), as_uint8_frames(b)
        expected = reference(a8.float() / 127.5 - 1, b8.float() / 127.5 - 1).flatten()
        torch.testing.assert_close(ours(a8, b8), expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- AKD / AED / CSIM / ARD

def test_akd_aed_csim_ard_on_known_adapter_outputs():
    lm_ref = torch.zeros(2, 3, 2)
    lm_gen = lm_ref.clone()
    lm_gen[0, :, 0] = 3.0  # frame 0: every landmark 3 px right
    lm_gen[1, 0] = torch.tensor([3.0, 4.0])  # frame 1: one landmark moved by (3, 4)
    np.testing.assert_allclose(akd_per_frame(lm_gen, lm_ref), [1.5, 7 / 6])  # mean |dx|,|dy| over 6 numbers
    np.testing.assert_allclose(akd_per_frame(lm_gen, lm_ref, norm="l2"), [3.0, 5 / 3])
    assert akd(lm_gen, lm_ref) == pytest.approx((1.5 + 7 / 6) / 2)

    e_ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    e_gen = np.array([[0.0, 5.0], [0.0, 1.0]])  # orthogonal, then parallel (after normalising)
    np.testing.assert_allclose(aed_per_frame(e_gen, e_ref), [2.0, 0.0])
    np.testing.assert_allclose(aed_per_frame(e_gen, e_ref, "l2"), [math.sqrt(2), 0.0])
    np.testing.assert_allclose(aed_per_frame(e_gen, e_ref, "mean_abs"), [1.0, 0.0])
    np.testing.assert_allclose(aed_per_frame(e_gen, e_ref, "l2", normalize=False), [math.sqrt(26), 1.0])
    assert csim(e_gen, e_ref) == pytest.approx(0.5)
    assert csim(e_gen, e_ref[:1]) == pytest.approx(0.0)  # one (source) embedding for every frame

    p_ref = np.array([[10.0, 0.0, 0.0], [170.0, -5.0, 1.0]])
    p_gen = np.array([[13.0, 3.0, -3.0], [-170.0, -5.0, 1.0]])  # 170 -> -170 is 20 degrees
    np.testing.assert_allclose(ard_per_frame(p_gen, p_ref), [3.0, 20.0 / 3])
    assert ard(p_gen, p_ref) == pytest.approx((3.0 + 20.0 / 3) / 2)


def test_frames_without_a_detection_are_skipped():
    lm_ref = np.zeros((3, 2, 2))
    lm_gen = np.ones((3, 2, 2))
    lm_gen[1] = np.nan  # no face in generated frame 1
    lm_ref[2, 0, 0] = np.nan  # no face in reference frame 2
    per_frame = akd_per_frame(lm_gen, lm_ref)
    assert per_frame[0] == 1.0 and np.isnan(per_frame[1:]).all()
    assert akd(lm_gen, lm_ref) == 1.0
    assert math.isnan(aed(np.full((1, 4), np.nan), np.ones((1, 4))))
    with pytest.raises(ValueError, match="landmarks_generated and landmarks_reference"):
        akd(np.zeros((2, 3, 2)), np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="poses must be"):
        ard(np.zeros((2, 2)), np.zeros((2, 2)))


class _PeakHeatmaps(nn.Module):
    """A stand-in FAN: two landmark heatmaps with fixed peaks (x=10, y=20) and (x=40, y=5)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = torch.zeros(x.shape[0], 2, 64, 64)
        maps[:, 0, 20, 10] = 1.0
        maps[:, 0, 20, 11] = 0.5  # right neighbour larger: +0.25 in x
        maps[:, 1, 5, 40] = 1.0
        maps[:, 1, 4, 40] = 0.5  # upper neighbour larger: -0.25 in y
        return [maps * 0.5, maps]  # FAN returns one heatmap per stack: the last is used


def test_fan_heatmap_decoding_and_scaling_to_the_frame(tmp_path):
    points = decode_fan_heatmaps(_PeakHeatmaps()(torch.zeros(1, 3, 8, 8))[-1])
    torch.testing.assert_close(points[0], torch.tensor([[10.75, 20.5], [40.5, 5.25]]))
    path = tmp_path / "2DFAN4-test.zip"
    torch.jit.script(_PeakHeatmaps()).save(str(path))
    detector = FanLandmarkDetector.load(path)
    assert isinstance(detector, LandmarkDetector)
    landmarks = detector.detect(_rand_uint8(2, 3, 128, 128))  # 128 px frames: x2 of the 64 px heatmap
    torch.testing.assert_close(landmarks[1], torch.tensor([[21.5, 41.0], [81.0, 10.5]]))


def test_metric_networks_load_without_drawing_from_the_global_rng(tmp_path, inception_file):
    """Loading LPIPS, the FID Inception and ArcFace leaves torch's global generator alone (their
    random initialisation, replaced by the file's weights, drew from it: a seeded script's later
    draws depended on which metrics it loaded)."""
    network = IResNet(blocks=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem=4, num_features=8)
    torch.save(network.state_dict(), tmp_path / "arcface_tiny.pth")
    loaders = {"lpips": lambda: load_lpips_vgg(*_tiny_lpips_files(tmp_path)),
               "inception": lambda: load_inception_pool3(inception_file),
               "arcface": lambda: ArcFaceEmbedder.load(tmp_path / "arcface_tiny.pth")}
    for name, load in loaders.items():
        state = torch.get_rng_state()
        load()
        assert torch.equal(torch.get_rng_state(), state), name


def test_arcface_iresnet_loads_from_an_arcface_torch_state_dict(tmp_path):
    torch.manual_seed(0)
    network = IResNet(blocks=(1, 2, 1, 1), widths=(4, 6, 8, 8), stem=4, num_features=16)
    state = network.state_dict()
    for key in ("conv1.weight", "prelu.weight", "layer1.0.bn1.weight", "layer1.0.prelu.weight",
                "layer2.1.conv2.weight", "layer3.0.downsample.0.weight", "layer4.0.downsample.1.running_var",
                "bn2.weight", "fc.weight", "features.running_mean"):  # arcface_torch's names
        assert key in state, key
    assert tuple(state["fc.weight"].shape) == (16, 8 * 7 * 7)
    path = tmp_path / "arcface_tiny.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # a DDP prefix is stripped
    embedder = ArcFaceEmbedder.load(path)
    assert isinstance(embedder, IdentityEmbedder)
    frames = _rand_uint8(3, 3, 64, 64)
    embeddings = embedder.embed(frames)
    assert embeddings.shape == (3, 16) and torch.isfinite(embeddings).all()
    torch.testing.assert_close(embedder.embed(frames[:1]), embeddings[:1])
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "arcface_bad.pth")
    with pytest.raises(ValueError, match=r"arcface_bad\.pth"):
        ArcFaceEmbedder.load(tmp_path / "arcface_bad.pth")


class _MeanLandmarks(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = torch.tensor([[4.0, 4.0], [10.0, 6.0], [7.0, 12.0]])
        return base.unsqueeze(0) + 10.0 * x.mean(dim=(1, 2, 3)).view(-1, 1, 1)


class _ColourEmbedding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) + 0.1


class _MeanPose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * 90.0


def _save_torchscript_adapters(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.script(_MeanLandmarks()).save(str(folder / "landmarks.torchscript.pt"))
    torch.jit.script(_ColourEmbedding()).save(str(folder / "identity.torchscript.pt"))
    torch.jit.script(_MeanPose()).save(str(folder / "head_pose.torchscript.pt"))


def test_torchscript_adapters_follow_the_contract(tmp_path):
    _save_torchscript_adapters(tmp_path)
    frames = _rand_uint8(2, 3, 16, 16)
    x = frames.float() / 255
    landmarks = TorchScriptLandmarkDetector.load(tmp_path / "landmarks.torchscript.pt").detect(frames)
    torch.testing.assert_close(landmarks, _MeanLandmarks()(x))
    embeddings = TorchScriptIdentityEmbedder.load(tmp_path / "identity.torchscript.pt").embed(frames)
    assert embeddings.shape == (2, 3)
    poses = TorchScriptHeadPoseEstimator.load(tmp_path / "head_pose.torchscript.pt").estimate(frames)
    torch.testing.assert_close(poses, _MeanPose()(x))
    with pytest.raises(ValueError, match="yaw/pitch/roll"):
        TorchScriptHeadPoseEstimator(torch.jit.script(_MeanLandmarks())).estimate(frames)
    # torch.export programs (.pt2) load through the same adapters
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(_MeanPose(), (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "head_pose.pt2"))
    exported = TorchScriptHeadPoseEstimator.load(tmp_path / "head_pose.pt2")
    torch.testing.assert_close(exported.estimate(_rand_uint8(5, 3, 16, 16)), _MeanPose()(_rand_uint8(5, 3, 16, 16) / 255))


# ---------------------------------------------------------------------------- synthetic head poses

def _synthetic_video(num_frames=6, size=16, seed=0) -> tuple[torch.Tensor, np.ndarray]:
    frames = _rand_uint8(num_frames, 3, size, size, seed=seed)
    t = np.arange(num_frames, dtype=np.float64)
    poses = np.stack([20 * np.sin(t), 10 * np.cos(t), 2 * t], axis=1)
    return frames, poses


def test_pose_json_formats():
    frames_form = {"frames": [{"yaw": 1, "pitch": 2, "roll": 3}, {"head_pose": {"yaw": 4, "pitch": 5}},
                              {"pose": [7, 8, 9]}]}
    np.testing.assert_allclose(parse_pose_json(frames_form), [[1, 2, 3], [4, 5, 0], [7, 8, 9]])
    lists_form = {"head_pose": {"yaw": [math.pi], "pitch": [0.0], "roll": [-math.pi / 2]}, "angle_unit": "radians"}
    np.testing.assert_allclose(parse_pose_json(lists_form), [[180.0, 0.0, -90.0]])
    with pytest.raises(ValueError, match="frame 0: needs 'yaw' and 'pitch'"):
        parse_pose_json({"frames": [{"mouth": 0.5}]})


def test_ard_with_the_synthetic_pose_oracle_has_the_known_answer(tmp_path):
    from mcc_fast.training.data.video_io import write_image

    frames, poses = _synthetic_video()
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(frames.permute(0, 2, 3, 1).numpy()):
        write_image(folder / f"{i:03d}.png", frame)
    sidecar = {"frames": [{"yaw": y, "pitch": p, "roll": r, "mouth_open": 0.1} for y, p, r in poses.tolist()]}
    (tmp_path / "clip.json").write_text(json.dumps(sidecar))
    oracle = SyntheticPoseOracle.load(tmp_path)
    assert len(oracle) == len(frames)
    assert isinstance(oracle, HeadPoseEstimator) and isinstance(oracle, LandmarkDetector)
    # "generated" = the video one frame late: ARD is the mean pose change between frames
    generated = torch.cat([frames[:1], frames[:-1]])
    expected = np.abs(poses[[0] + list(range(len(poses) - 1))] - poses).mean(axis=1)
    np.testing.assert_allclose(ard_per_frame(oracle.estimate(generated), oracle.estimate(frames)), expected)
    unknown = oracle.estimate(_rand_uint8(1, 3, 16, 16, seed=99))
    assert torch.isnan(unknown).all()
    results = evaluate_sequences([("clip", generated, frames)], metrics=["l1", "ard"], head_pose_estimator=oracle,
                                 progress=False)
    assert results["mean"]["ard"] == pytest.approx(expected.mean())


def test_motion_metrics_on_the_synthetic_generator_have_known_answers(tmp_path):
    synth = pytest.importorskip("mcc_fast.training.synth")
    from mcc_fast.training.data.video_io import list_frame_files, read_image

    synth.write_dataset(tmp_path, videos=1, frames=5, size=32, format="png", test_fraction=0.0)
    oracle = SyntheticPoseOracle.load(tmp_path)  # the whole dataset: meta/{split}/*.json + its videos
    meta = json.loads(next((tmp_path / "meta").glob("*/*.json")).read_text())
    frames = np.stack([read_image(f) for f in list_frame_files(tmp_path / meta["video"])])
    poses, landmarks = parse_pose_json(meta), parse_landmarks_json(meta)
    assert len(oracle) == 5 and landmarks.shape == (5, len(meta["frames"][0]["landmarks"]), 2)
    ahead = [1, 2, 3, 4, 4]  # "generated" runs one frame ahead of the ground truth
    results = evaluate_sequences([("clip", frames[ahead], frames)], metrics=["ard", "akd"], progress=False,
                                 head_pose_estimator=oracle, landmark_detector=oracle)
    expected_ard = np.abs(poses[ahead] - poses).mean()
    assert expected_ard > 0 and results["mean"]["ard"] == pytest.approx(expected_ard, rel=1e-12)
    assert results["mean"]["akd"] == pytest.approx(np.abs(landmarks[ahead] - landmarks).mean(), rel=1e-12)


# ---------------------------------------------------------------------------- the runner

class _TinyExtractor:
    """A 4-d FID feature extractor (colour means and spread), to keep the runner test fast."""

    device = torch.device("cpu")

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(1, 2, 3)).unsqueeze(1)], dim=1)


def _unreadable():
    from mcc_fast.training.data.video_io import VideoReadError

    raise VideoReadError("cannot decode broken.mp4")


def test_runner_end_to_end_with_an_unreadable_entry(tmp_path, capsys):
    weights = tmp_path / "weights"
    _tiny_lpips_files(weights)
    _save_torchscript_adapters(weights)
    oracle = SyntheticPoseOracle()
    videos = []
    for seed, count in ((1, 5), (2, 3)):
        truth, poses = _synthetic_video(count, 32, seed)
        oracle.add_video(truth, poses)
        generated = torch.cat([truth[1:], truth[:1]]).float() / 127.5 - 1.0  # float [-1, 1] model output
        videos.append((f"video{seed}", generated, truth))
    items = [videos[0], EvalItem("broken", _unreadable, videos[0][2]), ("empty", None, videos[1][2]), videos[1]]
    output = tmp_path / "out" / "results.json"
    results = evaluate_sequences(items, metrics=METRICS, weights_dir=weights, output=output, batch_size=2,
                                 fid_extractor=_TinyExtractor(), head_pose_estimator=oracle, progress=False)
    err = capsys.readouterr().err
    assert "skipping video 'broken'" in err and "cannot decode broken.mp4" in err and "skipping video 'empty'" in err
    assert results["metrics"] == list(METRICS) and results["skipped_metrics"] == {}
    assert [v["name"] for v in results["videos"]] == ["video1", "video2"]
    assert [f["name"] for f in results["failed"]] == ["broken", "empty"]
    assert results["num_frames"] == 8 and results["frames_used"]["l1"] == 8

    # per-video values are the direct computations; the dataset mean pools all frames
    gen1, truth1 = videos[0][1], videos[0][2]
    assert results["videos"][0]["l1"] == pytest.approx(l1(gen1, truth1), rel=1e-12)
    all_l1 = np.concatenate([l1_per_frame(g, t).numpy() for _, g, t in videos])
    assert results["mean"]["l1"] == pytest.approx(all_l1.mean(), rel=1e-12)
    poses = [_synthetic_video(count, 32, seed)[1] for seed, count in ((1, 5), (2, 3))]
    expected_ard = np.concatenate([np.abs(np.roll(p, -1, axis=0) - p).mean(axis=1) for p in poses]).mean()
    assert results["mean"]["ard"] == pytest.approx(expected_ard)
    for metric in ("lpips", "fid", "akd", "aed", "csim"):
        assert math.isfinite(results["mean"][metric]), metric

    saved = json.loads(output.read_text())
    assert saved["mean"]["l1"] == pytest.approx(results["mean"]["l1"])
    assert saved["failed"][0]["name"] == "broken"
    rows = list(csv.DictReader(output.with_suffix(".csv").open()))
    assert [r["name"] for r in rows] == ["video1", "video2", "broken", "empty", "MEAN"]
    assert rows[2]["status"].startswith("error: generated unreadable")
    assert rows[-1]["status"] == "mean of 2 videos; 2 failed, left out"
    assert float(rows[-1]["l1"]) == pytest.approx(results["mean"]["l1"])
    assert sorted(p.name for p in output.parent.iterdir()) == ["results.csv", "results.json"]  # no temp files left


def test_runner_skips_metrics_whose_weights_are_missing_with_one_line_each(tmp_path, capsys):
    frames = _rand_uint8(2, 3, 16, 16)
    results = evaluate_sequences([("a", frames, frames)], weights_dir=tmp_path, progress=False,
                                 output=tmp_path / "r.json")
    lines = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert len(lines) == 5, lines  # lpips, fid, akd, aed+csim (one network), ard
    assert any("lpips skipped" in line and "vgg16-397923af.pth" in line and "vgg.pth" in line for line in lines)
    assert any("fid skipped" in line and "pt_inception-2015-12-05-6726825d.pth" in line for line in lines)
    assert any("akd skipped" in line and "2DFAN4" in line for line in lines)
    assert any("aed, csim skipped" in line and "arcface_r100.pth" in line for line in lines)
    assert any("ard skipped" in line and "head_pose.torchscript.pt" in line for line in lines)
    assert results["metrics"] == ["l1", "psnr"]
    assert sorted(results["skipped_metrics"]) == ["aed", "akd", "ard", "csim", "fid", "lpips"]
    assert results["mean"] == {"l1": 0.0, "psnr": math.inf}
    saved = json.loads((tmp_path / "r.json").read_text())  # strict JSON: inf as a string
    assert saved["mean"]["psnr"] == "inf" and float(saved["mean"]["psnr"]) == math.inf


def test_runner_source_references_and_argument_errors(tmp_path):
    truth = _rand_uint8(4, 3, 16, 16, seed=5)
    source = truth[0]
    extractor = _TinyExtractor()
    embedder = TorchScriptIdentityEmbedder(torch.jit.script(_ColourEmbedding()))
    res = evaluate_sequences([("v", truth, truth, source)], metrics="csim,fid", fid_reference="source",
                             identity_reference="source", fid_extractor=extractor, identity_embedder=embedder,
                             progress=False)
    emb = embedder.embed(truth)
    expected_csim = F.cosine_similarity(emb, embedder.embed(source[None]).expand_as(emb)).double().mean().item()
    assert res["mean"]["csim"] == pytest.approx(expected_csim, rel=1e-6)
    real, fake = extractor(source[None]).double().numpy(), extractor(truth).double().numpy()
    expected_fid = frechet_distance(fake.mean(0), np.cov(fake, rowvar=False), real[0], np.zeros((4, 4)))
    assert res["mean"]["fid"] == pytest.approx(expected_fid, rel=1e-6)  # the source repeated once per frame

    missing_source = evaluate_sequences([("v", truth, truth)], metrics=["fid"], fid_reference="source",
                                        fid_extractor=extractor, progress=False, log=lambda _: None)
    assert missing_source["failed"][0]["error"].startswith("no source image")
    for bad in (truth[:2], truth[0, :, :8]):  # two source images; one of another size
        wrong_source = evaluate_sequences([("v", truth, truth, bad)], metrics=["fid"], fid_reference="source",
                                          fid_extractor=extractor, progress=False, log=lambda _: None)
        assert wrong_source["failed"][0]["error"].startswith("source must be one image of the frames' size")
    with pytest.raises(ValueError, match="metrics must be"):
        evaluate_sequences([], metrics=["l1", "ssim"])
    with pytest.raises(ValueError, match="fid_reference must be"):
        evaluate_sequences([], fid_reference="driving")
    with pytest.raises(ValueError, match="batch_size must be"):
        evaluate_sequences([], batch_size=0)
    with pytest.raises(FileNotFoundError, match="weights_dir .*nowhere"):
        evaluate_sequences([], weights_dir=tmp_path / "nowhere")
    mismatch = evaluate_sequences([("m", truth, truth[:, :, :8])], metrics=["l1"], progress=False, log=lambda _: None)
    assert "differ in shape" in mismatch["failed"][0]["error"]


def test_runner_reports_items_with_an_error_as_failed():
    frames = _rand_uint8(2, 3, 16, 16)
    messages = []
    results = evaluate_sequences([EvalItem("bad", None, None, error="unreadable or empty video"), ("ok", frames, frames)],
                                 metrics=["l1"], progress=False, log=messages.append)
    assert results["failed"] == [{"name": "bad", "error": "unreadable or empty video"}]
    assert results["num_videos"] == 1 and any("unreadable or empty video" in m for m in messages)


def test_frames_that_are_not_minus_one_to_one_images_are_refused():
    with pytest.raises(ValueError, match=r"float frames must be images in \[-1, 1\]"):
        psnr(torch.full((1, 3, 8, 8), 200.0), torch.full((1, 3, 8, 8), 10.0))
    with pytest.raises(ValueError, match="no frames"):
        l1(torch.zeros(0, 3, 8, 8), torch.zeros(0, 3, 8, 8))
    slightly_out = torch.full((1, 3, 8, 8), 1.2)  # a decoder's raw output: clamped
    assert l1(slightly_out, torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)) == 0.0


def test_runner_skips_a_video_whose_loader_raises_anything():
    good = torch.zeros(2, 3, 8, 8)

    def broken():
        raise KeyError("missing clip")

    results = evaluate_sequences([("ok", good, good), ("bad", broken, good)], metrics="l1", progress=False,
                                 device="cpu", log=lambda _: None)
    assert results["num_videos"] == 1
    assert results["failed"][0]["name"] == "bad" and "KeyError" in results["failed"][0]["error"]


def test_corrupt_or_pickled_weight_files_are_one_clear_error(tmp_path):
    import collections

    from mcc_fast.evaluation.weights import load_state_dict

    truncated = tmp_path / "vgg.pth"
    torch.save({"w": torch.ones(4)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"vgg.pth' \(truncated, corrupt or not a state dict\)") as info:
        load_state_dict(truncated)
    assert "\n" not in str(info.value)
    pickled = tmp_path / "obj.pth"
    torch.save(collections.Counter(a=1), pickled)  # an object, not tensors
    with pytest.raises(ValueError) as info:
        load_state_dict(pickled)
    assert "weights_only=False" not in str(info.value) and "obj.pth" in str(info.value)


class _HalfBlindLandmarks:
    """A landmark detector that finds no face (NaN) in frames whose mean is below mid-grey."""

    def detect(self, frames: torch.Tensor) -> np.ndarray:
        points = np.ones((frames.shape[0], 2, 2))
        points[frames.float().mean(dim=(1, 2, 3)).cpu().numpy() < 127.5] = np.nan
        return points


class _WideExtractor(_TinyExtractor):
    """_TinyExtractor's features repeated to 16 dimensions (more than the 9 test frames)."""

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return super().__call__(frames).repeat(1, 4)


def test_runner_reports_frames_used_per_video_infinite_psnr_and_small_fid_sets(tmp_path):
    dark = torch.full((3, 3, 8, 8), 40, dtype=torch.uint8)
    bright = torch.full((2, 3, 8, 8), 200, dtype=torch.uint8)
    truth = torch.cat([dark, bright])
    generated = truth.clone()
    generated[0] += 1  # one frame differs: the other four are identical (PSNR inf)
    other_truth = torch.full((4, 3, 8, 8), 150, dtype=torch.uint8)
    other = other_truth + torch.arange(1, 5, dtype=torch.uint8).view(4, 1, 1, 1)  # all differ, all have a face
    lines = []
    results = evaluate_sequences([("mixed", generated, truth), ("other", other, other_truth)],
                                 metrics="psnr,akd,fid", landmark_detector=_HalfBlindLandmarks(),
                                 fid_extractor=_WideExtractor(), progress=False, log=lines.append,
                                 output=tmp_path / "r.json")
    mixed, second = results["videos"]
    assert mixed["frames_used"] == {"psnr": 5, "akd": 2} and mixed["akd"] == 0.0
    assert second["frames_used"] == {"psnr": 4, "akd": 4}
    assert results["frames_used"] == {"psnr": 9, "akd": 6, "fid": 9}

    assert results["infinite_frames"] == {"psnr": 4} and results["mean"]["psnr"] == math.inf
    finite = np.concatenate([psnr_per_frame(generated[:1], truth[:1]).numpy(),
                             psnr_per_frame(other, other_truth).numpy()])
    psnr_line = next(w for w in results["warnings"] if w.startswith("psnr:"))
    assert "4 of 9 frames" in psnr_line and f"the other 5 frames is {finite.mean():.4f}" in psnr_line
    fid_line = next(w for w in results["warnings"] if w.startswith("fid from"))
    assert "9 generated frames and 9 ground-truth frames" in fid_line and "16 feature dimensions" in fid_line
    assert [f"evaluate: {w}" for w in results["warnings"]] == lines
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["infinite_frames"] == {"psnr": 4} and saved["warnings"] == results["warnings"]


def test_runner_has_no_warnings_for_finite_values_and_enough_fid_samples():
    frames = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    results = evaluate_sequences([("v", frames, frames.flip(0))], metrics="psnr,fid", fid_extractor=_TinyExtractor(),
                                 progress=False, log=lambda _: None)
    assert results["warnings"] == [] and results["infinite_frames"] == {}
    assert math.isfinite(results["mean"]["psnr"]) and math.isfinite(results["mean"]["fid"])


def test_fid_of_a_single_frame_is_not_computed():
    """A covariance needs two samples: one frame per set gives fid None and says why."""
    frames = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    lines = []
    results = evaluate_sequences([("v", frames, frames.flip(-1))], metrics="fid", fid_extractor=_TinyExtractor(),
                                 progress=False, log=lines.append)
    assert results["mean"]["fid"] is None and results["frames_used"]["fid"] == 1
    assert results["warnings"] == ["fid not computed: it needs at least 2 frames in each set"]


def test_json_keeps_the_sign_of_an_infinity(tmp_path):
    from mcc_fast.evaluation.report import json_safe, write_json

    value = {"a": [-math.inf, math.inf, math.nan, 1.5, None], "b": {"c": -math.inf}}
    assert json_safe(value) == {"a": ["-inf", "inf", "nan", 1.5, None], "b": {"c": "-inf"}}
    saved = json.loads(write_json(tmp_path / "r.json", value).read_text())
    assert float(saved["b"]["c"]) == -math.inf


def test_csv_output_is_written_where_asked(tmp_path):
    """csv_output names the CSV (next to output's JSON, or alone); without it the CSV sits beside the JSON."""
    frames = _rand_uint8(2, 3, 8, 8, seed=3)
    items = [("v", frames, frames.flip(0))]
    evaluate_sequences(items, metrics="l1", output=tmp_path / "a.json", csv_output=tmp_path / "named.csv",
                       progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "named.csv"]
    evaluate_sequences(items, metrics="l1", csv_output=tmp_path / "alone" / "only.csv", progress=False)
    assert [p.name for p in (tmp_path / "alone").iterdir()] == ["only.csv"]
    rows = list(csv.DictReader((tmp_path / "alone" / "only.csv").open()))
    assert [r["name"] for r in rows] == ["v", "MEAN"] and float(rows[0]["l1"]) == float(rows[1]["l1"]) > 0
    evaluate_sequences(items, metrics="l1", output=tmp_path / "b.json", progress=False)
    assert (tmp_path / "b.csv").is_file()


def test_metrics_are_reported_once_each_in_report_order():
    """A metric named twice is computed once; the results follow METRICS' order, not the argument's."""
    frames = _rand_uint8(3, 3, 8, 8, seed=4)
    results = evaluate_sequences([("v", frames, frames.flip(0))], metrics="psnr,l1,l1", progress=False)
    assert results["metrics"] == ["l1", "psnr"] and list(results["mean"]) == ["l1", "psnr"]
    assert results["frames_used"] == {"l1": 3, "psnr": 3} and results["videos"][0]["frames_used"]["l1"] == 3


def test_format_summary_shows_missing_and_infinite_values():
    from mcc_fast.evaluation import format_summary

    results = {"metrics": ["l1", "psnr", "fid"], "mean": {"l1": 0.0123456, "psnr": math.inf, "fid": None}}
    assert format_summary(results).splitlines() == ["l1     0.0123", "psnr   inf", "fid    n/a"]


def test_one_channels_last_numpy_frame_is_a_batch_of_one():
    frame = _rand_uint8(8, 6, 3, seed=6).numpy()  # (H, W, 3), as read_image returns
    out = as_uint8_frames(frame)
    assert out.shape == (1, 3, 8, 6) and torch.equal(out[0], torch.from_numpy(frame).permute(2, 0, 1))
    assert l1(frame, frame) == 0.0


def test_results_written_through_a_symlink_keep_the_link(tmp_path):
    """Like every atomic writer of the package, the results replace the file a link points to."""
    import os

    from mcc_fast.evaluation.report import write_csv, write_json

    frames = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    results = evaluate_sequences([("v", frames, frames)], metrics="l1", progress=False, device="cpu")
    real = tmp_path / "kept" / "r.json"
    real.parent.mkdir()
    real.write_text("{}")
    (tmp_path / "kept" / "r.csv").write_text("old")
    link = tmp_path / "r.json"
    link.symlink_to(real)
    (tmp_path / "r.csv").symlink_to(tmp_path / "kept" / "r.csv")
    assert write_json(link, results) == link
    write_csv(link.with_suffix(".csv"), results)
    assert link.is_symlink() and os.path.samefile(link, real) and json.loads(real.read_text())["mean"]["l1"] == 0
    assert (tmp_path / "r.csv").is_symlink() and (tmp_path / "kept" / "r.csv").read_text().startswith("name,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "r.csv", "r.json"]
    assert sorted(p.name for p in real.parent.iterdir()) == ["r.csv", "r.json"]  # no temporary left
