"""`digits-seg` (bundled, offline): several of scikit-learn's handwritten digits pasted at random
sizes and places on a 64x64 canvas; the label map holds 1 + the digit's class on its stroke
pixels and 0 (background) elsewhere (11 classes). Item i of a split is drawn from
`numpy.random.default_rng([seed, split, i])`, so the set is the same on every machine and
nothing is stored. Train and test use disjoint digit images (the digits' 1347/450 split)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..segmentation import SegmentationDataset
from ..source import Source
from .digits import digits_split

DIGITS_SEG_CANVAS = 64
DIGITS_SEG_SIZES = {"train": 1000, "test": 200, "validation": 200}
_SPLIT_IDS = {"train": 0, "test": 1, "validation": 2}


class DigitsSegmentation(SegmentationDataset):
    """`digits-seg`: 2-4 digits per 64x64 canvas, label 1 + class on stroke pixels, 0 elsewhere."""

    def __init__(self, split: str = "train", *, seed: int = 0, size: int | None = None, canvas: int = DIGITS_SEG_CANVAS):
        if split not in _SPLIT_IDS:
            raise DatasetError(f"digits-seg has splits {list(_SPLIT_IDS)}; got {split!r}")
        images, labels, train, test = digits_split()
        pool = train if split == "train" else test
        self.digits, self.classes = images[pool], labels[pool]
        self.split, self.seed, self.canvas = split, seed, canvas
        self.size = DIGITS_SEG_SIZES[split] if size is None else size
        self.name = f"digits-seg:{split}"
        self.label_names = ["background", *[str(d) for d in range(10)]]

    def __len__(self) -> int:
        return self.size

    def item(self, index: int):
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
        image = np.zeros((self.canvas, self.canvas), dtype=np.float32)
        label = np.zeros((self.canvas, self.canvas), dtype=np.int64)
        for _ in range(int(rng.integers(2, 5))):
            pick = int(rng.integers(len(self.digits)))
            side = int(rng.integers(self.canvas // 4, self.canvas // 2 + 1))
            digit = np.asarray(Image.fromarray(self.digits[pick]).resize((side, side), Image.BILINEAR), dtype=np.float32)
            top, left = (int(rng.integers(0, self.canvas - side + 1)) for _ in range(2))
            stroke = digit > 96
            window = image[top:top + side, left:left + side]
            np.maximum(window, digit, out=window)  # a later digit's strokes lie over an earlier one's
            label[top:top + side, left:left + side][stroke] = 1 + int(self.classes[pick])
        shade = rng.uniform(0.6, 1.0, size=3)  # each image its own ink colour
        rgb = (image[..., None] * shade[None, None, :]).clip(0, 255).astype(np.uint8)
        return Image.fromarray(rgb, "RGB"), label


SOURCE = Source("digits-seg", lambda spec: spec == "digits-seg", "'digits-seg' (bundled, offline; segmentation)",
                segmentation=lambda path, split, options: DigitsSegmentation(split, seed=options.seed),
                splits=lambda path: list(_SPLIT_IDS))
