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
