"""Original CAE checkpoints (Atten4Vis/CAE) -> mim_hub CAE models.

Kinds, told apart by their keys:
- pre-training (`cae_*_pretrain.pth`, training checkpoints `{'model', 'optimizer', 'epoch',
  'scaler', 'args'}`): `encoder.*`, `alignment_encoder.*` (the same tensors: dropped after a
  check), optional `encoder_to_regresser[_norm].*`, `regresser.*`, `decoder.*`, `rd_pos_embed`,
  `mask_token` -> `CAEForPreTraining`;
- encoder only (`encoder.*` alone, or bare ViT keys without a head) -> `CAEModel`;
- fine-tuned classifier (`modeling_finetune.VisionTransformer`: bare keys with `head.*`, per-block
  or shared relative position tables, `fc_norm` or `norm`) -> `CAEForImageClassification`.
Every size is read from tensor shapes; head counts from `overrides`, else a relative position
table's columns where the encoder has one, else the released models' (12 heads for
CAE-tiny/small/base encoders, 16 for large; 12 for every regressor and decoder), else a guess
(width // 64) with a `GuessedHeadsWarning`; loss and mask options from `overrides`, else the checkpoint's
`args`, else CAE's defaults.
"""

from __future__ import annotations

import warnings

import torch

from ..layers.relative_position import infer_window_size, relative_position_index
from ..models.cae import CAEConfig, CAEForImageClassification, CAEForPreTraining, CAEImageProcessor, CAEModel
from .common import apply_overrides, build_and_load, count_indexed, require_keys
from .renames import Renames, block_rules
from .heads import default_num_heads, warn_guessed_heads
from .loading import CheckpointError, checkpoint_args, find_state_dict, load_checkpoint
from ..layers.patch_embed import to_2tuple

# CAE's released encoders: width -> heads (tiny 192 and small 384 use 12 heads, unlike ViT's).
RELEASED_CAE_HEADS = {192: 12, 384: 12, 768: 12, 1024: 16}
# The regressor and decoder always use the constructor's default 12 heads in released runs
# (`run_pretraining.py` does not forward `--decoder_num_heads`).
RELEASED_DECODER_HEADS = 12

_BLOCK_RENAMES = (
    ("gamma_1", "layer_scale1.gamma"), ("gamma_2", "layer_scale2.gamma"),
    ("attn.qkv.", "attn.qkv_proj."), ("attn.proj.", "attn.o_proj."),
)
_REGRESSOR_RENAMES = (
    ("gamma_1_cross", "layer_scale1.gamma"), ("gamma_2_cross", "layer_scale2.gamma"),
    ("norm1_q.", "norm_q."), ("norm1_k.", "norm_k."), ("norm1_v.", "norm_v."), ("norm2_cross.", "norm2."),
    ("cross_attn.q.", "cross_attn.q_proj."), ("cross_attn.k.", "cross_attn.k_proj."), ("cross_attn.v.", "cross_attn.v_proj."),
    ("cross_attn.proj.", "cross_attn.o_proj."), ("cross_attn.q_bias", "cross_attn.q_bias"), ("cross_attn.v_bias", "cross_attn.v_bias"),
    ("mlp_cross.", "mlp."),
)
_BLOCK_KEEP = ("norm1.", "norm2.", "mlp.fc1.", "mlp.fc2.", "attn.q_bias", "attn.v_bias")

