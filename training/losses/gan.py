"""Hinge GAN losses and VQGAN's adaptive GAN weight, as in the official training step.

Official (basicsr ``GANLoss(gan_type='hinge')`` and ``AppMotionCompModel``):

* discriminator: ``mean(relu(1 - D(real)))`` and ``mean(relu(1 + D(fake.detach())))``, each
  back-propagated on its own (their sum is the discriminator loss);
* generator: ``-mean(D(fake))``, times the adaptive weight
  ``0.8 * clamp(||grad_W rec|| / (||grad_W gan|| + 1e-4), 0, 1)`` (detached), where W is the
  decoder's last convolution weight (``net_g.generator.blocks[-1].weight``; the official
  config trains jointly, ``fix_generator: false``) and rec = perceptual + L1 on the main
  output (not the low-resolution branch);
* both start when the 1-based iteration is > 5001 (``current_iter > net_d_start_iter``), so
  the first GAN step is iteration 5002. See `LossWeights.is_active`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "hinge_real_loss",
    "hinge_fake_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "adaptive_gan_weight",
]


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(logits).__name__}")
    if not logits.is_floating_point() or logits.numel() == 0:
        raise ValueError(f"{name} must be a non-empty floating tensor, got {logits.dtype} {tuple(logits.shape)}")


def hinge_real_loss(real_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge term on real images: mean(relu(1 - D(real))). Any shape -> () float32."""
    _check_logits("real_logits", real_logits)
    return F.relu(1.0 - real_logits.float()).mean()


def hinge_fake_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge term on generated images: mean(relu(1 + D(fake))). Any shape -> () float32.

    Pass logits of the *detached* generated image so no gradient reaches the generator.
    """
    _check_logits("fake_logits", fake_logits)
    return F.relu(1.0 + fake_logits.float()).mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """hinge_real_loss(real_logits) + hinge_fake_loss(fake_logits): () float32."""
    return hinge_real_loss(real_logits) + hinge_fake_loss(fake_logits)


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -mean(D(fake)). Any shape -> () float32 (before the adaptive weight)."""
    _check_logits("fake_logits", fake_logits)
    return -fake_logits.float().mean()


def adaptive_gan_weight(
    reconstruction_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer_weight: torch.Tensor,
    scale: float = 0.8,
    max_ratio: float = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """VQGAN's adaptive weight of the generator's GAN loss (detached () float32 tensor).

    weight = scale * clamp(||d rec / d W|| / (||d gan / d W|| + eps), 0, max_ratio), with the
    Frobenius norms of the gradients of `reconstruction_loss` (official: perceptual + L1) and
    `gan_loss` (hinge generator loss) with respect to `last_layer_weight` W (the decoder's
    last conv weight), computed with ``torch.autograd.grad(..., retain_graph=True)`` so the
    graph stays usable for the total loss's backward. Pass unscaled losses (before any
    gradient scaler). Both losses must depend on W; ValueError otherwise.
    """
    for name, value in (("reconstruction_loss", reconstruction_loss), ("gan_loss", gan_loss)):
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ValueError(f"{name} must be a one-element tensor, got {getattr(value, 'shape', type(value))}")
        if not value.requires_grad:
            raise ValueError(f"{name} does not require grad: it must depend on last_layer_weight")
    if not isinstance(last_layer_weight, torch.Tensor) or not last_layer_weight.requires_grad:
        raise ValueError("last_layer_weight must be a tensor that requires grad (the decoder's last conv weight)")
    if not max_ratio >= 0:
        raise ValueError(f"max_ratio must be >= 0, got {max_ratio}")
    grads = []
    for name, value in (("reconstruction_loss", reconstruction_loss), ("gan_loss", gan_loss)):
        (grad,) = torch.autograd.grad(value, last_layer_weight, retain_graph=True, allow_unused=True)
        if grad is None:
            raise ValueError(f"{name} does not depend on last_layer_weight")
        grads.append(grad)
    ratio = torch.linalg.vector_norm(grads[0].float()) / (torch.linalg.vector_norm(grads[1].float()) + eps)
    return (scale * torch.clamp(ratio, 0.0, max_ratio)).detach()
