"""Official (`AppMotionCompFormer`) state-dict names <-> our generator parameter names.

The official names appear only in this file. The table is built from our module structure
by rules (official flat block indices of the VQGAN encoder/decoder, per-resolution module
names), so it covers every config that has the official structure; for the default config it
is the released checkpoint's 472 keys.
"""
from __future__ import annotations

from typing import Mapping

import torch

from .config import GeneratorConfig

_RES_LEAVES = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "shortcut": "conv_out"}
_ATTN_LEAVES = {"norm": "norm", "query": "q", "key": "k", "value": "v", "proj": "proj_out"}
_LAYER_LEAVES = {"self_attention": "self_attn", "cross_attention": "cross_attn", "ffn_in": "conv1",
                 "ffn_out": "conv2", "norm_self": "norm1", "norm_cross": "norm2", "norm_ffn": "norm3"}


def _vqgan_prefixes(config: GeneratorConfig) -> list[tuple[str, str, dict | None]]:
    """(our module prefix, official module prefix, leaf renames) for encoder and decoder."""
    rules: list[tuple[str, str, dict | None]] = []
    levels, blocks = config.num_levels, config.res_blocks_per_level

    index = 0
    rules.append(("encoder.stem", f"encoder.blocks.{index}", None))
    for i in range(levels):
        for j in range(blocks):
            index += 1
            rules.append((f"encoder.levels.{i}.res_blocks.{j}", f"encoder.blocks.{index}", _RES_LEAVES))
            if i == levels - 1:
                index += 1
                rules.append((f"encoder.levels.{i}.attn_blocks.{j}", f"encoder.blocks.{index}", _ATTN_LEAVES))
        if i != levels - 1:
            index += 1
            rules.append((f"encoder.levels.{i}.downsample", f"encoder.blocks.{index}", None))
    for name, leaves in (("res1", _RES_LEAVES), ("attn", _ATTN_LEAVES), ("res2", _RES_LEAVES)):
        index += 1
        rules.append((f"encoder.middle.{name}", f"encoder.blocks.{index}", leaves))
    rules.append(("encoder.norm_out", f"encoder.blocks.{index + 1}", None))
    rules.append(("encoder.conv_out", f"encoder.blocks.{index + 2}", None))

    index = 0
    rules.append(("decoder.stem", f"generator.blocks.{index}", None))
    for name, leaves in (("res1", _RES_LEAVES), ("attn", _ATTN_LEAVES), ("res2", _RES_LEAVES)):
        index += 1
        rules.append((f"decoder.middle.{name}", f"generator.blocks.{index}", leaves))
    for k in range(levels):
        for j in range(blocks):
            index += 1
            rules.append((f"decoder.levels.{k}.res_blocks.{j}", f"generator.blocks.{index}", _RES_LEAVES))
            if k == 0:
                index += 1
                rules.append((f"decoder.levels.{k}.attn_blocks.{j}", f"generator.blocks.{index}", _ATTN_LEAVES))
        if k != levels - 1:
            index += 1
            rules.append((f"decoder.levels.{k}.upsample", f"generator.blocks.{index}", None))
    rules.append(("decoder.norm_out", f"generator.blocks.{index + 1}", None))
    rules.append(("decoder.conv_out", f"generator.blocks.{index + 2}", None))
    return rules


