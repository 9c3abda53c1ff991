"""The paper's evaluation metrics, computed offline from local weight files.

- :mod:`.pixel`: L1 and PSNR on 0-255 images (the official per-frame definitions);
- :mod:`.lpips`: LPIPS (VGG, v0.1) through our own VGG16 trunk;
- :mod:`.fid`: Fréchet distance and the FID InceptionV3 pool3 features;
- :mod:`.adapters`: AKD, AED, CSIM, ARD over landmark / identity / head-pose adapters;
  implementations in :mod:`.face_networks` and :mod:`.synthetic_pose`;
- :mod:`.runner`: :func:`evaluate_sequences` over (name, generated, ground truth) videos,
  per-video and dataset results in JSON and CSV.

Weight files and their names: :data:`.weights.WEIGHT_FILES`. Nothing downloads.
"""
from __future__ import annotations

from .adapters import (HeadPoseEstimator, IdentityEmbedder, LandmarkDetector, aed, aed_per_frame, akd, akd_per_frame,
                       ard, ard_per_frame, csim, csim_per_frame)
from .fid import GaussianStats, InceptionV3Pool3, frechet_distance, load_inception_pool3
from .frames import as_uint8_frames
from .lpips import LPIPSVGG, load_lpips_vgg
from .pixel import l1, l1_per_frame, psnr, psnr_per_frame
from .runner import METRICS, EvalItem, evaluate_sequences, format_summary
from .synthetic_pose import SyntheticPoseOracle, parse_landmarks_json, parse_pose_json
from .weights import WEIGHT_FILES, MissingWeightsError

__all__ = [
    "METRICS", "EvalItem", "evaluate_sequences", "format_summary",
    "l1", "l1_per_frame", "psnr", "psnr_per_frame", "as_uint8_frames",
    "LPIPSVGG", "load_lpips_vgg", "GaussianStats", "InceptionV3Pool3", "frechet_distance", "load_inception_pool3",
    "LandmarkDetector", "IdentityEmbedder", "HeadPoseEstimator",
    "akd", "akd_per_frame", "aed", "aed_per_frame", "csim", "csim_per_frame", "ard", "ard_per_frame",
    "SyntheticPoseOracle", "parse_pose_json", "parse_landmarks_json", "WEIGHT_FILES", "MissingWeightsError",
]
