"""Checkpoint renames as data (transformers' `WeightRenaming` tables, timm's `checkpoint_filter_fn`):
each method states its original -> ours key renames as one `Renames` table, and this one applier
renames every key.

A table is an ordered list of (pattern, target) rules. A key takes the target of the first pattern
that matches it whole (`re.fullmatch`); a target refers to the pattern's groups as `\\g<n>` and to
the caller's prefix (e.g. "mae." inside a classifier) as `{prefix}`. A key no rule matches is not a
key of the method: the converters refuse it by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


class Renames:
    def __init__(self, rules: Iterable[tuple[str, str]]):
        self.rules = [(re.compile(pattern), target) for pattern, target in rules]

    def __add__(self, other: "Renames") -> "Renames":
        joined = Renames(())
        joined.rules = self.rules + other.rules
        return joined

    def __call__(self, key: str, prefix: str = "") -> str | None:
        for pattern, target in self.rules:
            match = pattern.fullmatch(key)
            if match:
                return match.expand(target.replace("{prefix}", prefix))
        return None


def block_rules(source: str, target: str, renames: Iterable[tuple[str, str]] = (), keep: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """Rules for the numbered blocks `source.N.*` -> `target.N.*` (`source` may hold groups of its
    own, which `target` may use): each (old, new) renames the part after the block number that
    starts with `old`; the rest is kept as it is (`keep=None`), or only when it starts with one of
    `keep` (others are unknown)."""
    own = re.compile(source).groups
    index, rest = rf"\g<{own + 1}>", rf"\g<{own + 2}>"
    rules = [(rf"{source}\.(\d+)\.{re.escape(old)}(.*)", rf"{target}.{index}.{new}{rest}") for old, new in renames]
    if keep is None:
        return rules + [(rf"{source}\.(\d+)\.(.*)", rf"{target}.{index}.{rest}")]
    keep = tuple(keep)
    if not keep:
        return rules
    return rules + [(rf"{source}\.(\d+)\.((?:" + "|".join(map(re.escape, keep)) + ").*)", rf"{target}.{index}.{rest}")]


__all__ = ["Renames", "block_rules"]
