"""Config checks shared by every method: a config that cannot work is refused at construction,
with a message naming the fields."""

from __future__ import annotations


def check_positive(config, *fields: str) -> None:
    for field in fields:
        value = getattr(config, field)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(v is None or v <= 0 for v in values):
            raise ValueError(f"{type(config).__name__}: {field} must be positive, got {value}")


def check_divisible(config, numerator: str, denominator: str) -> None:
    top, bottom = getattr(config, numerator), getattr(config, denominator)
    if bottom <= 0 or top % bottom:
        raise ValueError(
            f"{type(config).__name__}: {numerator} ({top}) must be divisible by {denominator} ({bottom})"
        )


def check_mask_ratio(config, field: str = "mask_ratio") -> None:
    ratio = getattr(config, field)
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"{type(config).__name__}: {field} must be in [0, 1), got {ratio}")


def check_image_size(config, field: str = "image_size", patch_field: str = "patch_size") -> list[int]:
    """`image_size` is a positive int or a (height, width) pair, and every side is a whole number
    of patches; returns the sides as a list."""
    name, value, patch = type(config).__name__, getattr(config, field), getattr(config, patch_field)
    sides = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(sides) not in (1, 2) or any(isinstance(side, bool) or not isinstance(side, int) or side <= 0 for side in sides):
        raise ValueError(f"{name}: {field} must be a positive int or (height, width), got {value}")
    if any(side % patch for side in sides):
        raise ValueError(f"{name}: {field} {value} is not divisible by {patch_field} {patch}")
    return sides