def _compensation_prefixes(config: GeneratorConfig) -> list[tuple[str, str, dict | None]]:
    rules: list[tuple[str, str, dict | None]] = [
        ("motion.codebook", "quantize_motion.embedding", None),
        ("motion.position_embedding", "position_emb_motion", None),
        ("motion.query.heatmap_projection", "driving_kp_enc", None),
        ("motion.query.fuse", "motion_query_enc_1", None),
        ("motion.token_fuse", "motion_query_enc_2", None),
        ("motion.displacement_embedding.0", "motion_emb.0", None),
        ("motion.displacement_embedding.1", "motion_emb.1", None),
        ("motion.displacement_embedding.2", "motion_emb.2", _RES_LEAVES),
        ("motion.displacement_decoder.0", "to_motion.0", None),
        ("motion.displacement_decoder.1", "to_motion.1", _RES_LEAVES),
        ("motion.displacement_decoder.2", "to_motion.2", None),
        ("motion.displacement_decoder.3", "to_motion.3", None),
        ("flow_updater.token_conv1", "BasicMotionEncoder.convc1", None),
        ("flow_updater.token_conv2", "BasicMotionEncoder.convc2", None),
        ("flow_updater.flow_conv1", "BasicMotionEncoder.convf1", None),
        ("flow_updater.flow_conv2", "BasicMotionEncoder.convf2", None),
        ("flow_updater.motion_fuse", "BasicMotionEncoder.conv", None),
        ("flow_updater.context_conv", "refine.convc1", None),
        ("flow_updater.flow_hidden", "refine.conv1", None),
        ("flow_updater.flow_out", "refine.conv2", None),
        ("flow_updater.occlusion_hidden", "refine.convo1", None),
        ("flow_updater.occlusion_out", "refine.convo2", None),
        ("appearance.codebook", "quantize_app.embedding", None),
        ("appearance.position_embedding", "position_emb_app", None),
    ]
    for layer in range(config.motion_layers):
        rules.append((f"motion.layers.{layer}", f"motion_block.{layer}", _LAYER_LEAVES))
    for layer in range(config.appearance_layers):
        rules.append((f"appearance.layers.{layer}", f"app_block.{layer}", _LAYER_LEAVES))
    for k, resolution in enumerate(config.scales):
        rules.append((f"motion.query.source_projections.{k}", f"warped_source_enc_{resolution}", None))
        rules.append((f"flow_updater.context_projections.{k}", f"to_context.{k}", None))
        patched = config.patch_size(k) > 1
        rules.append((f"appearance.tokenizers.{k}.proj",
                      f"app_feat_emb_{resolution}" + (".1" if patched else ""), None))
        rules.append((f"appearance.untokenizers.{k}.proj",
                      f"to_app_feat_{resolution}" + (".0" if patched else ""), None))
        if k >= 1:
            rules.append((f"fusions.{k}.merge", f"fuse_convs_dict.{resolution}.encode_enc", _RES_LEAVES))
            rules.append((f"fusions.{k}.scale", f"fuse_convs_dict.{resolution}.scale", None))
            rules.append((f"fusions.{k}.shift", f"fuse_convs_dict.{resolution}.shift", None))
            rules.append((f"fusions.{k}.skip", f"fuse_ms_dict.{resolution}", None))
    return rules


def _to_official(name: str, rules: list[tuple[str, str, dict | None]]) -> str:
    best = None
    for ours, official, leaves in rules:
        if (name == ours or name.startswith(ours + ".")) and (best is None or len(ours) > len(best[0])):
            best = (ours, official, leaves)
    if best is None:
        raise KeyError(f"no official name rule for our parameter {name!r}")
    ours, official, leaves = best
    rest = name[len(ours):].lstrip(".")
    if not rest:
        return official
    if leaves is not None:
        head, _, tail = rest.partition(".")
        rest = leaves[head] + ("." + tail if tail else "")
    return f"{official}.{rest}"


def _expected_shapes(config: GeneratorConfig) -> dict[str, torch.Size]:
    from .generator import Generator  # local import: generator imports nothing from here

    with torch.device("meta"):
        model = Generator(config)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def official_key_map(config: GeneratorConfig | None = None) -> dict[str, str]:
    """{official state-dict name: our parameter name} for `config` (default: the paper's)."""
    config = GeneratorConfig() if config is None else config
    rules = _vqgan_prefixes(config) + _compensation_prefixes(config)
    return {_to_official(name, rules): name for name in _expected_shapes(config)}


def _format_names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... and {len(names) - limit} more" if len(names) > limit else "")


def convert_generator_state_dict(official: Mapping[str, torch.Tensor],
                                 config: GeneratorConfig | None = None) -> dict[str, torch.Tensor]:
    """Rename an official generator state dict to ours (tensors are not copied).

    Accepts the bare state dict, with or without a `module.` prefix, or a basicsr checkpoint
    dict holding it under `params_ema` (preferred) or `params`. Raises ValueError listing the
    missing and unexpected keys, or the keys whose shapes do not fit `config`.
    """
    config = GeneratorConfig() if config is None else config
    for wrapper in ("params_ema", "params"):
        if wrapper in official and isinstance(official[wrapper], Mapping):
            official = official[wrapper]
            break
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in official.items()}
    key_map = official_key_map(config)
    missing = [k for k in key_map if k not in state]
    unexpected = [k for k in state if k not in key_map]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_format_names(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_format_names(unexpected)}")
        raise ValueError("official generator state dict does not match the config: " + "; ".join(parts))
    shapes = _expected_shapes(config)
    converted: dict[str, torch.Tensor] = {}
    wrong = []
    for official_name, ours in key_map.items():
        tensor = state[official_name]
        if tuple(tensor.shape) != tuple(shapes[ours]):
            wrong.append(f"{official_name} {tuple(tensor.shape)} != {tuple(shapes[ours])}")
        converted[ours] = tensor
    if wrong:
        raise ValueError(f"official generator state dict: {len(wrong)} shape mismatch(es): {_format_names(wrong)}")
    return converted
