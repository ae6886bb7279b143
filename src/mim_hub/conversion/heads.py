"""Head counts cannot be read from tensor shapes: the released sizes' counts, else width // 64."""

from __future__ import annotations

# width -> heads of the released models (ViT-Ti 192/3, ViT-S and CRATE-T 384/6, CRATE-S 576/12,
# ViT-B and CRATE-B 768/12, ViT-L and CRATE-L 1024/16, ViT-H/14 1280/16)
RELEASED_VIT_HEADS = {192: 3, 384: 6, 576: 12, 768: 12, 1024: 16, 1280: 16}


def default_num_heads(hidden_size: int) -> int:
    """Heads for an encoder of width `hidden_size`: the released sizes' count, else width // 64."""
    if hidden_size in RELEASED_VIT_HEADS:
        return RELEASED_VIT_HEADS[hidden_size]
    return max(1, hidden_size // 64)


def default_decoder_heads(decoder_hidden_size: int) -> int:
    """MAE-style decoders use 16 heads (512-wide in every release), else width // 64."""
    if decoder_hidden_size % 16 == 0 and decoder_hidden_size // 16 >= 16:
        return 16
    return max(1, decoder_hidden_size // 64)
