"""Training losses and the discriminator of MCC (official ``options/train.yml`` objective).

Standalone pieces the trainer wires together:

* `Vgg19`, `load_vgg19`: our VGG19 feature extractor (torchvision-format local weights);
* `PyramidPerceptualLoss`, `ImagePyramid`: FOMM's pyramid perceptual loss;
* `l1_loss`, `low_resolution_loss`, `motion_reconstruction_loss(es)`, `weighted_sum`;
* `hinge_*` GAN losses and `adaptive_gan_weight`; `PatchDiscriminator`;
* `RandomTransform`, `equivariance_*` losses; `keypoint_distance_loss`;
* `LossWeights`: every weight and start iteration.
"""
from __future__ import annotations

from .discriminator import PatchDiscriminator, PatchDiscriminatorConfig, convert_official_discriminator_state_dict
from .equivariance import (
    RandomTransform,
    TransformParams,
    equivariance_jacobian_loss,
    equivariance_losses,
    equivariance_value_loss,
    keypoint_parts,
)
from .gan import adaptive_gan_weight, hinge_discriminator_loss, hinge_fake_loss, hinge_generator_loss, hinge_real_loss
from .keypoint_distance import keypoint_distance_loss, keypoint_distance_term
from .perceptual import OFFICIAL_LAYER_WEIGHTS, OFFICIAL_PYRAMID_SCALES, ImagePyramid, PyramidPerceptualLoss
from .reconstruction import (
    LowResolutionLoss,
    l1_loss,
    low_resolution_loss,
    motion_reconstruction_loss,
    motion_reconstruction_losses,
    weighted_sum,
)
from .vgg19 import VGG19_STAGE_CHANNELS, Vgg19, convert_torchvision_vgg19_state, load_vgg19, read_vgg19_weights
from .weights import LOSS_TERMS, LossWeights

__all__ = [
    "PatchDiscriminator",
    "PatchDiscriminatorConfig",
    "convert_official_discriminator_state_dict",
    "RandomTransform",
    "TransformParams",
    "equivariance_jacobian_loss",
    "equivariance_losses",
    "equivariance_value_loss",
    "keypoint_parts",
    "adaptive_gan_weight",
    "hinge_discriminator_loss",
    "hinge_fake_loss",
    "hinge_generator_loss",
    "hinge_real_loss",
    "keypoint_distance_loss",
    "keypoint_distance_term",
    "OFFICIAL_LAYER_WEIGHTS",
    "OFFICIAL_PYRAMID_SCALES",
    "ImagePyramid",
    "PyramidPerceptualLoss",
    "LowResolutionLoss",
    "l1_loss",
    "low_resolution_loss",
    "motion_reconstruction_loss",
    "motion_reconstruction_losses",
    "weighted_sum",
    "VGG19_STAGE_CHANNELS",
    "Vgg19",
    "load_vgg19",
    "read_vgg19_weights",
    "convert_torchvision_vgg19_state",
    "LOSS_TERMS",
    "LossWeights",
]
