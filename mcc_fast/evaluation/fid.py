"""FID: Fréchet distance of Gaussians fitted to InceptionV3 pool3 features.

- :func:`frechet_distance`: ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2))`` in float64.
  ``method="scipy"`` is pytorch-fid's computation (``scipy.linalg.sqrtm`` of ``S1 S2``;
  when that is not finite, ``eps`` is added to both diagonals and it is redone; an
  imaginary part of the diagonal above 1e-3 is an error, a smaller one is dropped).
  ``method="eigh"`` needs only numpy: ``tr sqrt(S1 S2)`` is the sum of the square roots
  of the eigenvalues of the symmetric PSD matrix ``sqrt(S1) S2 sqrt(S1)`` (negative
  round-off eigenvalues clipped to 0). ``"auto"`` uses scipy when it imports.
- :class:`GaussianStats`: running mean/covariance of features (float64, shifted sums, so
  features never need to be kept), with per-sample weights.
- :class:`InceptionV3Pool3`: our definition of pytorch-fid's FID InceptionV3 (the
  TensorFlow 2015-12-05 graph) up to the 2048-d final average pool. Its state dict
  layout is pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (torchvision
  ``Inception3`` names; ``fc.*`` is ignored). Input: uint8 (B, 3, H, W) or float in
  [0, 1]; resized bilinearly to 299x299 (``align_corners=False``) and scaled to [-1, 1],
  as pytorch-fid's defaults.

The official MCC code computes FID with pytorch-fid (2048-d, batch 32) between the folder
of *source* images (one copy per generated frame) and the generated frames; the runner
offers that (``fid_reference="source"``) or the ground-truth frames.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .weights import load_state_dict

__all__ = ["frechet_distance", "GaussianStats", "FeatureExtractor", "InceptionV3Pool3", "load_inception_pool3"]


def _sqrtm_trace_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    vals1, vecs1 = np.linalg.eigh(sigma1)
    root1 = (vecs1 * np.sqrt(np.clip(vals1, 0.0, None))) @ vecs1.T
    middle = root1 @ sigma2 @ root1
    middle = (middle + middle.T) / 2.0
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum())


def _scipy_sqrtm(matrix: np.ndarray) -> np.ndarray:
    import warnings

    from scipy import linalg

    with warnings.catch_warnings():  # a singular product warns; the finiteness check below handles it
        warnings.simplefilter("ignore")
        root = linalg.sqrtm(matrix)
    return root[0] if isinstance(root, tuple) else root


def _sqrtm_trace_scipy(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    covmean = _scipy_sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _scipy_sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: sqrtm has an imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "auto") -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float).

    ``mu*``: (D,), ``sigma*``: (D, D) symmetric PSD (a scalar / (1,) works for D = 1).
    ``method``: "auto" | "scipy" | "eigh" (see the module docstring).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of one length, got shapes {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"{name} must be ({dim}, {dim}) to match the means, got {sigma.shape}")
        if not np.isfinite(sigma).all():
            raise ValueError(f"{name} has non-finite entries")
    if not (np.isfinite(mu1).all() and np.isfinite(mu2).all()):
        raise ValueError("mu1 and mu2 must be finite")
    if method == "auto":
        method = "scipy" if importlib.util.find_spec("scipy") is not None else "eigh"
    if method == "scipy":
        tr_covmean = _sqrtm_trace_scipy(sigma1, sigma2, eps)
    elif method == "eigh":
        tr_covmean = _sqrtm_trace_eigh(sigma1, sigma2)
    else:
        raise ValueError(f"method must be 'auto', 'scipy' or 'eigh', got {method!r}")
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


class GaussianStats:
    """Running mean and covariance of (N, D) features, float64, optionally weighted.

    Sums are taken around the first batch's mean (a fixed shift), which keeps the
    covariance as accurate as ``np.cov`` of the stored features. ``covariance()`` is the
    unbiased estimate (divides by ``count - 1``, as ``np.cov``), ``count`` the total weight,
    ``rows`` the number of feature vectors added (distinct samples, whatever their weight) and
    ``dim`` their length D (None before the first).
    """

    def __init__(self):
        self.count = 0.0
        self.rows = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def update(self, features, weight: float = 1.0) -> None:
        """Add features (N, D) (tensor or array), each counted ``weight`` times."""
        if isinstance(features, torch.Tensor):
            features = features.detach().to("cpu", torch.float64).numpy()
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {x.shape}")
        if weight <= 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        if x.shape[0] == 0:
            return
        if self._shift is None:
            self._shift = x.mean(axis=0)
            self._sum = np.zeros(x.shape[1])
            self._outer = np.zeros((x.shape[1], x.shape[1]))
        elif x.shape[1] != self._shift.shape[0]:
            raise ValueError(f"features must have {self._shift.shape[0]} columns like earlier ones, got {x.shape[1]}")
        centred = x - self._shift
        self._sum += weight * centred.sum(axis=0)
        self._outer += weight * (centred.T @ centred)
        self.count += weight * x.shape[0]
        self.rows += x.shape[0]

    @property
    def dim(self) -> int | None:
        return None if self._shift is None else int(self._shift.shape[0])

    def mean(self) -> np.ndarray:
        """Mean (D,) float64."""
        if self._shift is None:
            raise ValueError("no features were added")
        return self._shift + self._sum / self.count

    def covariance(self) -> np.ndarray:
        """Unbiased covariance (D, D) float64; needs a total weight of at least 2."""
        if self._shift is None or self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count:g}")
        centred_mean = self._sum / self.count
        cov = (self._outer - self.count * np.outer(centred_mean, centred_mean)) / (self.count - 1)
        return (cov + cov.T) / 2.0


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the FID pipeline needs: uint8 frames (B, 3, H, W) on ``device`` -> (B, D) float."""

    device: torch.device

    def __call__(self, frames: torch.Tensor) -> torch.Tensor: ...


