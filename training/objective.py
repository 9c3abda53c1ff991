"""The training objective: which loss terms run at an iteration, with which weights.

`TrainingObjective.generator_terms` turns one forward of the model (plus the keypoints of the
randomly transformed driving frame) into the weighted terms of the official objective
(`appmotioncomp_model.py`, SPEC "Training"):

    l1                      w_l1 * L1(out, driving)
    perceptual              w_p * pyramid perceptual(out, driving)
    low_res_l1 / _perceptual  w_low_res * (w_l1 * L1 + w_p * P) of the low-resolution frame
    gan                     d_weight * -mean(D(out)),  d_weight = w_gan * clamp(|g_rec| / (|g_gan| + 1e-4), 0, 1)
                            at the decoder's last conv (rec = l1 + perceptual terms), or w_gan if not adaptive
    motion_vq, appearance_vq  w * sum over scales of the VQ losses
    motion_recon            w (32) * sum_k L1(m_recon_k, sg(flow_k - grid))
    equivariance_value / _jacobian  FOMM equivariance losses (w 1 each)
    keypoint_distance       w * (term(kp_source) + term(kp_driving))

A term is computed only when `LossWeights.is_active(term, iteration)` (weight != 0 and
iteration > start; iterations are 1-based).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from mcc_fast.model.model import ModelOutput

from .config import ConfigError, LossSection
from .losses import (
    LossWeights,
    PyramidPerceptualLoss,
    RandomTransform,
    TransformParams,
    Vgg19,
    adaptive_gan_weight,
    equivariance_jacobian_loss,
    equivariance_value_loss,
    hinge_generator_loss,
    keypoint_distance_loss,
    l1_loss,
    load_vgg19,
    low_resolution_loss,
    motion_reconstruction_losses,
    weighted_sum,
)

__all__ = ["TrainingObjective", "build_perceptual_network", "RANDOM_VGG_SEED"]

RANDOM_VGG_SEED = 19  # random VGG weights are the same on every rank and after a resume


def build_perceptual_network(loss: LossSection, image_size: int) -> Vgg19 | None:
    """The frozen VGG19 of the perceptual loss, or None when no term uses it.

    Real weights from `loss.vgg_weights` (a local torchvision-format file); random weights
    (seeded, identical everywhere) only with `loss.random_vgg`. ConfigError otherwise.
    """
    weights = loss.weights()
    if weights.perceptual == 0:
        return None
    smallest = image_size * min(loss.perceptual_scales)
    if smallest < 16:
        raise ConfigError(f"config loss.perceptual_scales {list(loss.perceptual_scales)}: at {image_size}x{image_size} "
                          f"the smallest pyramid level is {smallest:g} px, VGG19 needs >= 16 px; drop the small scales")
    if loss.vgg_weights is not None:
        if tuple(loss.vgg_stage_channels) != (64, 128, 256, 512, 512):
            raise ConfigError("config loss.vgg_stage_channels: only the standard VGG19 widths can load --vgg-weights")
        return load_vgg19(loss.vgg_weights)
    if not loss.random_vgg:
        raise ConfigError("the perceptual loss needs VGG19 weights: pass --vgg-weights PATH (a local torchvision "
                          "vgg19 file such as vgg19-dcbb9e9d.pth), or --random-vgg for a smoke run with random "
                          "weights, or --set loss.perceptual=0")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_VGG_SEED)
        return Vgg19(random_init_ok=True, stage_channels=loss.vgg_stage_channels)


class TrainingObjective(nn.Module):
    """Weighted loss terms of the generator + motion estimator (see the module docstring).

    loss: the config's loss section; vgg: the perceptual network (None when perceptual = 0).
    """

    def __init__(self, loss: LossSection, vgg: Vgg19 | None) -> None:
        super().__init__()
        self.weights: LossWeights = loss.weights()
        w = self.weights
        if w.perceptual != 0 and vgg is None:
            raise ConfigError("config loss.perceptual > 0 but no VGG19 network was given")
        self.perceptual = (PyramidPerceptualLoss(vgg, loss.perceptual_scales, w.perceptual_layer_weights)
                           if w.perceptual != 0 else None)
        eq = loss.equivariance
        self.transform_params = TransformParams(sigma_affine=eq.sigma_affine, sigma_tps=eq.sigma_tps,
                                                points_tps=eq.points_tps)
        self.transform_align_corners = eq.align_corners
        if w.gan != 0 and w.adaptive_gan and w.l1 == 0 and w.perceptual == 0:
            raise ConfigError("config loss.adaptive_gan needs loss.l1 or loss.perceptual > 0 "
                              "(the adaptive weight compares their gradient with the GAN's)")

    # ---- which parts run -----------------------------------------------------------------------

    def active(self, term: str, iteration: int) -> bool:
        """Whether `term` contributes at the 1-based `iteration`."""
        return self.weights.is_active(term, iteration)

    def uses_equivariance(self, iteration: int) -> bool:
        """Whether the transformed driving frame's keypoints are needed at `iteration`."""
        return self.active("equivariance_value", iteration) or self.active("equivariance_jacobian", iteration)

    def uses_gan(self, iteration: int) -> bool:
        """Whether the GAN term (and the discriminator update) runs at `iteration`."""
        return self.active("gan", iteration)

    def sample_transform(self, batch: int, generator: torch.Generator, device: torch.device) -> RandomTransform:
        """A random equivariance transform for `batch` samples, drawn on the CPU from `generator`."""
        t = RandomTransform.sample(batch, self.transform_params, generator)
        if t.control_params is None:
            return RandomTransform(t.theta.to(device))
        return RandomTransform(t.theta.to(device), t.control_params.to(device), self.transform_params.points_tps)

    def transform_frame(self, transform: RandomTransform, frame: torch.Tensor) -> torch.Tensor:
        """The driving frame resampled by `transform` (reflection padding)."""
        return transform.transform_frame(frame, align_corners=self.transform_align_corners)

    # ---- the terms ---------------------------------------------------------------------------

    def generator_terms(
        self,
        output: ModelOutput,
        driving: torch.Tensor,
        iteration: int,
        *,
        kp_transformed=None,
        transform: RandomTransform | None = None,
        discriminator: Callable[[torch.Tensor], torch.Tensor] | None = None,
        last_layer: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(terms, diagnostics): weighted () float32 terms whose sum is the loss, and detached
        diagnostics (``gan_weight``, the adaptive weight). `output` is the model's
        ``return_all=True, training=True`` output for (source, driving (B, 3, S, S));
        kp_transformed/transform are needed when an equivariance term is active,
        discriminator/last_layer (the decoder's last conv weight) when the GAN term is."""
        w = self.weights
        frame = output.frame
        train_out = output.generator.training
        if train_out is None:
            raise ValueError("the model output has no training outputs: call the model with training=True")
        terms: dict[str, torch.Tensor] = {}
        diagnostics: dict[str, torch.Tensor] = {}
        on = lambda term: self.active(term, iteration)  # noqa: E731

        if on("l1"):
            terms["l1"] = w.l1 * l1_loss(frame, driving)
        if on("perceptual"):
            terms["perceptual"] = w.perceptual * self.perceptual(frame, driving)
        if on("low_res"):
            low = low_resolution_loss(
                train_out.low_res_frame, driving, self.perceptual if on("perceptual") else None, weight=w.low_res,
                l1_weight=w.l1 if on("l1") else 0.0, perceptual_weight=w.perceptual if on("perceptual") else 0.0)
            if on("l1"):
                terms["low_res_l1"] = low.l1
            if on("perceptual"):
                terms["low_res_perceptual"] = low.perceptual
        if on("gan"):
            if discriminator is None:
                raise ValueError("the GAN term is active but no discriminator was given")
            gan = hinge_generator_loss(discriminator(frame))
            if w.adaptive_gan:
                if last_layer is None:
                    raise ValueError("the adaptive GAN weight needs the decoder's last conv weight (last_layer)")
                reconstruction = sum(terms[k] for k in ("l1", "perceptual") if k in terms)
                if not isinstance(reconstruction, torch.Tensor) or not torch.is_grad_enabled():
                    raise ValueError("the adaptive GAN weight needs an active l1 or perceptual term and autograd")
                gan_weight = adaptive_gan_weight(reconstruction, gan, last_layer, scale=w.gan, max_ratio=w.gan_max_ratio)
            else:
                gan_weight = torch.tensor(w.gan, device=frame.device)
            diagnostics["gan_weight"] = gan_weight.detach()
            terms["gan"] = gan_weight * gan
        if on("motion_vq"):
            terms["motion_vq"] = weighted_sum(train_out.motion_vq_losses, w.motion_vq).float()
        if on("appearance_vq"):
            terms["appearance_vq"] = weighted_sum(train_out.appearance_vq_losses, w.appearance_vq).float()
        if on("motion_recon"):
            terms["motion_recon"] = motion_reconstruction_losses(
                train_out.motion_reconstructions, output.generator.flows, w.motion_recon)
        if self.uses_equivariance(iteration):
            if kp_transformed is None or transform is None:
                raise ValueError("an equivariance term is active but kp_transformed / transform were not given")
            kp_driving = output.motion.kp_driving
            if on("equivariance_value"):
                terms["equivariance_value"] = w.equivariance_value * equivariance_value_loss(
                    _float_kp(kp_driving), _float_kp(kp_transformed), transform).float()
            if on("equivariance_jacobian"):
                terms["equivariance_jacobian"] = w.equivariance_jacobian * equivariance_jacobian_loss(
                    _float_kp(kp_driving), _float_kp(kp_transformed), transform).float()
        if on("keypoint_distance"):
            terms["keypoint_distance"] = w.keypoint_distance * keypoint_distance_loss(
                _float_kp(output.motion.kp_source), _float_kp(output.motion.kp_driving)).float()
        return terms, diagnostics


def _float_kp(kp):
    """Keypoints with float32 value/jacobian (autocast may leave them in half precision)."""
    from mcc_fast.model.motion.keypoint_detector import Keypoints

    value = kp.value.float()
    jacobian = None if kp.jacobian is None else kp.jacobian.float()
    return Keypoints(value, jacobian)
