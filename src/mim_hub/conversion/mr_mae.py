"""ConvMAE-format checkpoints (Alpha-VL/ConvMAE: ConvMAE and ConvMAE-v2 / MR-MCMAE) -> mim_hub MR-MAE.

Kinds, told apart by their keys:
- pre-training with decoder (`models_convmae.MaskedAutoencoderConvViT`, training checkpoints
  `{'model', 'optimizer', 'epoch', 'scaler', 'args'}`): `decoder_*` -> `MRMAEForPreTraining`;
- encoder only (the released ConvMAE-Base file: decoder, `mask_token` and the
  `stage{1,2}_output_decode` fusion layers filtered out; ConvMAE-v2 files keep the fusion layers
  and `mask_token` and add a `cls_token`): -> `MRMAEModel` (with the fusion layers when present;
  a `mask_token` without a decoder is unused and dropped);
- fine-tuned classifier (`models_convvit.ConvViT`): `head.*` with `fc_norm` (global pool) or
  `norm` -> `MRMAEForImageClassification`.
Plain-ViT MR-MAE models use facebookresearch/mae's key layout (`patch_embed.proj`, `blocks.N`) and
are converted with `backbone="vit"`.

Every size comes from tensor shapes (stage widths, depths, stage patch sizes, MLP widths, the
depthwise kernel, the token grid and so the image size, decoder sizes); head counts and loss
options from `--config` (else the released sizes' heads, else width // 64 with a warning, and the checkpoint's
`args` for `norm_pix_loss` / `mask_ratio`).
"""

from __future__ import annotations

import math
import re

import torch

from ..models.mr_mae import MRMAEConfig, MRMAEForImageClassification, MRMAEForPreTraining, MRMAEImageProcessor, MRMAEModel
from .common import apply_overrides, build_and_load, count_indexed, require_keys
from .heads import num_heads
from .loading import CheckpointError, checkpoint_args, find_state_dict, load_checkpoint
from .mae import BLOCK_RENAMES, _fields_from_args, decoder_and_head_fields, infer_mae_config, rename_mae_key
from .renames import Renames, block_rules
from ..layers.patch_embed import to_2tuple

_DECODER_KEYS = ("mask_token", "decoder_pos_embed")


def rename_convmae_key(key: str, prefix: str) -> str | None:
    """ConvMAE key -> ours (`prefix` is 'mr_mae.' inside the heads, '' for MRMAEModel)."""
    p = prefix + "embeddings."
    simple = {"pos_embed": p + "pos_embed", "cls_token": p + "cls_token"}
    if key in simple:
        return simple[key]
    match = re.match(r"patch_embed([1-4])\.(.*)", key)
    if match:
        stage, rest = int(match.group(1)), match.group(2)
        if stage == 4:
            return p + "patch_proj." + rest
        rest = rest.replace("proj.", "projection.", 1) if rest.startswith("proj.") else rest
        return (p + f"stages.{stage - 1}.patch_embed." if stage < 3 else p + "patch_embed.") + rest
    match = re.match(r"stage([12])_output_decode\.(weight|bias)$", key)
    if match:
        return p + f"fusion.{int(match.group(1)) - 1}.{match.group(2)}"
    match = re.match(r"blocks([12])\.(\d+)\.(.*)", key)
    if match:
        rest = match.group(3)
        rest = "dwconv." + rest[len("attn."):] if rest.startswith("attn.") else rest
        return p + f"stages.{int(match.group(1)) - 1}.blocks.{match.group(2)}.{rest}"
    if key.startswith(("decoder_", "mask_token")):
        return rename_mae_key(key, prefix)
    return _CONVMAE_TRANSFORMER(key, prefix)


# ConvMAE's transformer stage, final norms and head (its convolution stages: above)
_CONVMAE_TRANSFORMER = Renames([
    *block_rules("blocks3", "{prefix}encoder.layers", BLOCK_RENAMES),
    (r"norm\.(.*)", r"{prefix}layernorm.\g<1>"),
    (r"fc_norm\.(.*)", r"{prefix}fc_norm.\g<1>"),
    (r"head\.(.*)", r"head.\g<1>"),
])


def _is_square(n: int) -> bool:
    return math.isqrt(n) ** 2 == n


def _grid_side(rows: int, source: str, what: str) -> int:
    side = math.isqrt(rows)
    if side * side != rows:
        raise CheckpointError(f"{source}: {what} has {rows} patch rows, not a square grid")
    return side


def _with_cls_row(table: torch.Tensor, rows: int) -> torch.Tensor:
    """A [1, N, D] table given the zero cls row of a model with a cls token ([1, 1 + N, D])."""
    if table.shape[1] == rows:
        return torch.cat([table.new_zeros(1, 1, table.shape[-1]), table], dim=1)
    return table


def infer_convmae_config(state: dict[str, torch.Tensor], source: str, overrides: dict | None = None) -> dict:
    """Config fields that the tensor shapes of a ConvMAE-format state dict determine."""
    try:
        return _infer_convmae_config(state, source, overrides)
    except KeyError as error:  # a tensor the shapes are read from is absent
        raise CheckpointError(f"{source}: cannot convert: missing key {error}") from None