class _ConvBN(nn.Module):
    """torchvision ``BasicConv2d``: conv (no bias), BatchNorm (eps 1e-3), ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool ignores the padded zeros (pytorch-fid's FID patch).
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _MixedA(nn.Module):
    def __init__(self, in_ch: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _ConvBN(in_ch, 64, 1)
        self.branch5x5_1 = _ConvBN(in_ch, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(in_ch, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_no_pad(x))], 1)


class _MixedB(nn.Module):
    def __init__(self, in_ch: int):
        super().__init__()
        self.branch3x3 = _ConvBN(in_ch, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _MixedC(nn.Module):
    def __init__(self, in_ch: int, c7: int):
        super().__init__()
        self.branch1x1 = _ConvBN(in_ch, 192, 1)
        self.branch7x7_1 = _ConvBN(in_ch, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(in_ch, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_no_pad(x))], 1)


class _MixedD(nn.Module):
    def __init__(self, in_ch: int):
        super().__init__()
        self.branch3x3_1 = _ConvBN(in_ch, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(in_ch, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _MixedE(nn.Module):
    """InceptionE; ``max_pool_branch`` is pytorch-fid's Mixed_7c patch (max, not average)."""

    def __init__(self, in_ch: int, max_pool_branch: bool):
        super().__init__()
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = _ConvBN(in_ch, 320, 1)
        self.branch3x3_1 = _ConvBN(in_ch, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(in_ch, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool_branch else _avg_pool_no_pad(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class InceptionV3Pool3(nn.Module):
    """pytorch-fid's FID InceptionV3 up to pool3: uint8 or [0, 1] (B, 3, H, W) -> float32 (B, 2048).

    Module names follow torchvision's ``Inception3`` (``Conv2d_1a_3x3.conv.weight``,
    ``Mixed_7c.branch_pool.bn.running_var``, ...). Eval mode, no gradients.
    """

    def __init__(self, resize_input: bool = True):
        super().__init__()
        self.resize_input = resize_input
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _MixedA(192, 32)
        self.Mixed_5c = _MixedA(256, 64)
        self.Mixed_5d = _MixedA(288, 64)
        self.Mixed_6a = _MixedB(288)
        self.Mixed_6b = _MixedC(768, 128)
        self.Mixed_6c = _MixedC(768, 160)
        self.Mixed_6d = _MixedC(768, 160)
        self.Mixed_6e = _MixedC(768, 192)
        self.Mixed_7a = _MixedD(768)
        self.Mixed_7b = _MixedE(1280, max_pool_branch=False)
        self.Mixed_7c = _MixedE(2048, max_pool_branch=True)
        self.requires_grad_(False)
        self.eval()

    @property
    def device(self) -> torch.device:
        """Where the weights live (the FID pipeline sends frames there)."""
        return self.Conv2d_1a_3x3.conv.weight.device

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, 3, H, W), uint8 0..255 or float 0..1 -> pool3 features float32 (B, 2048)."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (B, 3, H, W), got shape {tuple(frames.shape)}")
        x = frames.to(torch.float32) / 255.0 if frames.dtype == torch.uint8 else frames.to(torch.float32)
        if self.resize_input:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_inception_pool3(path: str | os.PathLike, device: str | torch.device = "cpu") -> InceptionV3Pool3:
    """:class:`InceptionV3Pool3` with pytorch-fid's weights file (``pt_inception-2015-12-05-*.pth``).

    ``fc.*``, ``AuxLogits.*`` and BatchNorm ``num_batches_tracked`` entries are ignored;
    any other missing or unexpected key, or a shape mismatch, is an error naming the file.
    """
    with torch.random.fork_rng(devices=[]):  # the random init (replaced below) leaves the global RNG alone
        model = InceptionV3Pool3()
    state = load_state_dict(path)
    wanted = model.state_dict()
    ignored = ("fc.", "AuxLogits.")
    extra = sorted(k for k in state if k not in wanted and not k.startswith(ignored)
                   and not k.endswith("num_batches_tracked"))
    missing = sorted(k for k in wanted if k not in state and not k.endswith("num_batches_tracked"))
    if missing or extra:
        raise ValueError(
            f"Inception weights {str(path)!r} do not match pytorch-fid's FID InceptionV3: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}"
        )
    for key, value in wanted.items():
        if key not in state:  # num_batches_tracked: not used in eval mode
            state[key] = value
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(
                f"Inception weights {str(path)!r}: {key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}"
            )
    model.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return model.to(device).eval()
