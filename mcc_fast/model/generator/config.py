"""Configuration of the MCC generator (official class `AppMotionCompFormer`).

The default is the paper's model (and the parity fixture's): 256x256 images, a VQGAN
encoder/decoder with nf 64 and channel multipliers (1, 2, 2, 4), 15 keypoints, four
compensation scales (32, 64, 128, 256), motion codebook 1024 x 32, appearance codebook
1024 x 256; 30,118,854 parameters.

Some sizes that the official code hard-codes are *derived* here because the architecture
forces them:

* the token grid is the encoder's lowest resolution (``image_size / 2**(levels-1)``): the
  scale-0 appearance tokens are a 1x1 projection of the latent, and the scale-0 motion
  query is the warped latent itself;
* the flow resolution is twice the token grid: the motion embedding reaches the token grid
  through one stride-2 ``Downsample``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

CODEBOOK_ALLOCATIONS = ("prefix", "disjoint", "shared")


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"GeneratorConfig.{field}: {message}")


def _is_int(value) -> bool:
    """An int that is not a bool (True would pass for 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class GeneratorConfig:
    """Every size of the generator that may vary; validated on construction.

    Attributes:
        image_size: side of the square input/output images (256).
        image_channels: image channels (3).
        base_channels: VQGAN ``nf`` (64).
        channel_multipliers: VQGAN ``ch_mult``, one per resolution level, finest first.
        res_blocks_per_level: ResBlocks per encoder/decoder level (2).
        num_keypoints: keypoints of the driving heatmaps (15).
        num_scales: compensation scales, coarse to fine, starting at the token grid; None =
            one per level (4). Scale ``k`` works at resolution ``token_grid * 2**k``.
        motion_codebook_size, motion_dim: motion codebook rows and width (1024, 32); the
            motion transformer works at width ``motion_dim``.
        motion_layers: motion transformer layers (2).
        appearance_codebook_size, appearance_dim: appearance codebook (1024, 256).
        appearance_layers: appearance transformer layers (2).
        num_heads: attention heads of both transformers (8).
        ffn_expansion: feed-forward hidden width / model width (2).
        updater_width: width of the MRFA flow updater (128; its other widths scale with it:
            96 = 3/4, 64 = 1/2, context 192 = 3/2).
        norm_groups: GroupNorm groups (32).
        codebook_allocation: which codebook rows scale ``k`` of ``n`` uses (both codebooks):
            "prefix" (official: the first ``(k+1) N/n`` rows), "disjoint" (rows
            ``[k N/n, (k+1) N/n)``), "shared" (all ``N`` rows).
        beta: VQ commitment weight (0.25).
        fusion_weight: ``w`` of the decoder fusion (1.0; the official skips the whole fine
            cascade for ``w <= 0``, which we do not support).
        redundant_detached_warp: also compute the official's unused warp of a detached copy
            of each feature (changes no output; kept so the reference path times like the
            official model).
    """

    image_size: int = 256
    image_channels: int = 3
    base_channels: int = 64
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)
    res_blocks_per_level: int = 2
    num_keypoints: int = 15
    num_scales: int | None = None
    motion_codebook_size: int = 1024
    motion_dim: int = 32
    motion_layers: int = 2
    appearance_codebook_size: int = 1024
    appearance_dim: int = 256
    appearance_layers: int = 2
    num_heads: int = 8
    ffn_expansion: int = 2
    updater_width: int = 128
    norm_groups: int = 32
    codebook_allocation: str = "prefix"
    beta: float = 0.25
    fusion_weight: float = 1.0
    redundant_detached_warp: bool = True

    def __post_init__(self) -> None:
        _require(isinstance(self.channel_multipliers, (tuple, list)), "channel_multipliers",
                 f"must be a tuple of positive ints, one per level, got {self.channel_multipliers!r}")
        object.__setattr__(self, "channel_multipliers", tuple(self.channel_multipliers))
        for name in ("image_size", "image_channels", "base_channels", "res_blocks_per_level",
                     "num_keypoints", "motion_codebook_size", "motion_dim", "motion_layers",
                     "appearance_codebook_size", "appearance_dim", "appearance_layers",
                     "num_heads", "ffn_expansion", "updater_width", "norm_groups"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 1, name, f"must be a positive int, got {value!r}")
        levels = len(self.channel_multipliers)
        _require(levels >= 2, "channel_multipliers", f"needs at least 2 levels, got {self.channel_multipliers!r}")
        _require(all(_is_int(m) and m >= 1 for m in self.channel_multipliers),
                 "channel_multipliers", f"must be positive ints, got {self.channel_multipliers!r}")
        _require(self.image_size % 2 ** (levels - 1) == 0, "image_size",
                 f"{self.image_size} is not divisible by 2**{levels - 1} (one halving per level)")
        if self.num_scales is not None:
            _require(_is_int(self.num_scales) and 1 <= self.num_scales <= levels, "num_scales",
                     f"must be an int in [1, {levels}] (one per level at most), got {self.num_scales!r}")
        groups = self.norm_groups
        for channels in set(self.level_channels) | {self.motion_dim}:
            _require(channels % groups == 0, "norm_groups",
                     f"{groups} groups do not divide a normalised width of {channels} channels")
        _require(self.motion_dim % self.num_heads == 0, "motion_dim",
                 f"{self.motion_dim} is not divisible by num_heads={self.num_heads}")
        _require(self.appearance_dim % self.num_heads == 0, "appearance_dim",
                 f"{self.appearance_dim} is not divisible by num_heads={self.num_heads}")
        _require(self.updater_width % 4 == 0 and self.updater_width >= 8, "updater_width",
                 f"must be a multiple of 4 and >= 8, got {self.updater_width}")
        _require(self.codebook_allocation in CODEBOOK_ALLOCATIONS, "codebook_allocation",
                 f"must be one of {CODEBOOK_ALLOCATIONS}, got {self.codebook_allocation!r}")
        n = len(self.scales)
        for name in ("motion_codebook_size", "appearance_codebook_size"):
            _require(getattr(self, name) % n == 0, name,
                     f"{getattr(self, name)} is not divisible by the {n} scales")
        _require(_is_number(self.beta) and self.beta >= 0, "beta", f"must be a finite number >= 0, got {self.beta!r}")
        _require(_is_number(self.fusion_weight) and self.fusion_weight > 0, "fusion_weight",
                 f"must be a finite number > 0, got {self.fusion_weight!r}")
        _require(isinstance(self.redundant_detached_warp, bool), "redundant_detached_warp",
                 f"must be True or False, got {self.redundant_detached_warp!r}")

    # ---- derived sizes -------------------------------------------------------------------

    @property
    def num_levels(self) -> int:
        """Resolution levels of the encoder/decoder (len(channel_multipliers))."""
        return len(self.channel_multipliers)

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Feature channels per level, finest (image resolution) first."""
        return tuple(self.base_channels * m for m in self.channel_multipliers)

    @property
    def latent_channels(self) -> int:
        """Channels of the encoder output / decoder input at the token grid."""
        return self.level_channels[-1]

    @property
    def token_grid(self) -> int:
        """Side of the token grid (32): the encoder's lowest resolution."""
        return self.image_size // 2 ** (self.num_levels - 1)

    @property
    def num_tokens(self) -> int:
        """Tokens per sample (token_grid**2, 1024)."""
        return self.token_grid**2

    @property
    def flow_size(self) -> int:
        """Side of every flow / occlusion map (64) = 2 x token grid."""
        return 2 * self.token_grid

    @property
    def displacement_scale(self) -> float:
        """(flow_size - 1) / 2 (31.5): flow offsets in [-1,1] units x this = pixels at flow size."""
        return (self.flow_size - 1.0) / 2.0

    @property
    def scales(self) -> tuple[int, ...]:
        """Resolutions of the compensation scales, coarse to fine ((32, 64, 128, 256))."""
        n = self.num_levels if self.num_scales is None else self.num_scales
        return tuple(self.token_grid * 2**k for k in range(n))

    @property
    def scale_channels(self) -> tuple[int, ...]:
        """Feature channels of each scale ((256, 128, 128, 64))."""
        return tuple(self.level_channels[self.num_levels - 1 - k] for k in range(len(self.scales)))

    def patch_size(self, scale: int) -> int:
        """Side of the feature patch that becomes one appearance token at scale index `scale`."""
        return 2**scale

    def code_range(self, codebook_size: int, scale: int) -> tuple[int, int]:
        """Rows [start, stop) of a codebook of `codebook_size` rows used at scale index `scale`."""
        n = len(self.scales)
        per_scale = codebook_size // n
        if self.codebook_allocation == "prefix":
            return 0, per_scale * (scale + 1)
        if self.codebook_allocation == "disjoint":
            return per_scale * scale, per_scale * (scale + 1)
        return 0, codebook_size
