"""ColorMAE checkpoints (mmpretrain layout) -> mim_hub ColorMAE models.

mmpretrain names are mapped to facebookresearch/mae's, then MAE's converter does the rest (the
networks are the same). `backbone.ln1` is the encoder's final norm; `backbone.ln2` the pooled
norm of an `avg_featmap` classifier (MAE's `fc_norm`); `neck.*` the decoder; `head.fc` the
classifier. Files written by mmengine carry `meta` and `message_hub` objects: only tensors are
read (see `loading.py`). The stored sin-cos tables are used as they are (mmpretrain puts the
row coordinate in the first half, MAE the column).
"""

from __future__ import annotations


from ..models.color_mae import ColorMAEConfig, ColorMAEForImageClassification, ColorMAEForPreTraining, ColorMAEImageProcessor, ColorMAEModel
from .renames import Renames, block_rules
from .loading import CheckpointError, find_state_dict, load_checkpoint
from .mae import build_mae
from ..layers.patch_embed import to_2tuple

_BLOCK = (("ln1.", "norm1."), ("ln2.", "norm2."), ("ffn.layers.0.0.", "mlp.fc1."), ("ffn.layers.1.", "mlp.fc2."))


# mmpretrain's MAE/ViT keys -> facebookresearch/mae's (whose converter then applies); unknown keys pass through
MMPRETRAIN_RENAMES = Renames([
    *block_rules(r"backbone\.layers", "blocks", _BLOCK),
    *block_rules(r"neck\.decoder_blocks", "decoder_blocks", _BLOCK),
    (r"backbone\.patch_embed\.projection\.(.*)", r"patch_embed.proj.\g<1>"),
    (r"backbone\.ln1\.(.*)", r"norm.\g<1>"),
    (r"backbone\.ln2\.(.*)", r"fc_norm.\g<1>"),
    (r"backbone\.(.*)", r"\g<1>"),
    (r"neck\.ln1\.(.*)", r"decoder_norm.\g<1>"),
    (r"neck\.(.*)", r"\g<1>"),
    (r"head\.fc\.(.*)", r"head.\g<1>"),
    (r"(.*)", r"\g<1>"),
])


def mmpretrain_to_mae_key(key: str) -> str:
    """An mmpretrain MAE/ViT key under facebookresearch/mae's name (unknown keys pass through)."""
    return MMPRETRAIN_RENAMES(key)


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
