"""HPM configuration: MAE's, plus how the loss predictor learns and how hard the masks get."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..mae.configuration_mae import MAEConfig
from ..validation import Choice, Float


@strict
class HPMConfig(MAEConfig):
    r"""HPM (Wang et al., "Hard Patches Mining for Masked Image Modeling", CVPR 2023): MAE with a
    second decoder that predicts each patch's reconstruction loss; a teacher's predictions choose
    the hardest patches to mask.

    Defaults are the released ViT-B/16 (decoder 512 wide, 8 layers, 16 heads; `norm_pix_loss`
    off, as HPM's scripts). The loss predictor has the decoder's depth, width and heads.

    Args (besides MAEConfig's):
        loss_prediction_objective: "relative" (HPM's default `--relative`: for every pair of
            masked patches, a binary cross-entropy on which of the two is harder) or "absolute"
            (MSE to the per-image standardised reconstruction losses).
        max_hard_share: the share of the masked patches chosen by predicted loss at the end of
            pre-training (it rises linearly from 0 over the epochs; HPM: 0.5). Read by the
            pre-training recipe's mask source, not by the model.
    """

    model_type = "hpm"

    loss_prediction_objective: str = "relative"
    max_hard_share: float = 0.5

    FIELD_RULES = {**MAEConfig.FIELD_RULES, "loss_prediction_objective": Choice("relative", "absolute"), "max_hard_share": Float(0, 1)}


__all__ = ["HPMConfig"]
