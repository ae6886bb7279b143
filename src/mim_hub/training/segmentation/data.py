"""Segmentation samples: the joint augmentation of an image and its label map, and the torch
dataset the Trainer reads (`pixel_values`, `labels`)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageEnhance

from ...data.segmentation import SegmentationDataset
from ..transforms import Normalize, random_resized_crop_box


class JointTransform:
    """One draw of crop box, flip and photometric jitter, applied to image and label alike.
    `size=None` (evaluation only) keeps the image at its own resolution (sliding-window)."""

    def __init__(self, size: int | None, mean, std, *, train: bool, scale=(0.25, 1.0), flip: bool = True, jitter: float = 0.3):
        self.size, self.train, self.scale, self.flip, self.jitter = size, train, scale, flip, jitter
        self.normalize = Normalize(mean, std)
        if size is None and train:
            raise ValueError("JointTransform(size=None) keeps the resolution: evaluation only (train=False)")

    def __call__(self, image: Image.Image, label: np.ndarray, rng: np.random.Generator | None = None):
        if self.size is None:
            return self.normalize(image), np.asarray(label, dtype=np.int64)
        label_image = Image.fromarray(label.astype(np.int32), mode="I")
        box = None
        if self.train:
            box = random_resized_crop_box(image.width, image.height, rng, scale=self.scale)
        image = image.resize((self.size, self.size), Image.BILINEAR, box=box)
        label_image = label_image.resize((self.size, self.size), Image.NEAREST, box=box)
        if self.train:
            if self.flip and rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
                label_image = label_image.transpose(Image.FLIP_LEFT_RIGHT)
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):  # photometric (image only)
                image = enhance(image).enhance(float(rng.uniform(1 - self.jitter, 1 + self.jitter)))
        return self.normalize(image), np.asarray(label_image, dtype=np.int64)


class SegmentationTorchData(torch.utils.data.Dataset):
    """Items of a `SegmentationDataset` as Trainer batches, decoded and augmented on access
    (augmentation from `default_rng([seed, call, index])`)."""

    def __init__(self, source: SegmentationDataset, transform: JointTransform, seed: int = 0):
        self.source, self.transform, self.seed, self.calls = source, transform, seed, 0

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        self.calls += 1
        rng = np.random.default_rng([self.seed, self.calls, index]) if self.transform.train else None
        pixels, label = self.transform(*self.source.item(index), rng)
        return {"pixel_values": torch.from_numpy(pixels), "labels": torch.from_numpy(label)}
