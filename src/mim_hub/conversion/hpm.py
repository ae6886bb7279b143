"""Original HPM checkpoints (Haochen-Wang409/HPM) -> mim_hub HPM models.

HPM keeps facebookresearch/mae's key layout and adds the loss predictor
(`decoder_blocks_losspred.N`, `decoder_norm_losspred`, `decoder_pred_losspred`), so MAE's
converter does the rest. Kinds, told apart by their keys:
- pre-training (`main_pretrain.py`'s `{'state_dict', 'ema_state_dict', 'epoch', 'optimizer',
  'model': arch name, 'loss_scaler'}`, `module.`-prefixed from multi-GPU runs or not): the
  online model (`state_dict`, which HPM's fine-tuning loads) -> `HPMForPreTraining`; the EMA
  teacher (`ema_state_dict`) is a companion written to `<output>/ema` (`convert_companions`);
  the optimizer and scaler states are left out;
- encoder only: blocks + `norm` -> `HPMModel`;
- fine-tuned classifier (`main_finetune.py`'s `{'state_dict': ...}`, or `{'model': ...}`): `head.*`
  with `fc_norm` (global pool, HPM's default) or `norm` -> `HPMForImageClassification`.
Sizes come from tensor shapes; head counts, `norm_pix_loss`, `mask_ratio` and
`loss_prediction_objective` from `overrides` (else the released values: 12/16 heads, 16 in the
decoders, no norm_pix_loss, 0.75, relative).
"""

from __future__ import annotations

import re

from ..models.hpm import HPMConfig, HPMForImageClassification, HPMForPreTraining, HPMImageProcessor, HPMModel
from .loading import CheckpointError, find_state_dict, load_checkpoint
from .mae import _rename_block_key, build_mae, rename_mae_key

CLASSES = {"pretraining": HPMForPreTraining, "model": HPMModel, "classification": HPMForImageClassification}
_LOSS_PREDICTOR = {"decoder_norm_losspred.": "decoder.loss_norm.", "decoder_pred_losspred.": "decoder.loss_pred."}


def rename_hpm_key(key: str, encoder_prefix: str) -> str | None:
    """Original HPM key -> ours: the loss predictor's, then MAE's."""
    match = re.match(r"decoder_blocks_losspred\.(\d+)\.(.*)", key)
    if match:
        return f"decoder.loss_transformer.layers.{match.group(1)}.{_rename_block_key(match.group(2))}"
    for old, new in _LOSS_PREDICTOR.items():
        if key.startswith(old):
            return new + key[len(old):]
    return rename_mae_key(key, encoder_prefix)


def _processor(model):
    size = model.config.image_size if isinstance(model.config.image_size, int) else model.config.image_size[0]
    return HPMImageProcessor.for_image_size(size)


def _build(state, overrides: dict, source: str):
    if "decoder_embed.weight" in state and "decoder_pred_losspred.weight" not in state:
        raise CheckpointError(f"{source}: has MAE's decoder but no loss predictor ('decoder_*_losspred' keys): an MAE checkpoint, "
                              "not HPM's (convert it with --method mae)")
    model = build_mae(state, overrides, source, config_class=HPMConfig, classes=CLASSES, rename_key=rename_hpm_key)
    return model, _processor(model)


def convert_checkpoint(path: str, overrides: dict):
    checkpoint = load_checkpoint(path)
    return _build(find_state_dict(checkpoint, path, keys=("state_dict", "model", "module")), overrides, path)


def convert_companions(path: str, overrides: dict) -> dict:
    """The EMA teacher of a pre-training checkpoint (`ema_state_dict`), as `{"ema": (model, processor)}`
    (empty for a file without one)."""
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("ema_state_dict"), dict):
        return {}
    return {"ema": _build(find_state_dict(checkpoint["ema_state_dict"], f"{path} (ema_state_dict)", keys=()), overrides,
                          f"{path} (ema_state_dict)")}
