"""The indexed image dataset every reader returns, and what opens one image.

Nothing here holds decoded images: a dataset is an index (file paths, Arrow rows memory-mapped
from disk, tar member offsets) plus the labels, and each image is decoded when an item is asked
for, i.e. in the DataLoader's workers. A reader subclasses `ImageDataset` and implements
`_open(index)` (a PIL image, opened lazily is best: the pre-training crop can then decode a JPEG
at reduced size) and `describe(index)` (a short text naming where the item lives, for messages),
and gives `labels` (int array, -1 = no label) and `label_names` to the constructor.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from .bad_images import MAX_BAD_IN_A_ROW, bad_image
from .decode import decodes, prepared
from .errors import IMAGE_ERRORS, BadImage, DatasetError
from .files import check_regular


def to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def open_image_value(value) -> Image.Image:
    """A PIL image from what an image column holds: {'bytes', 'path'}, bytes, a path, or an array."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"]))
        if value.get("path"):
            check_regular(value["path"])
            return Image.open(value["path"])
        raise ValueError("empty image entry")
    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(value))
    if isinstance(value, str):
        check_regular(value)
        return Image.open(value)
    if isinstance(value, Image.Image):
        return value
    if value is None:
        raise ValueError("missing image")
    return Image.fromarray(np.asarray(value, dtype=np.uint8))


class ImageDataset:
    """An indexed image source: `len`, `image(i)` (RGB PIL, decoded now), `labels` (int64 array,
    -1 = unlabelled), `label_names`, `name`. Subclasses implement `_open` and `describe`."""

    def __init__(self, labels, label_names: list[str] | None = None, name: str = "", on_bad_image: str = "skip"):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.label_names, self.name, self.on_bad_image = label_names, name, on_bad_image
        self.skipped: list[str] = []  # bad items met by this process
        self.bad_image_log: str | None = None  # a file every process appends the bad items it meets to

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def has_labels(self) -> bool:
        return len(self.labels) > 0 and bool((self.labels >= 0).all())

    def _open(self, index: int) -> Image.Image:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        return f"{self.name} item {index}"

    def with_image(self, index: int, function):
        """`function(image)` on item `index` opened (not necessarily decoded); if the image cannot be
        read, the next readable item in a fixed order stands in. Returns (result, index used)."""
        for attempt in range(MAX_BAD_IN_A_ROW):
            used = (index + attempt) % len(self)
            try:
                return self.try_image(used, function), used
            except BadImage as bad:
                self._bad(used, bad.error)
        raise DatasetError(f"{self.name}: {MAX_BAD_IN_A_ROW} unreadable images in a row from item {index} "
                           f"({self.describe(index)}); is the dataset readable at all?")

    def try_image(self, index: int, function):
        """`function(image)` on item `index` opened and prepared (`decode.prepared`); `BadImage`
        if the image cannot be read. An error of `function` on an image that decodes is raised as
        it is: a transform's or an option's error is not the data's."""
        image = None
        try:
            image = self._open(index)
            prepared = self.prepared(image)
        except DatasetError:
            raise
        except IMAGE_ERRORS as error:  # opening it failed: the data's
            if image is not None:
                image.close()
            raise BadImage(error) from None
        with image:
            try:
                return function(prepared)
            except DatasetError:
                raise
            except IMAGE_ERRORS:
                if decodes(lambda: self._open(index)):
                    raise  # the image is fine: the error is the transform's or an option's
        raise BadImage(_decode_error(lambda: self._open(index)))

    @staticmethod
    def prepared(image: Image.Image) -> Image.Image:
        """An opened image within the pixel budget, upright and in 8 bits (`decode.prepared`)."""
        return prepared(image)

    def open(self, index: int) -> Image.Image:
        """Item `index` opened and prepared (`decode.prepared`), not a stand-in: errors propagate."""
        return self.prepared(self._open(index))

    def image(self, index: int) -> Image.Image:
        """Item `index` decoded to RGB (a stand-in if it is unreadable, see `with_image`)."""
        return self.with_image(index, lambda image: to_rgb(image).copy() if image.mode == "RGB" else to_rgb(image))[0]

    def _bad(self, index: int, error: Exception) -> None:
        bad_image(self.describe(index), error, self.on_bad_image, self.skipped, self.bad_image_log)

    def subset(self, indices) -> "ImageDataset":
        return SubsetImages(self, indices)


def _decode_error(open_again) -> Exception:
    """The error decoding the image `open_again()` opens raises (for the report)."""
    try:
        with open_again() as image:
            prepared(image).load()
    except Exception as error:  # noqa: BLE001 - reported, not raised
        return error
    return OSError("the image could not be decoded")


class SubsetImages(ImageDataset):
    """Some items of another `ImageDataset`, by index."""

    def __init__(self, base: ImageDataset, indices):
        self.base, self.indices = base, np.asarray(list(indices), dtype=np.int64)
        super().__init__(base.labels[self.indices], base.label_names, base.name, base.on_bad_image)

    def _open(self, index):
        return self.base._open(int(self.indices[index]))

    def describe(self, index):
        return self.base.describe(int(self.indices[index]))


class ImageList(ImageDataset):
    """Images held by the caller: PIL images, uint8 arrays or file paths (small data only)."""

    def __init__(self, images, labels, label_names=None, name: str = "images", on_bad_image: str = "skip"):
        self.images = images
        super().__init__(labels, label_names, name, on_bad_image)

    def _open(self, index):
        item = self.images[index]
        if isinstance(item, Image.Image):
            return item.copy()
        if isinstance(item, (str, os.PathLike)):
            check_regular(item)
            return Image.open(item)
        return Image.fromarray(np.asarray(item))

    def describe(self, index):
        item = self.images[index]
        return str(item) if isinstance(item, (str, os.PathLike)) else f"{self.name} item {index}"