# CAE's encoder / fine-tuning ViT (its keys without `encoder.`) -> ours under {prefix}
ENCODER_RENAMES = Renames([
    ("cls_token", "{prefix}embeddings.cls_token"),
    ("pos_embed", "{prefix}embeddings.pos_embed"),
    ("rel_pos_bias.relative_position_bias_table", "{prefix}shared_relative_position_bias.relative_position_bias_table"),
    (r"patch_embed\.proj\.(.*)", r"{prefix}embeddings.patch_embed.projection.\g<1>"),
    (r"blocks\.(\d+)\.attn\.relative_position_bias_table", r"{prefix}relative_position_bias.\g<1>.relative_position_bias_table"),
    *block_rules("blocks", "{prefix}encoder.layers", _BLOCK_RENAMES, keep=_BLOCK_KEEP),
    (r"norm\.(.*)", r"{prefix}layernorm.\g<1>"),
    (r"fc_norm\.(.*)", r"{prefix}fc_norm.\g<1>"),
])
# what a pre-training checkpoint holds besides its encoder
PRETRAINING_RENAMES = Renames([
    ("rd_pos_embed", "decoder_pos_embed"),
    ("mask_token", "mask_token"),
    (r"encoder_to_regresser_norm\.(.*)", r"encoder_to_regressor_norm.\g<1>"),
    (r"encoder_to_regresser\.(.*)", r"encoder_to_regressor.\g<1>"),
    *block_rules(r"regresser\.regressor_blocks", "regressor.layers", _REGRESSOR_RENAMES, keep=()),
    (r"regresser\.norm\.(.*)", r"regressor.layernorm.\g<1>"),
    *block_rules(r"decoder\.decoder_blocks", "decoder.transformer.layers", _BLOCK_RENAMES, keep=_BLOCK_KEEP),
    (r"decoder\.norm\.(.*)", r"decoder.layernorm.\g<1>"),
    (r"decoder\.head\.(.*)", r"decoder.head.\g<1>"),
])


def rename_encoder_key(key: str, prefix: str) -> str | None:
    """A key of CAE's encoder / fine-tuning ViT (without `encoder.`) -> ours under `prefix`."""
    return ENCODER_RENAMES(key, prefix)


def rename_cae_key(key: str, kind: str) -> str | None:
    """Original key -> ours for `kind` in ('pretraining', 'model', 'classification')."""
    if kind == "classification":
        return key if key.startswith("head.") else ENCODER_RENAMES(key, "cae.")
    if kind == "model":
        return ENCODER_RENAMES(key, "")
    if key.startswith("encoder."):
        return ENCODER_RENAMES(key[len("encoder."):], "cae.")
    return PRETRAINING_RENAMES(key)