def _infer_convmae_config(state: dict[str, torch.Tensor], source: str, overrides: dict | None) -> dict:
    require_keys(state, ["patch_embed1.proj.weight", "patch_embed2.proj.weight", "patch_embed3.proj.weight",
                         "patch_embed4.weight", "pos_embed"], source, "ConvMAE")
    w1, w2, w3 = (state[f"patch_embed{i}.proj.weight"] for i in (1, 2, 3))
    c1, c2, hidden = w1.shape[0], w2.shape[0], w3.shape[0]
    p1, p2, p3 = w1.shape[-1], w2.shape[-1], w3.shape[-1]
    if w2.shape[1] != c1 or w3.shape[1] != c2:
        raise CheckpointError(f"{source}: the patch embeddings' channels do not chain ({tuple(w1.shape)}, {tuple(w2.shape)}, {tuple(w3.shape)})")
    use_cls = "cls_token" in state
    rows = state["pos_embed"].shape[1]
    side = _grid_side(rows - 1 if use_cls and not _is_square(rows) else rows, source, "pos_embed")
    depths = [count_indexed(state, f"blocks{i}.") for i in (1, 2, 3)]
    if depths[2] == 0:
        raise CheckpointError(f"{source}: no transformer blocks ('blocks3.N.*') found")
    conv_inter = [state[f"blocks{i}.0.mlp.fc1.weight"].shape[0] if depths[i - 1] else 4 * c for i, c in ((1, c1), (2, c2))]
    kernel = next((state[f"blocks{i}.0.attn.weight"].shape[-1] for i in (1, 2) if depths[i - 1]), 5)
    patch = p1 * p2 * p3
    fields = dict(
        backbone="convvit", image_size=side * patch, patch_size=patch, num_channels=w1.shape[1],
        conv_hidden_sizes=[c1, c2], conv_depths=depths[:2], conv_patch_sizes=[p1, p2], conv_intermediate_sizes=conv_inter,
        conv_kernel_size=kernel, use_cls_token=use_cls, use_multiscale_fusion="stage1_output_decode.weight" in state,
        hidden_size=hidden, num_hidden_layers=depths[2], num_attention_heads=num_heads(hidden, "num_attention_heads", overrides, source),
        intermediate_size=state["blocks3.0.mlp.fc1.weight"].shape[0], qkv_bias="blocks3.0.attn.qkv.bias" in state,
        use_mean_pooling="fc_norm.weight" in state,
    )
    for stage, factor in ((1, p2 * p3), (2, p3)):
        key = f"stage{stage}_output_decode.weight"
        if key in state and tuple(state[key].shape[-2:]) != (factor, factor):
            raise CheckpointError(f"{source}: {key} has a {tuple(state[key].shape[-2:])} kernel, expected {factor}x{factor} "
                                  f"(the stage-{stage} map down to the token grid)")
    return {**fields, **decoder_and_head_fields(state, patch, fields["num_channels"], source, overrides)}


def _kind(state: dict[str, torch.Tensor], source: str) -> str:
    has_decoder, has_head = "decoder_embed.weight" in state, "head.weight" in state
    if has_decoder and has_head:
        raise CheckpointError(f"{source}: holds both a decoder and a classifier head; cannot tell its kind")
    return "pretraining" if has_decoder else "classification" if has_head else "model"


_CLASSES = {"pretraining": MRMAEForPreTraining, "classification": MRMAEForImageClassification, "model": MRMAEModel}


def convert_state(state: dict[str, torch.Tensor], overrides: dict, source: str, args: dict | None = None):
    """Build and load the MR-MAE model an original state dict describes."""
    kind = _kind(state, source)
    prefix = "" if kind == "model" else "mr_mae."
    if "patch_embed1.proj.weight" in state:  # ConvMAE hybrid
        fields = infer_convmae_config(state, source, overrides)
        state = dict(state)
        if kind != "pretraining":  # a mask token without a decoder is never used
            for key in _DECODER_KEYS:
                state.pop(key, None)
        if fields["use_cls_token"]:  # a cls token without a position row: give it a zero one
            count = (fields["image_size"] // fields["patch_size"]) ** 2
            for key in ("pos_embed", "decoder_pos_embed"):
                if key in state:
                    state[key] = _with_cls_row(state[key], count)
        rename = rename_convmae_key
    elif "patch_embed.proj.weight" in state:  # plain ViT in MAE's layout
        fields = {**infer_mae_config(state, source, overrides), "backbone": "vit"}
        rename = rename_mae_key
    else:
        raise CheckpointError(f"{source}: not a ConvMAE / MR-MAE checkpoint (no 'patch_embed1.proj.weight' nor "
                              f"'patch_embed.proj.weight'; keys start {sorted(state)[:5]})")
    fields.update(_fields_from_args(args or {}))
    config = apply_overrides(MRMAEConfig(**fields), overrides)
    return build_and_load(_CLASSES[kind], config, state, lambda key: rename(key, prefix), source)


def convert_checkpoint(path: str, overrides: dict):
    checkpoint = load_checkpoint(path)
    state = find_state_dict(checkpoint, path)
    model = convert_state(state, overrides, path, checkpoint_args(checkpoint))
    size = to_2tuple(model.config.image_size)[0]
    return model, MRMAEImageProcessor.for_image_size(size)
