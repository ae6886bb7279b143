"""Original SimMIM checkpoints (microsoft/SimMIM) -> mim_hub SimMIM models.

Kinds, told apart by their keys:
- pre-training (`simmim_pretrain__*.pth`, training checkpoints): `encoder.*` + `decoder.0.*`
  -> `SimMIMForPreTraining`;
- encoder only (`encoder.*` without decoder, or a bare backbone without head) -> `SimMIMModel`;
- fine-tuned classifier (`simmim_finetune__*.pth`): `head.*` -> `SimMIMForImageClassification`.
The backbone is ViT when there are `blocks.N.*`, Swin when there are `layers.N.blocks.M.*`.

Every size is read from tensor shapes: widths, depths, MLP ratio, head counts (the relative
position tables have one column per head), the window (table rows), the image size (ViT: the
relative tables or `pos_embed`; Swin: the shifted blocks' `attn_mask` buffers or
`absolute_pos_embed`), `encoder_stride` (decoder channels). Training checkpoints that carry the
yacs `config` (read without running code) supply what shapes cannot; `overrides` (the
`--config` JSON) beat both. Overriding `image_size` / `window_size` to other values than the
checkpoint's (fine-tuning at another resolution) resizes the relative position tables as the
original's `remap_pretrained_keys_*` (geometric spacing, bicubic spline, in torch); a ViT
pre-training table shared by all blocks is copied into every block when the target config asks
for per-block tables (`use_relative_position_bias=true, use_shared_relative_position_bias=false`).
"""

from __future__ import annotations

import re

import torch

from ..layers.relative_position import infer_window_size, relative_position_index
from ..models.simmim import SimMIMConfig, SimMIMForImageClassification, SimMIMForPreTraining, SimMIMImageProcessor, SimMIMModel
from ..models.geometry import adapt_geometry
from ..models.simmim.modeling_simmim_swin import shifted_window_mask
from .common import build_empty, count_indexed, load_converted_state, rename_state
from .renames import Renames, block_rules
from .heads import num_heads
from .loading import CheckpointError, checkpoint_args, find_state_dict, load_checkpoint

_VIT_BLOCK = (
    ("gamma_1", "layer_scale1.gamma"),
    ("gamma_2", "layer_scale2.gamma"),
    ("attn.qkv.", "attn.qkv_proj."),
    ("attn.proj.", "attn.o_proj."),
    ("attn.relative_position_bias_table", "relative_position_bias.relative_position_bias_table"),
)
_SWIN_BLOCK = (
    ("attn.qkv.", "attn.qkv_proj."),
    ("attn.proj.", "attn.o_proj."),
    ("attn.relative_position_bias_table", "relative_position_bias.relative_position_bias_table"),
)
# buffers the original saves; they follow from the geometry and are checked, not loaded
_DERIVED = re.compile(r"(relative_position_index|attn_mask)$")


_COMMON = [
    (r"decoder\.0\.(.*)", r"decoder.0.\g<1>"),
    (r"head\.(.*)", r"head.\g<1>"),
    (r"(mask_token|cls_token)", r"{prefix}embeddings.\g<1>"),
    (r"pos_embed|absolute_pos_embed", "{prefix}embeddings.pos_embed"),
    (r"patch_embed\.proj\.(weight|bias)", r"{prefix}embeddings.patch_embed.projection.\g<1>"),
]
# the original's keys (without `encoder.`) -> ours under {prefix} ('simmim.' inside the heads), per backbone
VIT_RENAMES = Renames([
    *_COMMON,
    (r"norm\.(.*)", r"{prefix}layernorm.\g<1>"),
    (r"fc_norm\.(.*)", r"{prefix}fc_norm.\g<1>"),
    ("rel_pos_bias.relative_position_bias_table", "{prefix}relative_position_bias.relative_position_bias_table"),
    *block_rules("blocks", "{prefix}encoder.layers", _VIT_BLOCK),
])
SWIN_RENAMES = Renames([
    *_COMMON,
    (r"patch_embed\.norm\.(weight|bias)", r"{prefix}embeddings.norm.\g<1>"),
    (r"norm\.(.*)", r"{prefix}layernorm.\g<1>"),
    *block_rules(r"layers\.(\d+)\.blocks", r"{prefix}encoder.layers.\g<1>.blocks", _SWIN_BLOCK),
    (r"layers\.(\d+)\.downsample\.(norm|reduction)\.(.*)", r"{prefix}encoder.layers.\g<1>.downsample.\g<2>.\g<3>"),
])