def _heads_for(width: int, inner: int, candidates, field: str, given: int | None, source: str, released: int | None = None) -> int:
    """A head count whose CAE attention width `heads * (width // heads)` equals the checkpoint's: `given`,
    else the first candidate that fits, with a warning unless it is the released model's count (`released`)."""
    if given is not None:
        if given <= 0 or given > width or given * (width // given) != inner:
            raise CheckpointError(
                f"{source}: {field}={given} gives an attention width of {given * (width // max(given, 1))}, but the checkpoint's is "
                f"{inner} (model width {width}); pass the right count with --config '{{\"{field}\": N}}'"
            )
        return given
    for heads in candidates:
        if 0 < heads <= width and heads * (width // heads) == inner:
            if heads != released:
                warn_guessed_heads(source, field, heads, width, f"the first of {candidates} that gives the attention width {inner}")
            return heads
    raise CheckpointError(f"{source}: cannot tell {field} from an attention width of {inner} at model width {width}; "
                          f"pass it with --config '{{\"{field}\": N}}'")


def _grid_from(state: dict, source: str) -> int | None:
    """Patch-grid side from the position table or a relative position table (square grids)."""
    if "pos_embed" in state:
        patches = state["pos_embed"].shape[1] - 1
        side = int(round(patches**0.5))
        if side * side != patches:
            raise CheckpointError(f"{source}: pos_embed has {patches} patch rows, not a square grid")
        return side
    for key in ("blocks.0.attn.relative_position_bias_table", "rel_pos_bias.relative_position_bias_table"):
        if key in state:
            try:
                return infer_window_size(state[key].shape[0])[0]
            except ValueError as error:
                raise CheckpointError(f"{source}: {key}: {error}") from None
    return None


def infer_encoder_fields(state: dict, source: str, overrides: dict, args: dict) -> dict:
    """Config fields of the encoder (keys without `encoder.`)."""
    require_keys(state, ["cls_token", "patch_embed.proj.weight"], source, "CAE")
    proj = state["patch_embed.proj.weight"]
    hidden, channels, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    layers = count_indexed(state, "blocks.")
    if layers == 0:
        raise CheckpointError(f"{source}: no transformer blocks ('blocks.N.*') found")
    side = _grid_from(state, source)
    if side is not None:
        image_size = side * patch
    elif "image_size" in overrides:
        image_size = overrides["image_size"]
    else:
        image_size = int(args.get("input_size") or 224)
    inner = state["blocks.0.attn.qkv.weight"].shape[0] // 3
    table = state.get("rel_pos_bias.relative_position_bias_table", state.get("blocks.0.attn.relative_position_bias_table"))
    if table is not None and table.ndim == 2:  # a relative position table has one column per head: no guess
        candidates, released = [table.shape[1]], table.shape[1]
    else:
        candidates = [RELEASED_CAE_HEADS.get(hidden, default_num_heads(hidden)), default_num_heads(hidden), max(1, hidden // 32)]
        released = RELEASED_CAE_HEADS.get(hidden)
    heads = _heads_for(hidden, inner, candidates, "num_attention_heads", overrides.get("num_attention_heads"), source, released)
    return dict(
        image_size=image_size, patch_size=patch, num_channels=channels, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=state["blocks.0.mlp.fc1.weight"].shape[0],
        qkv_bias="blocks.0.attn.q_bias" in state,
        layer_scale_init_value=0.1 if "blocks.0.gamma_1" in state else 0.0,
        use_absolute_position_embeddings="pos_embed" in state,
        use_relative_position_bias="blocks.0.attn.relative_position_bias_table" in state,
        use_shared_relative_position_bias="rel_pos_bias.relative_position_bias_table" in state,
        use_mean_pooling="fc_norm.weight" in state,
    )


def infer_head_fields(state: dict, source: str, overrides: dict, encoder_qkv_bias: bool) -> dict:
    """Regressor/decoder fields of a pre-training state dict (original keys)."""
    require_keys(state, ["mask_token", "rd_pos_embed", "decoder.head.weight", "regresser.norm.weight"], source, "CAE pre-training")
    width = state["mask_token"].shape[-1]
    reg_layers = count_indexed(state, "regresser.regressor_blocks.")
    dec_layers = count_indexed(state, "decoder.decoder_blocks.")
    fields = dict(decoder_hidden_size=width, regressor_num_hidden_layers=reg_layers, decoder_num_hidden_layers=dec_layers,
                  vocab_size=state["decoder.head.weight"].shape[0])
    candidates = [RELEASED_DECODER_HEADS, max(1, width // 64), max(1, width // 32)]
    released = RELEASED_DECODER_HEADS if width in RELEASED_CAE_HEADS else None
    intermediate = set()
    if reg_layers:
        inner = state["regresser.regressor_blocks.0.cross_attn.q.weight"].shape[0]
        fields["regressor_num_attention_heads"] = _heads_for(width, inner, candidates, "regressor_num_attention_heads",
                                                             overrides.get("regressor_num_attention_heads"), source, released)
        intermediate.add(state["regresser.regressor_blocks.0.mlp_cross.fc1.weight"].shape[0])
        if ("regresser.regressor_blocks.0.cross_attn.q_bias" in state) != encoder_qkv_bias:
            raise CheckpointError(f"{source}: the regressor's q/v biases and the encoder's disagree (one qkv_bias flag in CAE)")
    if dec_layers:
        inner = state["decoder.decoder_blocks.0.attn.qkv.weight"].shape[0] // 3
        fields["decoder_num_attention_heads"] = _heads_for(width, inner, candidates, "decoder_num_attention_heads",
                                                           overrides.get("decoder_num_attention_heads"), source, released)
        intermediate.add(state["decoder.decoder_blocks.0.mlp.fc1.weight"].shape[0])
        fields["decoder_layer_scale_init_value"] = 0.1 if "decoder.decoder_blocks.0.gamma_1" in state else 0.0
    if len(intermediate) > 1:
        raise CheckpointError(f"{source}: regressor and decoder MLP widths differ ({sorted(intermediate)}); CAE uses one mlp_ratio")
    if intermediate:
        fields["decoder_intermediate_size"] = intermediate.pop()
    return fields


def _fields_from_args(args: dict, num_patches: int) -> dict:
    """Options a training checkpoint's `args` Namespace records (pre-training masks and loss)."""
    fields = {}
    for ours, theirs in (("align_loss_weight", "align_loss_weight"), ("num_masking_patches", "num_mask_patches"),
                         ("min_mask_patches_per_block", "min_mask_patches_per_block"),
                         ("max_mask_patches_per_block", "max_mask_patches_per_block")):
        if args.get(theirs) is not None:
            fields[ours] = args[theirs]
    if args.get("drop_path") is not None:
        fields["drop_path_rate"] = float(args["drop_path"])
    if "num_masking_patches" not in fields:
        fields["num_masking_patches"] = max(1, num_patches // 2)  # CAE: 98 of 196
    return fields


def _check_relative_position_indices(state: dict, grid: int, source: str) -> None:
    expected = relative_position_index((grid, grid))
    for key, value in state.items():
        if key.endswith("relative_position_index") and not torch.equal(value.long(), expected):
            raise CheckpointError(f"{source}: {key} is not BEiT's relative position index for a {grid}x{grid} grid")


def build_cae(state: dict[str, torch.Tensor], overrides: dict, source: str, *, args: dict | None = None):
    """Infer the kind and config of an original CAE state dict and load it into our model."""
    args = args or {}
    overrides = dict(overrides)
    pretraining = any(k.startswith(("regresser.", "decoder.")) for k in state) or "rd_pos_embed" in state
    if pretraining:
        kind = "pretraining"
        encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        alignment = {k[len("alignment_encoder."):]: v for k, v in state.items() if k.startswith("alignment_encoder.")}
        differing = sorted(k for k, v in alignment.items() if k in encoder and not torch.equal(v, encoder[k]))
        if differing or (alignment and set(alignment) != set(encoder)):
            warnings.warn(f"{source}: alignment_encoder.* differs from encoder.* ({differing[:5]}); CAE re-copies the encoder into it "
                          "on every step, so the encoder's weights are used", stacklevel=2)
        state = {k: v for k, v in state.items() if not k.startswith("alignment_encoder.")}
        fields = infer_encoder_fields(encoder, source, overrides, args)
        fields.update(infer_head_fields(state, source, overrides, fields["qkv_bias"]))
        # the converted encoder is the pre-training one: final norm, no relative position bias
        fields.update(use_mean_pooling=False, use_relative_position_bias=False, use_shared_relative_position_bias=False)
    else:
        if "head.weight" in state:
            kind = "classification"
            fields = infer_encoder_fields(state, source, overrides, args)
            fields["num_labels"] = state["head.weight"].shape[0]
        else:
            kind = "model"
            if any(k.startswith("encoder.") for k in state):
                state = {k[len("encoder."):]: v for k, v in state.items() if not k.startswith("alignment_encoder.")}
            fields = infer_encoder_fields(state, source, overrides, args)
        if "norm.weight" in state and "fc_norm.weight" in state:
            raise CheckpointError(f"{source}: both a final norm and a pooled fc_norm: not a CAE configuration")
        if "norm.weight" not in state and "fc_norm.weight" not in state:
            raise CheckpointError(f"{source}: neither 'norm.*' nor 'fc_norm.*': a linear-probe (un-normed cls) checkpoint is not supported")
    grid = fields["image_size"] // fields["patch_size"]
    _check_relative_position_indices(state if kind != "pretraining" else {}, grid, source)
    state = {k: v for k, v in state.items() if not k.endswith("relative_position_index")}
    fields.update(_fields_from_args(args, grid * grid))
    config = apply_overrides(CAEConfig(**fields), overrides)
    model_class = {"pretraining": CAEForPreTraining, "classification": CAEForImageClassification, "model": CAEModel}[kind]
    return build_and_load(model_class, config, state, lambda key: rename_cae_key(key, kind), source)


def convert_checkpoint(path: str, overrides: dict):
    checkpoint = load_checkpoint(path)
    state = find_state_dict(checkpoint, path)
    model = build_cae(state, overrides, path, args=checkpoint_args(checkpoint))
    size = to_2tuple(model.config.image_size)[0]
    return model, CAEImageProcessor.for_image_size(size)
