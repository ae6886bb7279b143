"""Split names, written once: which split a folder or file belongs to, aliases ('val' for
'validation'), the split a spec's files form, and the split a run evaluates on."""

from __future__ import annotations

import logging
import os
import re

from .errors import DatasetError

logger = logging.getLogger("mim_hub.data")
# split folder/file keywords, as datasets' data-file patterns define them
SPLIT_KEYWORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
                  "test": ("test", "testing", "eval", "evaluation")}


def split_of(name: str) -> str | None:
    """The split a folder or file name belongs to ('train', 'validation', 'test'), or None."""
    lowered = os.path.basename(name.rstrip("/")).lower()
    for split, words in SPLIT_KEYWORDS.items():
        for word in words:
            if re.search(rf"(^|[-._ ]){word}([-._ 0-9]|$)", lowered):
                return split
    return None


def canonical_split(split: str) -> str:
    for canonical, words in SPLIT_KEYWORDS.items():
        if split.lower() in words:
            return canonical
    return split


def choose_split(splits: dict, split: str, spec: str):
    """`splits[split]` (aliases such as 'val' accepted), or an error naming the splits found."""
    if split in splits:
        return splits[split]
    canonical = canonical_split(split)
    if canonical in splits:
        return splits[canonical]
    raise DatasetError(f"{spec}: no split {split!r}; the splits found are {sorted(splits)}")


def group_files_by_split(files: list[str], spec: str) -> dict[str, list[str]]:
    """Files named after a split form that split; when no file is, all of them are 'train'."""
    root = spec.split(":", 1)[1] if spec.startswith(("webdataset:", "imagefolder:")) else spec
    groups: dict[str, list[str]] = {}
    for file in files:  # the file's name, or a folder between the given folder and the file
        parts = os.path.relpath(file, root).split(os.sep) if os.path.isdir(root) else [os.path.basename(file)]
        split = next((s for s in map(split_of, reversed(parts)) if s), None)
        groups.setdefault(split, []).append(file)
    if set(groups) == {None}:
        return {"train": groups[None]}
    if None in groups:
        raise DatasetError(f"{spec}: some files are named after a split ({', '.join(sorted(k for k in groups if k))}) and "
                           f"some are not (e.g. {groups[None][0]}); name every file after its split or give one split's files")
    return groups


def evaluation_split(split: str, eval_split: str | None, available: list[str] | None) -> str | None:
    """The split to evaluate on: `eval_split` as given, else 'test' or 'validation' when the
    dataset has one (`available`, None: unknown) besides the training split `split`; never the
    training split unless asked for."""
    if eval_split:
        if canonical_split(eval_split) == canonical_split(split):
            logger.warning("evaluating on the training split %r, as --eval-split asks", split)
        return eval_split
    if available is None:
        return None
    for candidate in ("test", "validation"):
        if candidate in available and candidate != canonical_split(split):
            return candidate
    return None
