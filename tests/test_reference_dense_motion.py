"""mcc_fast.reference.dense_motion against straightforward FOMM-style formulations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mcc_fast.reference.dense_motion import (
    blend_motions,
    compose_flow,
    deform_source,
    dense_motion_input,
    inverse_2x2,
    keypoint_heatmaps,
    make_coordinate_grid,
    sparse_motions,
)


def _random_problem(bs=2, num_kp=3, channels=3, h=8, w=10, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    kp_s = torch.rand(bs, num_kp, 2, generator=g, dtype=dtype) * 1.6 - 0.8
    kp_d = torch.rand(bs, num_kp, 2, generator=g, dtype=dtype) * 1.6 - 0.8
    eye = torch.eye(2, dtype=dtype)
    jac_s = eye + 0.3 * torch.randn(bs, num_kp, 2, 2, generator=g, dtype=dtype)
    jac_d = eye + 0.3 * torch.randn(bs, num_kp, 2, 2, generator=g, dtype=dtype)
    source = torch.randn(bs, channels, h, w, generator=g, dtype=dtype)
    return source, kp_s, kp_d, jac_s, jac_d


# ----------------------------------------------------------- FOMM-style formulations
def _fomm_grid(h, w, dtype):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return torch.stack([2 * xs / (w - 1) - 1, 2 * ys / (h - 1) - 1], dim=-1)


def _fomm_heatmaps(kp, h, w, variance=0.01):
    out = torch.empty(*kp.shape[:2], h, w, dtype=kp.dtype)
    grid = _fomm_grid(h, w, kp.dtype)
    for b in range(kp.shape[0]):
        for k in range(kp.shape[1]):
            d2 = ((grid - kp[b, k]) ** 2).sum(-1)
            out[b, k] = torch.exp(-0.5 * d2 / variance)
    return out


def _fomm_sparse(kp_s, kp_d, jac_s, jac_d, h, w):
    bs, num_kp = kp_s.shape[:2]
    grid = _fomm_grid(h, w, kp_s.dtype).view(1, 1, h, w, 2)
    coords = grid - kp_d.view(bs, num_kp, 1, 1, 2)
    if jac_s is not None:
        jac = torch.matmul(jac_s, torch.inverse(jac_d))
        jac = jac.unsqueeze(-3).unsqueeze(-3).repeat(1, 1, h, w, 1, 1)
        coords = torch.matmul(jac, coords.unsqueeze(-1)).squeeze(-1)
    motions = coords + kp_s.view(bs, num_kp, 1, 1, 2)
    return torch.cat([grid.repeat(bs, 1, 1, 1, 1), motions], dim=1)


def _fomm_input(source, kp_s, kp_d, jac_s, jac_d):
    bs, channels, h, w = source.shape
    num_kp = kp_s.shape[1]
    heat = _fomm_heatmaps(kp_d, h, w) - _fomm_heatmaps(kp_s, h, w)
    heat = torch.cat([torch.zeros(bs, 1, h, w, dtype=source.dtype), heat], dim=1)
    sparse = _fomm_sparse(kp_s, kp_d, jac_s, jac_d, h, w)
    groups = []
    for g in range(num_kp + 1):  # one grid_sample per group, on the whole batch
        deformed = F.grid_sample(source, sparse[:, g], align_corners=False)
        groups.append(torch.cat([heat[:, g : g + 1], deformed], dim=1))
    return torch.cat(groups, dim=1)


# ----------------------------------------------------------------------------- tests
def test_coordinate_grid_matches_definition_and_orientation():
    grid = make_coordinate_grid(5, 7, torch.float64)
    assert grid.shape == (5, 7, 2)
    torch.testing.assert_close(grid, _fomm_grid(5, 7, torch.float64))
    assert grid[0, 0].tolist() == [-1.0, -1.0]
    assert grid[-1, -1].tolist() == [1.0, 1.0]
    assert grid[0, -1].tolist() == [1.0, -1.0]  # x runs over the width
    assert make_coordinate_grid(4, 4).dtype == torch.float32


def test_inverse_2x2_matches_torch_inverse():
    _, _, _, jac, _ = _random_problem(bs=4, num_kp=6)
    torch.testing.assert_close(inverse_2x2(jac), torch.inverse(jac))
    jac32 = jac.float()
    torch.testing.assert_close(inverse_2x2(jac32), torch.inverse(jac32), rtol=1e-5, atol=1e-5)
    assert inverse_2x2(torch.eye(2)).tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_inverse_2x2_singular_gives_inf_or_nan_not_a_crash():
    singular = torch.tensor([[[1.0, 2.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[2.0, 0.0], [0.0, 0.5]]])
    inv = inverse_2x2(singular)
    assert not torch.isfinite(inv[0]).all()
    assert torch.isnan(inv[1]).all()  # 0 / 0
    torch.testing.assert_close(inv[2], torch.tensor([[0.5, 0.0], [0.0, 2.0]]))
    # the whole chain keeps going: a singular driving jacobian gives a non-finite sparse motion
    kp = torch.zeros(1, 1, 2)
    motions = sparse_motions(kp, kp, torch.eye(2).view(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), size=(4, 4))
    assert torch.isfinite(motions[:, 0]).all() and not torch.isfinite(motions[:, 1]).all()


def test_keypoint_heatmaps_match_loop():
    _, kp, _, _, _ = _random_problem()
    ours = keypoint_heatmaps(kp, (8, 10))
    torch.testing.assert_close(ours, _fomm_heatmaps(kp, 8, 10))
    assert ours.shape == (2, 3, 8, 10)
    # a keypoint on a pixel centre peaks at exactly 1 there
    peak = keypoint_heatmaps(torch.tensor([[[1.0, -1.0]]]), (5, 5))
    assert peak[0, 0, 0, -1] == 1.0 and peak.max() == 1.0


@pytest.mark.parametrize("with_jacobian", [True, False])
def test_sparse_motions_match_fomm(with_jacobian):
    _, kp_s, kp_d, jac_s, jac_d = _random_problem()
    if not with_jacobian:
        jac_s = jac_d = None
    ours = sparse_motions(kp_s, kp_d, jac_s, jac_d, size=(8, 10))
    assert ours.shape == (2, 4, 8, 10, 2)
    torch.testing.assert_close(ours, _fomm_sparse(kp_s, kp_d, jac_s, jac_d, 8, 10))
    torch.testing.assert_close(ours[:, 0], make_coordinate_grid(8, 10, torch.float64).expand(2, 8, 10, 2))


def test_sparse_motion_maps_driving_keypoint_to_source_keypoint():
    # T_k(kp_d) = kp_s: put the driving keypoint on a pixel centre and read it back.
    kp_d = torch.tensor([[[0.0, 0.5]]], dtype=torch.float64)  # pixel (x=2, y=3) on a 5x5 grid
    kp_s = torch.tensor([[[0.3, -0.2]]], dtype=torch.float64)
    jac = torch.tensor([[[[1.2, 0.1], [-0.3, 0.9]]]], dtype=torch.float64)
    motions = sparse_motions(kp_s, kp_d, jac, jac * 0.5, size=(5, 5))
    torch.testing.assert_close(motions[0, 1, 3, 2], kp_s[0, 0])


def test_dense_motion_input_matches_fomm_channel_order():
    source, kp_s, kp_d, jac_s, jac_d = _random_problem()
    ours = dense_motion_input(source, kp_s, kp_d, jac_s, jac_d)
    assert ours.shape == (2, 4 * 4, 8, 10)
    torch.testing.assert_close(ours, _fomm_input(source, kp_s, kp_d, jac_s, jac_d))
    assert (ours[:, 0] == 0).all()  # background heatmap
    # reusing precomputed driving heatmaps gives the same tensor
    again = dense_motion_input(source, kp_s, kp_d, jac_s, jac_d, driving_heatmaps=keypoint_heatmaps(kp_d, (8, 10)))
    torch.testing.assert_close(again, ours, rtol=0, atol=0)


def test_background_group_is_identity_only_with_align_corners_true():
    source, kp_s, kp_d, jac_s, jac_d = _random_problem()
    exact = dense_motion_input(source, kp_s, kp_d, jac_s, jac_d, align_corners=True)
    torch.testing.assert_close(exact[:, 1:4], source)
    # the official align_corners=False sampling of the identity grid blurs and darkens the border
    official = dense_motion_input(source, kp_s, kp_d, jac_s, jac_d)
    assert not torch.allclose(official[:, 1:4], source)


def test_deform_source_matches_repeated_grid_sample():
    source, kp_s, kp_d, jac_s, jac_d = _random_problem()
    motions = sparse_motions(kp_s, kp_d, jac_s, jac_d, size=(6, 5))  # output size != source size
    ours = deform_source(source, motions)
    bs, groups = motions.shape[:2]
    repeated = source.unsqueeze(1).expand(bs, groups, *source.shape[1:]).reshape(bs * groups, *source.shape[1:])
    expected = F.grid_sample(repeated, motions.reshape(bs * groups, 6, 5, 2), align_corners=False)
    torch.testing.assert_close(ours, expected.view(bs, groups, -1, 6, 5))


def test_compose_flow_matches_fomm():
    _, kp_s, kp_d, jac_s, jac_d = _random_problem()
    logits = torch.randn(2, 4, 8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ours = compose_flow(logits, kp_s, kp_d, jac_s, jac_d)
    mask = F.softmax(logits, dim=1).unsqueeze(2)
    sparse = _fomm_sparse(kp_s, kp_d, jac_s, jac_d, 8, 10).permute(0, 1, 4, 2, 3)
    expected = (sparse * mask).sum(dim=1).permute(0, 2, 3, 1)
    assert ours.shape == (2, 8, 10, 2)
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(blend_motions(torch.softmax(logits, 1), kp_s, kp_d, jac_s, jac_d), ours)
    # all weight on the background: the identity grid
    background = torch.full_like(logits, -1e4)
    background[:, 0] = 0
    torch.testing.assert_close(
        compose_flow(background, kp_s, kp_d, jac_s, jac_d), make_coordinate_grid(8, 10, torch.float64).expand(2, 8, 10, 2)
    )


def test_gradcheck_float64_tiny():
    source, kp_s, kp_d, jac_s, jac_d = _random_problem(bs=1, num_kp=2, channels=2, h=4, w=5)
    logits = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    # grid_sample is piecewise bilinear; random keypoints land inside cells almost surely.
    args = [t.clone().requires_grad_() for t in (source, kp_s, kp_d, jac_s, jac_d)]
    torch.autograd.gradcheck(lambda m: inverse_2x2(m), (args[3],))
    torch.autograd.gradcheck(lambda k: keypoint_heatmaps(k, (4, 5), 0.1), (args[1],))
    torch.autograd.gradcheck(lambda *a: sparse_motions(*a, size=(4, 5)), tuple(args[1:]))
    torch.autograd.gradcheck(lambda *a: dense_motion_input(*a, variance=0.1), tuple(args))
    lg = logits.clone().requires_grad_()
    torch.autograd.gradcheck(compose_flow, (lg, *args[1:]))


def test_float32_agrees_with_float64():
    source, kp_s, kp_d, jac_s, jac_d = _random_problem()
    hi = dense_motion_input(source, kp_s, kp_d, jac_s, jac_d)
    lo = dense_motion_input(*(t.float() for t in (source, kp_s, kp_d, jac_s, jac_d)))
    assert lo.dtype == torch.float32
    torch.testing.assert_close(lo.double(), hi, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------ bad inputs
def test_bad_inputs_name_the_argument():
    source, kp_s, kp_d, jac_s, jac_d = _random_problem()
    with pytest.raises(ValueError, match="kp_source"):
        sparse_motions(kp_s[..., :1], kp_d, size=(4, 4))
    with pytest.raises(ValueError, match="kp_driving"):
        sparse_motions(kp_s, kp_d[:, :2], size=(4, 4))
    with pytest.raises(ValueError, match="jac_source and jac_driving"):
        sparse_motions(kp_s, kp_d, jac_s, None, size=(4, 4))
    with pytest.raises(ValueError, match="jac_driving"):
        sparse_motions(kp_s, kp_d, jac_s, jac_d[:, :, :1], size=(4, 4))
    with pytest.raises(ValueError, match="size"):
        sparse_motions(kp_s, kp_d, size=(1, 4))
    with pytest.raises(ValueError, match="size"):
        keypoint_heatmaps(kp_s, 8)
    with pytest.raises(ValueError, match="variance"):
        keypoint_heatmaps(kp_s, (4, 4), variance=0.0)
    with pytest.raises(ValueError, match="^m must"):
        inverse_2x2(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="^source"):
        dense_motion_input(source[0], kp_s, kp_d, jac_s, jac_d)
    with pytest.raises(ValueError, match="batch"):
        dense_motion_input(source[:1], kp_s, kp_d, jac_s, jac_d)
    with pytest.raises(ValueError, match="driving_heatmaps"):
        dense_motion_input(source, kp_s, kp_d, jac_s, jac_d, driving_heatmaps=torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="mask_logits"):
        compose_flow(torch.zeros(2, 4, 8), kp_s, kp_d, jac_s, jac_d)
    with pytest.raises(ValueError, match="mask"):
        blend_motions(torch.zeros(2, 3, 8, 8), kp_s, kp_d, jac_s, jac_d)  # K+1 = 4 groups expected
    with pytest.raises(ValueError, match="dtype"):
        make_coordinate_grid(4, 4, torch.int64)
    with pytest.raises(ValueError, match="kp"):
        keypoint_heatmaps(torch.zeros(2, 3, 2, dtype=torch.int64), (4, 4))
