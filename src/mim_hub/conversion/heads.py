"""Head counts cannot be read from tensor shapes: the released sizes' counts, else width // 64.

A count for a width that no release has is a guess. The converters say so with a
`GuessedHeadsWarning` (a `UserWarning`, printed on stderr by `mim-hub convert`) naming the field,
the guessed value and the `--config '{"FIELD": N}'` that overrides it; a count given in `--config`
(or `overrides=` from Python) is used as it is, without a warning."""

from __future__ import annotations

import warnings

# width -> heads of the released models (ViT-Ti 192/3, ViT-S and CRATE-T 384/6, CRATE-S 576/12,
# ViT-B and CRATE-B 768/12, ViT-L and CRATE-L 1024/16, ViT-H/14 1280/16)
RELEASED_VIT_HEADS = {192: 3, 384: 6, 576: 12, 768: 12, 1024: 16, 1280: 16}
# MAE-style decoders: 512 wide with 16 heads in every release (MAE, ConvMAE, ColorMAE)
RELEASED_DECODER_HEADS = {512: 16}


class GuessedHeadsWarning(UserWarning):
    """A converter chose a head count the checkpoint's shapes do not determine and no release has."""


def warn_guessed_heads(source: str, field: str, guess: int, width: int, how: str) -> None:
    warnings.warn(
        f"{source}: {field} cannot be read from tensor shapes, and width {width} is no released size: guessed {guess} "
        f"({how}). If the original model used another count, its outputs will differ with the same weights: pass "
        f"--config '{{\"{field}\": N}}' to mim-hub convert (overrides={{\"{field}\": N}} from Python).",
        GuessedHeadsWarning, stacklevel=3,
    )


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


def num_heads(width: int, field: str, overrides: dict | None, source: str, *, decoder: bool = False) -> int:
    """The head count for `field`: `overrides[field]` if given; else the released size's count;
    else a guess (`default_num_heads` / `default_decoder_heads`) with a `GuessedHeadsWarning`."""
    if overrides and overrides.get(field) is not None:
        return int(overrides[field])
    released = RELEASED_DECODER_HEADS if decoder else RELEASED_VIT_HEADS
    if width in released:
        return released[width]
    guess = default_decoder_heads(width) if decoder else default_num_heads(width)
    how = "16, as the released 512-wide decoders" if decoder and guess == 16 else "width // 64, at least 1"
    warn_guessed_heads(source, field, guess, width, how)
    return guess