def rename_simmim_key(key: str, backbone: str, prefix: str) -> str | None:
    """Original SimMIM key (without `encoder.`) -> ours; `prefix` is 'simmim.' inside the heads.
    Returns None for keys we do not know."""
    return (VIT_RENAMES if backbone == "vit" else SWIN_RENAMES)(key, prefix)


def _get(tree, *path):
    for name in path:
        if not isinstance(tree, dict) or name not in tree:
            return None
        tree = tree[name]
    return tree


def fields_from_yacs(config: dict, backbone: str) -> dict:
    """Config fields a training checkpoint's yacs `config` records (what shapes cannot tell)."""
    if not config:
        return {}
    fields = {}
    size = _get(config, "DATA", "IMG_SIZE")
    if isinstance(size, int):
        fields["image_size"] = size
    for name, path in (("mask_patch_size", ("DATA", "MASK_PATCH_SIZE")), ("mask_ratio", ("DATA", "MASK_RATIO")),
                       ("drop_path_rate", ("MODEL", "DROP_PATH_RATE"))):
        value = _get(config, *path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            fields[name] = value
    if backbone == "vit":
        heads = _get(config, "MODEL", "VIT", "NUM_HEADS")
        if isinstance(heads, int):
            fields["num_attention_heads"] = heads
        init_values = _get(config, "MODEL", "VIT", "INIT_VALUES")
        if isinstance(init_values, (int, float)):
            fields["layer_scale_init_value"] = float(init_values)
    else:
        heads = _get(config, "MODEL", "SWIN", "NUM_HEADS")
        if isinstance(heads, (list, tuple)):
            fields["num_heads"] = [int(h) for h in heads]
        window = _get(config, "MODEL", "SWIN", "WINDOW_SIZE")
        if isinstance(window, int):
            fields["window_size"] = window
    return fields


def _square(count: int, what: str, source: str) -> int:
    side = int(round(count**0.5))
    if side * side != count:
        raise CheckpointError(f"{source}: {what} has {count} positions, not a square grid")
    return side


def infer_vit_fields(state: dict[str, torch.Tensor], source: str) -> dict:
    proj = state["patch_embed.proj.weight"]
    hidden, channels, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    layers = count_indexed(state, "blocks.")
    fields = dict(
        backbone="vit", patch_size=patch, num_channels=channels, hidden_size=hidden, num_hidden_layers=layers,
        qkv_bias="blocks.0.attn.q_bias" in state if layers else True,
        layer_scale_init_value=0.1 if "blocks.0.gamma_1" in state or not layers else None,
        use_absolute_position_embeddings="pos_embed" in state,
        use_shared_relative_position_bias="rel_pos_bias.relative_position_bias_table" in state,
        use_relative_position_bias="blocks.0.attn.relative_position_bias_table" in state,
        use_mean_pooling="fc_norm.weight" in state,
    )
    if layers:
        fields["intermediate_size"] = state["blocks.0.mlp.fc1.weight"].shape[0]
    table = state.get("rel_pos_bias.relative_position_bias_table", state.get("blocks.0.attn.relative_position_bias_table"))
    if table is not None:
        fields["num_attention_heads"] = table.shape[1]
        try:
            window = infer_window_size(table.shape[0], cls_token=True)
        except ValueError as error:
            raise CheckpointError(f"{source}: {error}") from None
        fields["image_size"] = window[0] * patch
    elif "pos_embed" in state:
        fields["image_size"] = _square(state["pos_embed"].shape[1] - 1, "pos_embed", source) * patch
    return fields


def infer_swin_fields(state: dict[str, torch.Tensor], source: str) -> dict:
    proj = state["patch_embed.proj.weight"]
    embed, channels, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    stages = count_indexed(state, "layers.")
    if stages == 0:
        raise CheckpointError(f"{source}: no Swin stages ('layers.N.*') found")
    depths = [count_indexed(state, f"layers.{i}.blocks.") for i in range(stages)]
    if min(depths) == 0:
        raise CheckpointError(f"{source}: a Swin stage without blocks: depths {depths}")
    heads, windows = [], []
    for stage in range(stages):
        table = state.get(f"layers.{stage}.blocks.0.attn.relative_position_bias_table")
        if table is None:
            raise CheckpointError(f"{source}: missing keys ['layers.{stage}.blocks.0.attn.relative_position_bias_table']")
        heads.append(table.shape[1])
        try:
            windows.append(infer_window_size(table.shape[0], cls_token=False)[0])
        except ValueError as error:
            raise CheckpointError(f"{source}: {error}") from None
    fields = dict(
        backbone="swin", patch_size=patch, num_channels=channels, embed_dim=embed, depths=depths, num_heads=heads,
        window_size=windows[0], qkv_bias="layers.0.blocks.0.attn.qkv.bias" in state,
        patch_norm="patch_embed.norm.weight" in state, use_absolute_position_embeddings="absolute_pos_embed" in state,
        mlp_ratio=state["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed,
    )
    if fields["mlp_ratio"] == int(fields["mlp_ratio"]):
        fields["mlp_ratio"] = float(fields["mlp_ratio"])
    # the image size: a shifted block's mask has one row per window of its stage
    for stage in range(stages):
        mask = state.get(f"layers.{stage}.blocks.1.attn_mask")
        if mask is not None:
            resolution = _square(mask.shape[0], f"layers.{stage}.blocks.1.attn_mask", source) * windows[stage]
            fields["image_size"] = resolution * 2**stage * patch
            break
    else:
        if "absolute_pos_embed" in state:
            fields["image_size"] = _square(state["absolute_pos_embed"].shape[1], "absolute_pos_embed", source) * patch
        elif min(windows) < windows[0]:  # a later stage shrank its window to the stage resolution
            stage = windows.index(min(windows))
            fields["image_size"] = windows[stage] * 2**stage * patch
        else:  # every stage fits in one window: the image is no larger than that
            fields["image_size"] = windows[0] * patch
    return fields


def _check_derived(state: dict[str, torch.Tensor], model, backbone: str, prefix: str, source: str) -> None:
    """The original's index and mask buffers must be the ones our geometry gives."""
    for key, value in state.items():
        if not _DERIVED.search(key):
            continue
        if key.endswith("relative_position_index"):
            cls_token = backbone == "vit"
            side = _square(value.shape[0] - int(cls_token), key, source)
            expected = relative_position_index(side, cls_token=cls_token)
            if tuple(value.shape) != tuple(expected.shape) or not torch.equal(value.long(), expected):
                raise CheckpointError(f"{source}: {key} is not the standard relative position index of its window")
        else:
            match = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.attn_mask", key)
            if not match:
                raise CheckpointError(f"{source}: unexpected buffer {key}")
            stage, index = int(match.group(1)), int(match.group(2))
            block = model.get_submodule(f"{prefix}encoder.layers.{stage}.blocks.{index}")
            if block.shift_size == 0:
                raise CheckpointError(f"{source}: {key}: the checkpoint shifts a block our geometry does not (check image_size/window_size)")
            h, w = block.resolution
            expected = shifted_window_mask(h, w, block.window_size, block.shift_size)
            if tuple(value.shape) != tuple(expected.shape) or not torch.equal(value.float(), expected):
                raise CheckpointError(
                    f"{source}: {key} of shape {tuple(value.shape)} does not match a {h}x{w} stage with window {block.window_size} "
                    "(pass image_size / window_size in --config)"
                )


def build_simmim(state: dict[str, torch.Tensor], overrides: dict, source: str, *, args: dict | None = None):
    """Infer the kind, backbone and config of an original SimMIM state dict and load it."""
    has_decoder = "decoder.0.weight" in state
    if any(k.startswith("encoder.") for k in state):
        others = sorted(k for k in state if not k.startswith(("encoder.", "decoder.0.")))
        if others:
            raise CheckpointError(f"{source}: cannot convert: unexpected keys {others[:20]}")
        state = {(k[len("encoder."):] if k.startswith("encoder.") else k): v for k, v in state.items()}
    if "patch_embed.proj.weight" not in state:
        raise CheckpointError(f"{source}: not a SimMIM checkpoint: missing keys ['patch_embed.proj.weight'] (found {sorted(state)[:5]})")
    has_head = "head.weight" in state
    if has_decoder and has_head:
        raise CheckpointError(f"{source}: holds both a decoder and a classifier head; cannot tell its kind")
    if any(re.match(r"layers\.\d+\.blocks\.", k) for k in state):
        backbone, fields = "swin", infer_swin_fields(state, source)
    elif any(k.startswith("blocks.") for k in state) or "cls_token" in state:
        backbone, fields = "vit", infer_vit_fields(state, source)
    else:
        raise CheckpointError(f"{source}: neither a SimMIM ViT ('blocks.N.*') nor a Swin ('layers.N.blocks.M.*') checkpoint")
    yacs = fields_from_yacs(args or {}, backbone)
    for name, value in yacs.items():  # shapes win; the yacs config fills what they cannot tell
        fields.setdefault(name, value)
    if backbone == "vit" and "num_attention_heads" not in fields:
        fields["num_attention_heads"] = num_heads(fields["hidden_size"], "num_attention_heads", overrides, source)
    if has_decoder:
        out_channels = state["decoder.0.weight"].shape[0]
        stride = int(round((out_channels / fields["num_channels"]) ** 0.5))
        if stride * stride * fields["num_channels"] != out_channels:
            raise CheckpointError(f"{source}: decoder.0 has {out_channels} output channels, not stride**2 * {fields['num_channels']}")
        fields["encoder_stride"] = stride
    if has_head:
        fields["num_labels"] = state["head.weight"].shape[0]
    if "image_size" not in fields:
        fields["image_size"] = 224 if backbone == "vit" else 192
    overrides = dict(overrides or {})
    known = set(SimMIMConfig(backbone=backbone).to_dict())
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ValueError(f"--config names fields that SimMIMConfig does not have: {unknown}")
    try:
        config = SimMIMConfig(**{**fields, **overrides})
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{source}: {error}") from None
    if config.backbone != backbone:
        raise CheckpointError(f"{source}: a {backbone} checkpoint cannot be converted with backbone={config.backbone!r}")

    if has_decoder:
        model_class, prefix = SimMIMForPreTraining, "simmim."
    elif has_head:
        model_class, prefix = SimMIMForImageClassification, "simmim."
    else:
        model_class, prefix = SimMIMModel, ""
    # a pre-training ViT table shared by all blocks, fine-tuned as one table per block
    if backbone == "vit" and config.use_relative_position_bias and not fields["use_relative_position_bias"] \
            and "rel_pos_bias.relative_position_bias_table" in state and not config.use_shared_relative_position_bias:
        shared = state.pop("rel_pos_bias.relative_position_bias_table")
        for index in range(config.num_hidden_layers):
            state[f"blocks.{index}.attn.relative_position_bias_table"] = shared.clone()

    derived = {key: value for key, value in state.items() if _DERIVED.search(key)}
    renamed, original_names = rename_state(model_class, config, {k: v for k, v in state.items() if k not in derived},
                                           lambda key: rename_simmim_key(key, backbone, prefix), source)
    if model_class is SimMIMModel:
        model = _build_model(config, use_mask_token=f"{prefix}embeddings.mask_token" in renamed)
    else:
        model = build_empty(model_class, config)
    geometry_changed = any(k in overrides for k in ("image_size", "window_size"))
    if not geometry_changed:
        _check_derived(derived, model, backbone, prefix, source)
    renamed = adapt_geometry(renamed, model, source=source, error=CheckpointError)
    load_converted_state(model, renamed, source, original_names=original_names)
    return model.eval()


def _build_model(config, use_mask_token: bool):
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return SimMIMModel(config, use_mask_token=use_mask_token)


def convert_checkpoint(path: str, overrides: dict):
    checkpoint = load_checkpoint(path)
    state = find_state_dict(checkpoint, path)
    model = build_simmim(state, overrides, path, args=checkpoint_args(checkpoint))
    size = model.config.image_hw[0]
    return model, SimMIMImageProcessor.for_image_size(size)
