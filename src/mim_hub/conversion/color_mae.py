"""ColorMAE checkpoints (mmpretrain layout) -> mim_hub ColorMAE models.

mmpretrain names are mapped to facebookresearch/mae's, then MAE's converter does the rest (the
networks are the same). `backbone.ln1` is the encoder's final norm; `backbone.ln2` the pooled
norm of an `avg_featmap` classifier (MAE's `fc_norm`); `neck.*` the decoder; `head.fc` the
classifier. Files written by mmengine carry `meta` and `message_hub` objects: only tensors are
read (see `loading.py`). The stored sin-cos tables are used as they are (mmpretrain puts the
row coordinate in the first half, MAE the column).
"""

from __future__ import annotations

import re

from ..models.color_mae import ColorMAEConfig, ColorMAEForImageClassification, ColorMAEForPreTraining, ColorMAEImageProcessor, ColorMAEModel
from .loading import CheckpointError, find_state_dict, load_checkpoint
from .mae import build_mae
from ..layers.patch_embed import to_2tuple

_BLOCK = (("ln1.", "norm1."), ("ln2.", "norm2."), ("ffn.layers.0.0.", "mlp.fc1."), ("ffn.layers.1.", "mlp.fc2."))


def _block(rest: str) -> str:
    for old, new in _BLOCK:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


# mmpretrain's module prefix -> (its numbered blocks, their name in facebookresearch/mae, its other renames)
_PARTS = {
    "backbone.": ("layers", "blocks", {"patch_embed.projection.": "patch_embed.proj.", "ln1.": "norm.", "ln2.": "fc_norm."}),
    "neck.": ("decoder_blocks", "decoder_blocks", {"ln1.": "decoder_norm."}),
    "head.fc.": (None, None, {"": "head."}),
}


def mmpretrain_to_mae_key(key: str) -> str:
    """An mmpretrain MAE/ViT key under facebookresearch/mae's name (unknown keys pass through)."""
    for part, (blocks, mae_blocks, renames) in _PARTS.items():
        if not key.startswith(part):
            continue
        rest = key[len(part):]
        match = re.match(rf"{blocks}\.(\d+)\.(.*)", rest) if blocks else None
        if match:
            return f"{mae_blocks}.{match.group(1)}.{_block(match.group(2))}"
        old = next((old for old in renames if rest.startswith(old)), None)
        return rest if old is None else renames[old] + rest[len(old):]
    return key


def convert_checkpoint(path: str, overrides: dict):
    checkpoint = load_checkpoint(path)
    state = find_state_dict(checkpoint, path, keys=("state_dict", "model"))
    if not any(k.startswith("backbone.") for k in state):
        raise CheckpointError(f"{path}: not an mmpretrain ColorMAE checkpoint (no 'backbone.*' keys; found {sorted(state)[:5]})")
    renamed = {mmpretrain_to_mae_key(k): v for k, v in state.items()}
    if "norm.weight" in renamed and "fc_norm.weight" in renamed:
        raise CheckpointError(f"{path}: both a final norm (backbone.ln1) and a pooled norm (backbone.ln2): an mmpretrain ViT with "
                              "final_norm=True and out_type='avg_featmap' is not a ColorMAE/MAE configuration")
    classes = {"pretraining": ColorMAEForPreTraining, "model": ColorMAEModel, "classification": ColorMAEForImageClassification}
    model = build_mae(renamed, overrides, path, config_class=ColorMAEConfig, classes=classes)
    size = to_2tuple(model.config.image_size)[0]
    return model, ColorMAEImageProcessor.for_image_size(size)
