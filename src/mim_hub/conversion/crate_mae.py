"""CRATE-MAE and CRATE checkpoints (Ma-Lab-Berkeley/CRATE) -> mim_hub CrateMAE models.

Kinds, told apart by their keys:
- CRATE-MAE pre-training (MAE codebase, `{'model': ..., 'args': Namespace}`): `decoder_blocks.*`
  -> `CrateMAEForPreTraining`; without a decoder -> `CrateMAEModel`. The stored `pos_embed` and
  `decoder_embed` are never used by the original forward and are dropped.
- CRATE classifiers (`checkpoint.pth.tar`, `state_dict` with a `module.` prefix):
  `to_patch_embedding.*`, `transformer.layers.*`, `mlp_head.*` -> `CrateMAEForImageClassification`
  with `variant="crate"`.
Sizes come from shapes; heads (default: the released sizes' counts, else width // 64 with a warning),
`ista_lambda` and `norm_pix_loss` from `--config`.
"""

from __future__ import annotations

import re

from ..models.crate_mae import CrateMAEConfig, CrateMAEForImageClassification, CrateMAEForPreTraining, CrateMAEImageProcessor, CrateMAEModel
from .common import apply_overrides, build_and_load, count_indexed, require_keys
from .heads import num_heads
from .loading import CheckpointError, checkpoint_args, find_state_dict, load_checkpoint

UNUSED_CRATE_MAE_KEYS = ("pos_embed", "decoder_embed.weight", "decoder_embed.bias")


# one encoder block of either release (its attention: `0.*`, its ISTA step: `1.*`) -> ours
_ENCODER_BLOCK = {"0.norm": "norm1", "0.fn.qkv": "attn.qkv_proj", "0.fn.to_out.0": "attn.o_proj", "1.norm": "norm2", "1.fn": "ista"}
_ENCODER_BLOCK_KEY = "(" + "|".join(map(re.escape, _ENCODER_BLOCK)) + r")\.(weight|bias)$"


def _rename_crate_mae(key: str, prefix: str) -> str | None:
    simple = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token", "decoder_pos_embed": "embeddings.pos_embed"}
    if key in simple:
        return prefix + simple[key]
    if key.startswith("patch_embed.proj."):
        return f"{prefix}embeddings.patch_embed.projection.{key.split('.')[-1]}"
    if key.startswith("norm."):
        return f"{prefix}layernorm.{key.split('.')[-1]}"
    m = re.match(r"blocks\.(\d+)\.layers\.0\." + _ENCODER_BLOCK_KEY, key)
    if m:
        return f"{prefix}layers.{m.group(1)}.{_ENCODER_BLOCK[m.group(2)]}.{m.group(3)}"
    m = re.match(r"decoder_blocks\.(\d+)\.layers\.0\.(0\.norm|0\.fn|1\.norm|1\.fn\.qkv|1\.fn\.to_out\.0)\.(weight|bias)$", key)
    if m:
        part = {"0.norm": "norm1.", "0.fn": "dictionary", "1.norm": "norm2.", "1.fn.qkv": "attn.qkv_proj.", "1.fn.to_out.0": "attn.o_proj."}[m.group(2)]
        return f"decoder.layers.{m.group(1)}.{part}" + ("" if part == "dictionary" else m.group(3))
    if key.startswith(("decoder_norm.", "decoder_pred.")):
        return "decoder." + key
    return None


def _rename_crate(key: str, prefix: str) -> str | None:
    simple = {"cls_token": "embeddings.cls_token", "pos_embedding": "embeddings.pos_embed"}
    if key in simple:
        return prefix + simple[key]
    m = re.match(r"to_patch_embedding\.([123])\.(weight|bias)$", key)
    if m:
        return f"{prefix}embeddings.patch_embed.{ {'1': 'norm_in', '2': 'projection', '3': 'norm_out'}[m.group(1)] }.{m.group(2)}"
    m = re.match(r"transformer\.layers\.(\d+)\." + _ENCODER_BLOCK_KEY, key)
    if m:
        return f"{prefix}layers.{m.group(1)}.{_ENCODER_BLOCK[m.group(2)]}.{m.group(3)}"
    m = re.match(r"mlp_head\.([01])\.(weight|bias)$", key)
    if m:
        return f"{'head_norm' if m.group(1) == '0' else 'head'}.{m.group(2)}"
    return None


def convert_state(state: dict, overrides: dict, source: str, args: dict | None = None):
    """Build and load the model a CRATE / CRATE-MAE state dict describes."""
    args = args or {}
    if "to_patch_embedding.2.weight" in state:  # CRATE classifier
        require_keys(state, ["pos_embedding", "cls_token", "transformer.layers.0.0.fn.qkv.weight", "mlp_head.1.weight"], source, "CRATE classifier")
        width, patch_dim = state["to_patch_embedding.2.weight"].shape
        channels = int(overrides.get("num_channels", 3))
        patch = int(round((patch_dim / channels) ** 0.5))
        side = int(round((state["pos_embedding"].shape[1] - 1) ** 0.5))
        heads = num_heads(width, "num_attention_heads", overrides, source)
        inner = state["transformer.layers.0.0.fn.qkv.weight"].shape[0]
        if inner % heads:
            raise CheckpointError(f"{source}: the attention width {inner} is not divisible by {heads} heads; give num_attention_heads")
        fields = dict(variant="crate", image_size=side * patch, patch_size=patch, num_channels=channels, hidden_size=width,
                      num_hidden_layers=count_indexed(state, "transformer.layers."), num_attention_heads=heads,
                      attention_head_size=inner // heads, ista_lambda=0.1, num_labels=state["mlp_head.1.weight"].shape[0], pooling="cls")
        model_class, prefix, rename = CrateMAEForImageClassification, "crate.", _rename_crate
    else:  # CRATE-MAE
        require_keys(state, ["cls_token", "patch_embed.proj.weight", "decoder_pos_embed", "mask_token"], source, "CRATE-MAE")
        proj = state["patch_embed.proj.weight"]
        width, channels, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
        side = int(round((state["decoder_pos_embed"].shape[1] - 1) ** 0.5))
        has_decoder = "decoder_pred.weight" in state
        fields = dict(variant="crate_mae", image_size=side * patch, patch_size=patch, num_channels=channels, hidden_size=width,
                      num_hidden_layers=count_indexed(state, "blocks."), num_attention_heads=num_heads(width, "num_attention_heads", overrides, source),
                      decoder_num_hidden_layers=count_indexed(state, "decoder_blocks.") if has_decoder else 0,
                      decoder_num_attention_heads=num_heads(width, "decoder_num_attention_heads", overrides, source))
        for name in ("norm_pix_loss", "mask_ratio"):
            if args.get(name) is not None:
                fields[name] = args[name]
        if has_decoder:
            model_class, prefix = CrateMAEForPreTraining, "crate."
        else:
            model_class, prefix = CrateMAEModel, ""
        rename = _rename_crate_mae
        state = {k: v for k, v in state.items() if k not in UNUSED_CRATE_MAE_KEYS}
    config = apply_overrides(CrateMAEConfig(**fields), overrides)
    return build_and_load(model_class, config, state, lambda key: rename(key, prefix), source)


def convert_checkpoint(path: str, overrides: dict):
    checkpoint = load_checkpoint(path)
    state = find_state_dict(checkpoint, path)
    model = convert_state(state, overrides, path, checkpoint_args(checkpoint))
    return model, CrateMAEImageProcessor.for_image_size(model.config.image_size)
