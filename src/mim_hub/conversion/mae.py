"""Original MAE checkpoints (facebookresearch/mae) -> mim_hub MAE models.

Kinds, told apart by their keys:
- pre-training with decoder (`mae_visualize_vit_*.pth`, training checkpoints): `decoder_*` keys
  -> `MAEForPreTraining`;
- encoder only (`mae_pretrain_vit_*.pth`): blocks + `norm`, no head -> `MAEModel`;
- fine-tuned classifier (`mae_finetuned_vit_*.pth`): `head.*`, with `fc_norm` (global pool) or
  `norm` (cls token) -> `MAEForImageClassification`.
Every size is read from tensor shapes; head counts and loss options from `overrides` (or the
checkpoint's `args`), else the released defaults.
"""

from __future__ import annotations

import re

import torch

from ..models.mae import MAEConfig, MAEForImageClassification, MAEForPreTraining, MAEImageProcessor, MAEModel
from .common import apply_overrides, build_and_load, count_indexed, require_keys
from .heads import num_heads
from .loading import CheckpointError, checkpoint_args, find_state_dict, load_checkpoint

_BLOCK_RENAMES = (("attn.qkv.", "attn.qkv_proj."), ("attn.proj.", "attn.o_proj."))


def _rename_block_key(rest: str) -> str:
    for old, new in _BLOCK_RENAMES:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def rename_mae_key(key: str, encoder_prefix: str) -> str | None:
    """Original MAE key -> ours (`encoder_prefix` is 'mae.' inside heads, '' for MAEModel)."""
    p = encoder_prefix
    simple = {
        "cls_token": f"{p}embeddings.cls_token",
        "pos_embed": f"{p}embeddings.pos_embed",
        "mask_token": "decoder.mask_token",
        "decoder_pos_embed": "decoder.decoder_pos_embed",
    }
    if key in simple:
        return simple[key]
    if key.startswith("patch_embed.proj."):
        return f"{p}embeddings.patch_embed.projection." + key.split(".")[-1]
    match = re.match(r"blocks\.(\d+)\.(.*)", key)
    if match:
        return f"{p}encoder.layers.{match.group(1)}.{_rename_block_key(match.group(2))}"
    match = re.match(r"decoder_blocks\.(\d+)\.(.*)", key)
    if match:
        return f"decoder.transformer.layers.{match.group(1)}.{_rename_block_key(match.group(2))}"
    for name in ("norm", "fc_norm"):
        if key.startswith(name + "."):
            target = "layernorm" if name == "norm" else "fc_norm"
            return f"{p}{target}." + key[len(name) + 1:]
    for name in ("decoder_embed", "decoder_norm", "decoder_pred"):
        if key.startswith(name + "."):
            return "decoder." + key
    if key.startswith("head."):
        return key
    return None


def infer_mae_config(state: dict[str, torch.Tensor], source: str, overrides: dict | None = None) -> dict:
    """Config fields that tensor shapes determine (head counts: `overrides`, the released sizes', or a
    guess with a warning)."""
    require_keys(state, ["cls_token", "pos_embed", "patch_embed.proj.weight"], source, "MAE")
    proj = state["patch_embed.proj.weight"]
    hidden, channels, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    num_patches = state["pos_embed"].shape[1] - 1
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise CheckpointError(f"{source}: pos_embed has {num_patches} patch rows, not a square grid")
    layers = count_indexed(state, "blocks.")
    if layers == 0:
        raise CheckpointError(f"{source}: no transformer blocks ('blocks.N.*') found")
    fields = dict(
        image_size=side * patch, patch_size=patch, num_channels=channels, hidden_size=hidden,
        num_hidden_layers=layers, intermediate_size=state["blocks.0.mlp.fc1.weight"].shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in state, num_attention_heads=num_heads(hidden, "num_attention_heads", overrides, source),
        use_mean_pooling="fc_norm.weight" in state,
    )
    return {**fields, **decoder_and_head_fields(state, patch, channels, source, overrides)}


def decoder_and_head_fields(state: dict[str, torch.Tensor], patch: int, channels: int, source: str, overrides: dict | None) -> dict:
    """The fields of MAE's decoder (`decoder_embed`, `decoder_blocks.N`, `decoder_pred`) and of a
    classifier `head`, where the checkpoint has them: MAE's layout, which ConvMAE's shares."""
    fields = {}
    if "decoder_embed.weight" in state:
        decoder_hidden = state["decoder_embed.weight"].shape[0]
        decoder_layers = count_indexed(state, "decoder_blocks.")
        fields.update(
            decoder_hidden_size=decoder_hidden, decoder_num_hidden_layers=decoder_layers,
            decoder_num_attention_heads=num_heads(decoder_hidden, "decoder_num_attention_heads", overrides, source, decoder=True),
            decoder_intermediate_size=state["decoder_blocks.0.mlp.fc1.weight"].shape[0] if decoder_layers else 4 * decoder_hidden,
        )
        pred = state["decoder_pred.weight"].shape[0]
        if pred != patch * patch * channels:
            raise CheckpointError(f"{source}: decoder_pred predicts {pred} values per patch, expected {patch}*{patch}*{channels}")
    if "head.weight" in state:
        fields["num_labels"] = state["head.weight"].shape[0]
    return fields


def _fields_from_args(args: dict) -> dict:
    """Options a training checkpoint's `args` Namespace records."""
    fields = {}
    for name in ("norm_pix_loss", "mask_ratio"):
        if name in args and args[name] is not None:
            fields[name] = args[name]
    if "drop_path" in args and args["drop_path"] is not None:
        fields["drop_path_rate"] = float(args["drop_path"])
    return fields


def build_mae(state: dict[str, torch.Tensor], overrides: dict, source: str, *, args: dict | None = None, config_class=MAEConfig, classes=None,
              rename_key=rename_mae_key):
    """Infer the kind and config of an original-key MAE state dict and load it into our model.

    Shared with the MAE-family methods that keep MAE's key layout (`config_class`, `classes`;
    `rename_key(key, encoder_prefix)` for keys of their own, e.g. HPM's loss predictor)."""
    classes = classes or {"pretraining": MAEForPreTraining, "model": MAEModel, "classification": MAEForImageClassification}
    fields = infer_mae_config(state, source, overrides)
    fields.update(_fields_from_args(args or {}))
    has_decoder = "decoder_embed.weight" in state
    has_head = "head.weight" in state
    if has_decoder and has_head:
        raise CheckpointError(f"{source}: holds both a decoder and a classifier head; cannot tell its kind")
    config = config_class(**fields)
    config = apply_overrides(config, overrides)
    if has_decoder:
        model_class, prefix = classes["pretraining"], "mae."
    elif has_head:
        model_class, prefix = classes["classification"], "mae."
    else:
        model_class, prefix = classes["model"], ""
    return build_and_load(model_class, config, state, lambda key: rename_key(key, prefix), source)


def convert_checkpoint(path: str, overrides: dict):
    checkpoint = load_checkpoint(path)
    state = find_state_dict(checkpoint, path)
    model = build_mae(state, overrides, path, args=checkpoint_args(checkpoint))
    processor = MAEImageProcessor.for_image_size(model.config.image_size if isinstance(model.config.image_size, int) else model.config.image_size[0])
    return model, processor
