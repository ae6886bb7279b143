"""CRATE-MAE and CRATE configuration (white-box transformers: MSSA attention + ISTA sparse coding)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..backbone_config import MIMBackboneConfigMixin
from ..validation import (BOOL, COUNT, EPS, NON_NEGATIVE, POSITIVE, PROBABILITY, SIZE, Choice, Float, Int, MIMConfig,
                          check_divisible, check_image_size)


@strict
class CrateMAEConfig(MIMBackboneConfigMixin, MIMConfig):
    r"""CRATE-MAE (Pai et al., ICLR 2024) and the CRATE classifier (Yu et al., NeurIPS 2023) as one family.

    Defaults are CRATE-MAE-Base with the original code's numerics.

    Args:
        variant: "crate_mae" (the masked autoencoder: conv patch embedding, fixed sin-cos
            positions, final norm) or "crate" (the supervised classifier of `model/crate.py`:
            LayerNorm-Linear-LayerNorm patch embedding of channel-last patches, learned
            positions, no final norm, `mlp_head` on the pooled token).
        hidden_size, num_hidden_layers, num_attention_heads, attention_head_size: the encoder;
            `attention_head_size` defaults to hidden_size // heads (CRATE classifiers set it).
        decoder_num_hidden_layers, decoder_num_attention_heads: the CRATE-MAE decoder (its width
            is the encoder's: the original never applies its `decoder_embed`).
        ista_step_size, ista_lambda: the ISTA step (eta) and sparsity threshold (lambda); not
            stored in checkpoints: 0.1 and 0.5 for CRATE-MAE, 0.1 and 0.1 for CRATE.
        layer_norm_eps: the blocks' LayerNorms (1e-5); final_layer_norm_eps: the final and decoder
            norms of CRATE-MAE (1e-6).
        pooling: classifier input, "cls" (CRATE) or "mean" (of patch tokens).
        mask_ratio, norm_pix_loss: pre-training.
    """

    model_type = "crate_mae"

    variant: str = "crate_mae"
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    attention_head_size: int | None = None
    decoder_num_hidden_layers: int = 12
    decoder_num_attention_heads: int = 12
    ista_step_size: float = 0.1
    ista_lambda: float = 0.5
    layer_norm_eps: float = 1e-5
    final_layer_norm_eps: float = 1e-6
    pooling: str = "cls"
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    initializer_range: float = 0.02

    FIELD_RULES = {
        "variant": Choice("crate_mae", "crate"), "image_size": SIZE, "patch_size": POSITIVE, "num_channels": POSITIVE,
        "hidden_size": POSITIVE, "num_hidden_layers": COUNT, "num_attention_heads": POSITIVE,
        "attention_head_size": Int(1, optional=True), "decoder_num_hidden_layers": COUNT, "decoder_num_attention_heads": POSITIVE,
        "ista_step_size": Float(0, low_open=True), "ista_lambda": NON_NEGATIVE, "layer_norm_eps": EPS,
        "final_layer_norm_eps": EPS, "pooling": Choice("cls", "mean"), "mask_ratio": PROBABILITY, "norm_pix_loss": BOOL,
        "initializer_range": NON_NEGATIVE,
    }

    def __post_init__(self, **kwargs):
        check_image_size(self)
        if self.attention_head_size is None:
            check_divisible(self, "hidden_size", "num_attention_heads")
        if self.variant == "crate_mae":
            check_divisible(self, "hidden_size", "decoder_num_attention_heads")
            if self.hidden_size % 4:
                raise ValueError(f"CrateMAEConfig: hidden_size {self.hidden_size} must be divisible by 4 (2-D sin-cos positions)")
        super().__post_init__(**kwargs)

    @property
    def head_size(self) -> int:
        return self.attention_head_size or self.hidden_size // self.num_attention_heads


__all__ = ["CrateMAEConfig"]
