"""Seeded, stratified index splits of a labelled dataset: the validation split fine-tuning selects
its epoch on (carved from the training split, so model selection never sees the test split), and
the low-label subsets (k labelled images per class) of the low-label protocol.

Only the label array is read (one int64 per image), so both work at ImageNet scale; the images
themselves are never opened. The same (labels, seed) give the same indices on every machine and
for every model, so every method of a benchmark fine-tunes on the same images.
"""

from __future__ import annotations

import numpy as np


def _class_members(labels, seed: int):
    """{class: its indices in a seeded random order}; a class's order depends only on the seed,
    the class and its members."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"expected a non-empty 1-D array of labels, got shape {labels.shape}")
    if (labels < 0).any():
        raise ValueError(f"{int((labels < 0).sum())} images have no label (-1): a stratified split needs every label")
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    members = np.split(order, starts[1:])
    return {int(c): np.random.default_rng([seed, int(c)]).permutation(m) for c, m in zip(classes, members)}


def stratified_holdout(labels, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out) indices, sorted: `fraction` of each class held out (rounded, at least one
    image of every class with two or more; a class of one image stays in `kept`)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    kept, held = [], []
    for members in _class_members(labels, seed).values():
        count = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        held.append(members[:count])
        kept.append(members[count:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def per_class_subset(labels, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `per_class` images of every class (seeded): the labelled images of a
    low-label fine-tune. A class with fewer images is an error, not a smaller class."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    chosen = []
    for label, members in _class_members(labels, seed).items():
        if len(members) < per_class:
            raise ValueError(f"class {label} has {len(members)} images, fewer than the {per_class} per class asked for")
        chosen.append(members[:per_class])
    return np.sort(np.concatenate(chosen))


def validation_split(images, fraction: float, seed: int = 0):
    """(train, validation) `ImageDataset`s: a seeded, stratified `fraction` of `images` held out
    for model selection (`stratified_holdout`)."""
    kept, held = stratified_holdout(images.labels, fraction, seed)
    train, validation = images.subset(kept), images.subset(held)
    validation.name = f"{images.name} (validation: {len(held)} images held out of {len(images)}, seed {seed})"
    return train, validation
