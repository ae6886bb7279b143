"""Image data for pre-training, fine-tuning, evaluation and reconstruction: one lazy layer.

Sources (`--dataset SPEC`):
- `digits`: scikit-learn's bundled 8x8 handwritten digits, upsampled to 32 px (offline);
- `imagefolder:PATH`: `PATH/<class>/<image>`, or with splits `PATH/{train,test,validation}/<class>/`
  as datasets' imagefolder defines them (a flat folder of images has no labels);
- a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`;
- a folder or glob of parquet or arrow files (files named after a split, e.g. `train-*.parquet`,
  `test-0.arrow`, form that split);
- `webdataset:PATH_OR_GLOB`: tar shards (`<key>.jpg` + `<key>.cls`, the layout of
  `timm/imagenet-1k-wds` and of `mim-hub prepare-shards`);
- a Hub dataset name.

Nothing here holds decoded images: a source is an index (file paths, Arrow rows memory-mapped
from disk, tar member offsets) plus the labels, and each image is decoded when an item is asked
for, i.e. in the DataLoader's workers. With `--streaming` (Hub, parquet, webdataset) nothing is
indexed at all; see `streaming.py`.

Bad images: an image that cannot be opened or decoded (a truncated JPEG fails only at decoding)
is skipped, counted in `ImageDataset.skipped` and logged with the file, shard or row it came from;
the item is replaced by the next readable one in a fixed order, so batches stay full and a resumed
run sees exactly what the uninterrupted one saw. `on_bad_image="error"` raises `DatasetError`
naming it instead.

Adding a source: subclass `ImageDataset` and implement `_open(index)` (a PIL image, opened lazily
is best: the pre-training crop can then decode a JPEG at reduced size) and `describe(index)` (a
short text naming where the item lives, for error messages); give `labels` (int array, -1 = no
label) and `label_names` to the constructor. Then teach `load_images` to recognise its spec (and
`streaming.open_stream` if it can stream). Everything else (the trainers, eval, prepare-shards)
works on `ImageDataset`.
"""

from __future__ import annotations

import glob as globlib
import io
import json
import logging
import os
import re
import struct
import zlib

import numpy as np
from PIL import Image

from .files import check_regular, only_regular, open_regular

logger = logging.getLogger(__name__)

DIGITS_SIZE = 32
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# split folder/file keywords, as datasets' data-file patterns define them
SPLIT_KEYWORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
                  "test": ("test", "testing", "eval", "evaluation")}
# errors that mean "this image cannot be read" (anything else is a bug and propagates)
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, Image.DecompressionBombError,
                IndexError, KeyError)
MAX_BAD_IN_A_ROW = 64


class DatasetError(ValueError):
    """A dataset that cannot be used; the message says what is wrong and how to fix it."""


def to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


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
        from .decode import decodes

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
        from .decode import prepared

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


class BadImage(Exception):
    """An item whose image cannot be read; `error` says why."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _decode_error(open_again) -> Exception:
    """The error decoding the image `open_again()` opens raises (for the report)."""
    from .decode import prepared

    try:
        with open_again() as image:
            prepared(image).load()
    except Exception as error:  # noqa: BLE001 - reported, not raised
        return error
    return OSError("the image could not be decoded")


def bad_image(where: str, error: Exception, on_bad_image: str, skipped: list, log_path: str | None = None) -> None:
    """What every reader (indexed datasets, streams, prepare-shards) does with an unreadable image:
    with `on_bad_image="error"` raise `DatasetError` naming it; else skip it: append `where` to
    `skipped` (this process's list), warn naming it, and append `where<TAB>error` to `log_path`
    (a file every process appends to, one line per encounter, tabs, newlines and backslashes in
    either field escaped as \\t, \\n, \\\\; `count_bad_images` counts the distinct images)."""
    if on_bad_image == "error":
        raise DatasetError(f"unreadable image {where}: {error}") from None
    skipped.append(where)
    logger.warning("skipped unreadable image %s: %s (%d skipped so far in this process)", where, error, len(skipped))
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        with open(log_path, "a") as handle:  # one short write per line: lines of several processes do not interleave
            handle.write(f"{_escape(where)}\t{_escape(str(error)[:200])}\n")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), text)


def read_bad_images(path: str | None) -> list[tuple[str, str]]:
    """(where, error) of each line of a `bad_images.tsv`, unescaped."""
    if not path or not os.path.exists(path):
        return []
    with open(path) as handle:
        return [tuple(_unescape(field) for field in (line.rstrip("\n").split("\t", 1) + [""])[:2]) for line in handle if line.strip()]


def count_bad_images(path: str | None) -> int:
    """The distinct images named in a `bad_image_log` file (every process's, every encounter)."""
    return len({where for where, _ in read_bad_images(path)})


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


# ---------------------------------------------------------------- digits

def digits_arrays():
    """(images uint8 [N, 32, 32], labels [N]) from scikit-learn's bundled digits, upsampled
    bilinearly from 8x8 (values 0-16 scaled to 0-255)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((DIGITS_SIZE, DIGITS_SIZE), Image.BILINEAR)) for im in small])
    return big, digits.target.astype(int)


def digits_split(random_state: int = 0):
    """The protocol's stratified 1347/450 train/test split of the digits (random_state 0)."""
    from sklearn.model_selection import train_test_split

    images, labels = digits_arrays()
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=450, stratify=labels, random_state=random_state)
    return images, labels, np.sort(train), np.sort(test)


class DigitsImages(ImageList):
    """The bundled digits (uint8 arrays)."""

    # 8 x 8 grey digits on black are far from ImageNet's statistics: a run normalises them with
    # their own unless told otherwise (`mim-hub pretrain --normalization`, training/preprocessing.py)
    normalization = "dataset"

    def _open(self, index):
        return Image.fromarray(self.images[index]).convert("RGB")


def load_digits_dataset(split: str = "train") -> ImageDataset:
    images, labels, train, test = digits_split()
    chosen = {"train": train, "test": test, "all": np.arange(len(labels))}.get(split)
    if chosen is None:
        raise DatasetError(f"digits has splits 'train' (1347), 'test' (450) and 'all'; got {split!r}")
    return DigitsImages(images[chosen], labels[chosen], [str(i) for i in range(10)], f"digits:{split}")


# ---------------------------------------------------------------- splits

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


# ---------------------------------------------------------------- imagefolder

class FileImages(ImageDataset):
    """Image files by path, decoded per item."""

    def __init__(self, files, labels, label_names, name, on_bad_image="skip"):
        self.files = np.asarray(files, dtype=object)
        super().__init__(labels, label_names, name, on_bad_image)

    def _open(self, index):
        check_regular(self.files[index])  # a FIFO named x.png would block the open forever
        return Image.open(self.files[index])

    def describe(self, index):
        return str(self.files[index])


def _unreadable_folder(error: OSError):
    raise DatasetError(f"{error.filename}: cannot list this folder ({error.strerror or error}); its images would be left out "
                       "without a word: make it readable, or move it out of the dataset")


def _image_files(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder, onerror=_unreadable_folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return found


def _subfolders(path: str) -> list[str]:
    return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))


def imagefolder_splits(path: str) -> dict[str, str]:
    """{split: folder}: `train/`, `test/`, `validation/` (and datasets' aliases) when present, else
    the folder itself is the one split 'train'."""
    folders = _subfolders(path)
    splits = {canonical_split(d): os.path.join(path, d) for d in folders if canonical_split(d) in SPLIT_KEYWORDS and d.lower() in
              sum(SPLIT_KEYWORDS.values(), ())}
    return splits or {"train": path}


def load_imagefolder(path: str, split: str = "train", on_bad_image: str = "skip") -> ImageDataset:
    """`PATH/<class>/<image>` (labels from folder names), `PATH/<split>/<class>/<image>`, or a flat
    folder of images (no labels). Files are listed, not opened: unreadable ones are met (skipped
    or raised) when an item is decoded. Class ids are the same in every split (all splits' class
    folders, sorted)."""
    spec = f"imagefolder:{path}"
    if not os.path.isdir(path):
        raise DatasetError(f"{spec}: no such folder")
    splits = imagefolder_splits(path)
    if split not in splits and canonical_split(split) not in splits and list(splits.values()) == [path]:
        raise DatasetError(f"{spec}: no split {split!r}; the folder has no train/, test/ or validation/ folders, "
                           "so its one split is 'train'")
    folder = choose_split(splits, split, spec)
    classes = sorted(set().union(*(_subfolders(f) for f in splits.values())))
    files, labels = [], []
    loose = [f for f in sorted(os.listdir(folder)) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    if classes and loose:  # class folders beside images: the images would have no class, and be left out
        raise DatasetError(f"{spec}: {folder} holds images ({', '.join(loose[:2])}{' ...' if len(loose) > 2 else ''}) beside "
                           f"subfolders ({', '.join(classes[:3])}{' ...' if len(classes) > 3 else ''}): either every image in a "
                           "class folder (labelled), or a flat folder of images with no subfolders (unlabelled)")
    if classes:
        for label, name in enumerate(classes):
            if os.path.isdir(os.path.join(folder, name)):
                found = _image_files(os.path.join(folder, name))
                files += found
                labels += [label] * len(found)
    else:
        files = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.lower().endswith(IMAGE_EXTENSIONS)]
        labels = [-1] * len(files)
    if not files:
        raise DatasetError(f"{spec}: no images found in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return FileImages(files, labels, classes or None, f"{spec}" + (f":{split}" if len(splits) > 1 else ""), on_bad_image)


# ---------------------------------------------------------------- datasets (save_to_disk, parquet, arrow, Hub)

def find_columns(features, image_column, label_column, name: str):
    """(image column, label column or None) of a datasets `Features`, auto-detected or checked."""
    import datasets

    columns = list(features)
    if image_column is None:
        image_column = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
        if image_column is None:
            image_column = next((c for c in ("image", "img", "jpg", "png", "pixel_values") if c in features), None)
    if image_column is None or image_column not in features:
        raise DatasetError(f"{name}: no image column {'' if image_column is None else repr(image_column) + ' '}"
                           f"(columns: {columns}); pass --image-column")
    if label_column is None:
        label_column = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        if label_column is None:
            label_column = next((c for c in ("label", "labels", "fine_label", "cls") if c in features), None)
    elif label_column not in features:
        raise DatasetError(f"{name}: no column {label_column!r} (columns: {columns})")
    return image_column, label_column


def label_ids(values, feature=None):
    """(int64 ids, names or None) of one column's values alone (see `labels.label_space` for the
    space of a dataset's every split): ClassLabel ids as they are, other values numbered in sorted
    order, missing values -1."""
    import pyarrow as pa

    from .labels import label_space

    column = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(list(np.asarray(values).tolist()))
    space = label_space([column], feature)
    return space.ids(column)[0], space.names


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


class ArrowImages(ImageDataset):
    """Rows of a `datasets.Dataset` (memory-mapped Arrow), the image column read undecoded and
    decoded per item."""

    def __init__(self, data, image_column: str, labels, label_names, name: str, on_bad_image: str = "skip"):
        import datasets

        data = data.select_columns([image_column])
        if isinstance(data.features[image_column], datasets.Image):
            data = data.cast_column(image_column, datasets.Image(decode=False))
        self.data, self.image_column = data, image_column
        super().__init__(labels, label_names, name, on_bad_image)

    def _open(self, index):
        """The row's image opened straight from the Arrow buffer (memory-mapped: no copy of a large
        cell into Python bytes); other kinds of values through `open_image_value`."""
        import pyarrow as pa

        rows = self.__dict__.get("_arrow_rows")
        if rows is None:
            rows = self._arrow_rows = self.data.with_format("arrow")
        cell = rows[int(index)].column(0)[0]
        payload = cell.get("bytes") if isinstance(cell, pa.StructScalar) and "bytes" in cell.type.names else cell
        if isinstance(payload, (pa.BinaryScalar, pa.LargeBinaryScalar)) and payload.is_valid:
            return Image.open(pa.BufferReader(payload.as_buffer()))
        return open_image_value(cell.as_py())

    def describe(self, index):
        value = self.data[int(index)][self.image_column]
        path = value.get("path") if isinstance(value, dict) else None
        return f"{self.name} row {index}" + (f" ({path})" if path else "")


def from_hf_dataset(data, *, image_column: str | None = None, label_column: str | None = None, name: str = "dataset",
                    on_bad_image: str = "skip", splits=None) -> ImageDataset:
    """An `ImageDataset` over a `datasets.Dataset` with an image column (auto-detected): the label
    column is read whole (an int per row), images stay in the Arrow table until asked for.
    `splits`: every split of the dataset (`datasets.Dataset`s, or a function of the label column
    giving its Arrow arrays), over which the label space is computed (`labels.label_space`)."""
    from .labels import LabelError, label_space

    if len(data) == 0:
        raise DatasetError(f"{name}: the dataset has no rows")
    image_column, label_column = find_columns(data.features, image_column, label_column, name)
    if label_column:
        column = data.select_columns([label_column]).with_format("arrow")[:].column(0)
        if callable(splits):
            every = splits(label_column)
        else:
            every = [s.select_columns([label_column]).with_format("arrow")[:].column(0) for s in (splits or [data])
                     if len(s) and label_column in s.column_names]
        try:
            space = label_space(every or [column], data.features[label_column], f"{name}: column {label_column!r}")
            labels, missing = space.ids(column)
        except LabelError as error:
            raise DatasetError(str(error)) from None
        names = space.names
        if missing:
            logger.warning("%s: %d of %d rows have no %r (null or NaN): they are unlabelled (-1), never a class", name, missing,
                           len(data), label_column)
    else:
        labels, names = np.full(len(data), -1, dtype=np.int64), None
    return ArrowImages(data, image_column, labels, names, name, on_bad_image)


def _is_saved_dataset(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or os.path.isfile(os.path.join(path, "state.json"))


def load_saved_dataset(path: str, split: str, **columns) -> ImageDataset:
    import datasets

    _check_saved_rows(path, split)
    try:
        data = datasets.load_from_disk(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise DatasetError(f"{path}: not a readable save_to_disk dataset ({type(error).__name__}: {str(error)[:200]})") from None
    every = None
    if isinstance(data, datasets.DatasetDict):
        every = list(data.values())
        data = choose_split(dict(data), split, path)
        name = f"{path}:{split}"
    elif split not in ("train", data.split and str(data.split)):
        raise DatasetError(f"{path}: a single Dataset (no splits) was saved here, its one split is 'train'; got {split!r}")
    else:
        name = path
    return from_hf_dataset(data, name=name, splits=every, **columns)


def _check_saved_rows(path: str, split: str) -> None:
    """Refuse a saved dataset (or the split asked for) that holds no rows, naming it (datasets
    itself fails on one with an IndexError)."""
    folder = path
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        try:
            with open(os.path.join(path, "dataset_dict.json")) as handle:
                names = json.load(handle).get("splits", [])
        except (OSError, ValueError, AttributeError):
            return
        chosen = split if split in names else canonical_split(split) if canonical_split(split) in names else None
        if chosen is None:
            return  # choose_split names the splits found
        folder = os.path.join(path, chosen)
    try:
        with open(os.path.join(folder, "state.json")) as handle:
            files = json.load(handle).get("_data_files")
    except (OSError, ValueError, AttributeError):
        return
    if files == []:
        raise DatasetError(f"{folder}: the saved dataset{'' if folder == path else ' split'} has no rows")


def table_files(spec: str) -> list[str]:
    """Parquet/arrow files of a folder (recursively) or glob, sorted."""
    if os.path.isdir(spec):
        found = [os.path.join(root, f) for root, _, files in os.walk(spec) for f in files if f.endswith((".parquet", ".arrow"))]
    else:
        found = [f for f in globlib.glob(spec, recursive=True) if f.endswith((".parquet", ".arrow"))]
    return only_regular(sorted(found), spec)


def load_table_files(spec: str, split: str, **columns) -> ImageDataset:
    """Arrow files are memory-mapped as they are; parquet files are converted once into datasets'
    cache (Arrow), the one-off cost of random access to parquet."""
    import datasets

    groups = group_files_by_split(table_files(spec), spec)
    files = choose_split(groups, split, spec)
    kinds = {os.path.splitext(f)[1] for f in files}
    if kinds == {".arrow"}:
        data = datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files])
        if len(data) == 0:
            raise DatasetError(f"{spec}: the arrow files of split {split!r} hold no rows ({', '.join(files[:3])})")
    elif kinds == {".parquet"}:
        import pyarrow.parquet as pq

        if sum(pq.read_metadata(f).num_rows for f in files) == 0:  # (datasets fails on it: 'corresponds to no data')
            raise DatasetError(f"{spec}: the parquet files of split {split!r} hold no rows ({', '.join(files[:3])})")
        data = datasets.load_dataset("parquet", data_files={"train": files}, split="train")
    else:
        raise DatasetError(f"{spec}: mixes parquet and arrow files; give one kind")
    every_file = [f for group in groups.values() for f in group]
    return from_hf_dataset(data, name=spec + (f":{split}" if split != "train" else ""), splits=lambda column: table_column(every_file, column),
                           **columns)


def table_column(files: list[str], column: str) -> list:
    """The Arrow arrays of one column of parquet or arrow files (that column alone is read)."""
    import datasets
    import pyarrow.parquet as pq

    arrays = []
    for file in files:
        if file.endswith(".parquet"):
            if column in pq.read_schema(file).names:
                arrays.append(pq.read_table(file, columns=[column]).column(0))
        else:
            table = datasets.Dataset.from_file(file).data
            if column in table.column_names:
                arrays.append(table.column(column))
    return arrays


def load_hub_dataset(name: str, *, config: str | None = None, split: str = "train", image_column: str | None = None,
                     label_column: str | None = None, on_bad_image: str = "skip") -> ImageDataset:
    """A dataset from the Hub, by name (downloaded and converted into datasets' cache once, then
    memory-mapped; `--streaming` reads it without either)."""
    import datasets

    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as error:
        raise DatasetError(_hub_error(name, config, split, error)) from None
    return from_hf_dataset(data, image_column=image_column, label_column=label_column, name=name, on_bad_image=on_bad_image,
                           splits=_hub_splits(name, config, data, label_column))


def _hub_splits(name, config, data, label_column):
    """Every split of a Hub dataset whose labels are not a ClassLabel (their label space spans
    the splits); None when they are, or when the other splits cannot be had (then this split's
    labels alone are numbered, with a warning)."""
    import datasets

    try:
        _, column = find_columns(data.features, None, label_column, name)
    except DatasetError:
        return None
    if column is None or isinstance(data.features[column], datasets.ClassLabel):
        return None
    try:
        return list(datasets.load_dataset(name, config).values())
    except Exception as error:  # noqa: BLE001 - the split alone is still usable
        logger.warning("%s: its labels are not a ClassLabel and its other splits could not be read (%s): the label ids are "
                       "numbered over this split alone, and may differ from another split's", name, str(error)[:200])
        return None


def _hub_error(name, config, split, error) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false")
    hint = (" (offline: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE are set, and it is not in the cache)" if offline else
            " (is the name right, and the Hub reachable?)")
    return f"cannot load dataset {name!r} (config {config!r}, split {split!r}){hint}: {str(error)[:300]}"


# ---------------------------------------------------------------- webdataset

WDS_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "ppm", "pgm", "bmp", "gif", "tif", "tiff", "image")  # (those image folders read)
WDS_LABEL_KEYS = ("cls", "label", "json")


def webdataset_shards(spec: str) -> list[str]:
    """Tar shards of a folder or glob (`{000..099}` ranges as in webdataset URLs expand too): the
    regular files named `*.tar` (a glob such as `train-*` does not pick up the `.tar.json`
    receipts beside them). A shard a brace range names that does not exist is an error naming it."""
    if os.path.isdir(spec):
        return only_regular(sorted(os.path.join(spec, f) for f in os.listdir(spec) if f.endswith(".tar")), f"webdataset:{spec}")
    patterns = [spec]
    while any(re.search(r"\{(\d+)\.\.(\d+)\}", p) for p in patterns):
        expanded = []
        for pattern in patterns:
            match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
            if match is None:
                expanded.append(pattern)
                continue
            width = len(match.group(1))
            expanded += [pattern[:match.start()] + str(i).zfill(width) + pattern[match.end():]
                         for i in range(int(match.group(1)), int(match.group(2)) + 1)]
        patterns = expanded
    if len(patterns) > 1 or patterns[0] != spec:  # a brace range names its shards: each must exist
        missing = [p for p in patterns if not globlib.has_magic(p) and not os.path.exists(p)]
        if missing:
            raise DatasetError(f"webdataset:{spec}: {len(missing)} of the {len(patterns)} shards the range names do not exist: "
                               f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    found = sorted({f for p in patterns for f in globlib.glob(p) if f.endswith(".tar")})
    return only_regular(found, f"webdataset:{spec}")


def read_manifest(spec: str) -> dict:
    """`manifest.json` beside the shards (written by `mim-hub prepare-shards`), or {}."""
    folder = spec if os.path.isdir(spec) else os.path.dirname(webdataset_shards(spec)[0]) if webdataset_shards(spec) else ""
    path = os.path.join(folder, "manifest.json")
    if os.path.isfile(path):
        with open(path) as handle:
            return json.load(handle)
    return {}


MAX_LABEL = 2**31 - 1


def parse_label(ext: str, payload: bytes) -> int:
    """The class id of a label member: `.cls`/`.label` text holding an integer, or `.json` holding
    an integer or {"label": int} / {"cls": int}; -1 (no label) is allowed. Anything else (a list,
    a string, a fraction, an id beyond 2**31 - 1 or below -1) is a `ValueError` saying what it is."""
    try:
        value = json.loads(payload) if ext == "json" else payload.decode().strip()
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"the .{ext} label is not {'JSON' if ext == 'json' else 'text'} ({error})") from None
    if isinstance(value, dict):
        value = value.get("label", value.get("cls", -1))
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"the .{ext} label {value[:40]!r} is not an integer class id") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"the .{ext} label is {type(value).__name__} {str(value)[:40]}, not an integer class id")
    if not -1 <= value <= MAX_LABEL:
        raise ValueError(f"the .{ext} label {value} is outside [-1, {MAX_LABEL}] (-1: no label)")
    return value


class WebDatasetImages(ImageDataset):
    """Samples of tar shards by (shard, byte offset, size) of their image member; the index is
    built by reading the tar headers only (see `shards.index_tar`)."""

    def __init__(self, shards, shard_ids, offsets, sizes, labels, label_names, name, on_bad_image="skip"):
        self.shards, self.shard_ids, self.offsets, self.sizes = list(shards), shard_ids, offsets, sizes
        self._handles: dict[int, object] = {}
        super().__init__(labels, label_names, name, on_bad_image)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def _read(self, index) -> bytes:
        shard = int(self.shard_ids[index])
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = open_regular(self.shards[shard])
        handle.seek(int(self.offsets[index]))
        data = handle.read(int(self.sizes[index]))
        if len(data) != int(self.sizes[index]):
            raise OSError("the shard ends inside this member")
        return data

    def _open(self, index):
        return Image.open(io.BytesIO(self._read(index)))

    def describe(self, index):
        from .shards import member_name

        shard = self.shards[int(self.shard_ids[index])]
        return f"{shard}:{member_name(shard, int(self.offsets[index]))}"


def load_webdataset(spec: str, split: str, image_column=None, label_column=None, on_bad_image="skip") -> ImageDataset:
    from .shards import index_webdataset

    shards = webdataset_shards(spec)
    if not shards:
        raise DatasetError(f"webdataset:{spec}: no .tar shards found")
    shards = choose_split(group_files_by_split(shards, f"webdataset:{spec}"), split, f"webdataset:{spec}")
    manifest = read_manifest(spec)
    index = index_webdataset(shards, image_key=image_column, label_key=label_column)
    if index["count"] == 0:
        raise DatasetError(f"webdataset:{spec}: the shards hold no samples with an image (looked for {', '.join(WDS_IMAGE_KEYS)})")
    return WebDatasetImages(shards, index["shard"], index["offset"], index["size"], index["label"], manifest.get("classes"),
                            f"webdataset:{spec}", on_bad_image)


# ---------------------------------------------------------------- one entry point

def describe_source(spec: str) -> str:
    """What kind of source `spec` names: digits, imagefolder, saved, table, webdataset or hub."""
    if spec == "digits":
        return "digits"
    if spec.startswith("imagefolder:"):
        return "imagefolder"
    if spec.startswith("webdataset:"):
        return "webdataset"
    if os.path.isdir(spec):
        if _is_saved_dataset(spec):
            return "saved"
        if table_files(spec):
            return "table"
        if webdataset_shards(spec):
            return "webdataset"
        raise DatasetError(f"{spec!r} is a folder but neither a save_to_disk dataset nor parquet/arrow files; "
                           f"for a folder of images use --dataset imagefolder:{spec}, for tar shards webdataset:{spec}")
    if any(c in spec for c in "*?[") or spec.endswith((".parquet", ".arrow")):
        if not table_files(spec):
            raise DatasetError(f"{spec!r}: no parquet or arrow files match")
        return "table"
    return "hub"


def load_images(spec: str, *, split: str = "train", config: str | None = None, image_column: str | None = None,
                label_column: str | None = None, on_bad_image: str = "skip") -> ImageDataset:
    """The `ImageDataset` of a `--dataset` spec (see the module docstring for the specs)."""
    columns = dict(image_column=image_column, label_column=label_column, on_bad_image=on_bad_image)
    kind = describe_source(spec)
    if kind == "digits":
        return load_digits_dataset(split)
    if kind == "imagefolder":
        return load_imagefolder(spec[len("imagefolder:"):], split=split, on_bad_image=on_bad_image)
    if kind == "webdataset":
        return load_webdataset(spec[len("webdataset:"):] if spec.startswith("webdataset:") else spec, split, **columns)
    if kind == "saved":
        return load_saved_dataset(spec, split, **columns)
    if kind == "table":
        return load_table_files(spec, split, **columns)
    return load_hub_dataset(spec, config=config, split=split, **columns)


def default_num_workers() -> int:
    """DataLoader workers by default: the CPUs this process may use, less one for the main
    process, at most 8 (and 0 on a single CPU)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus - 1))


def add_dataset_arguments(parser, default: str = "digits", streaming: bool = True) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=default,
                       help="'digits' (bundled, offline), 'imagefolder:PATH', a save_to_disk folder, a folder or glob of "
                            "parquet/arrow files, 'webdataset:PATH_OR_GLOB' (tar shards), or a Hub dataset name")
    group.add_argument("--dataset-config", default=None, help="configuration name of a Hub dataset")
    group.add_argument("--split", default="train", help="split to train on")
    group.add_argument("--eval-split", default=None,
                       help="split to evaluate on (default: 'test', else 'validation', when the dataset has it; never the training split)")
    group.add_argument("--image-column", default=None, help="image column (datasets) or member extension (webdataset); auto-detected")
    group.add_argument("--label-column", default=None, help="label column (datasets) or member extension (webdataset); auto-detected")
    group.add_argument("--on-bad-image", choices=("skip", "error"), default="skip",
                       help="skip (and count and name) unreadable images, or stop at the first")
    group.add_argument("--max-image-pixels", type=int, default=None,
                       help="pixel budget of one decoded image (default 64 Mpx): JPEGs above it are decoded at 1/2, 1/4 or 1/8 "
                            "scale, other images above it are unreadable (skipped and named)")
    if streaming:
        group.add_argument("--streaming", action="store_true",
                           help="iterate a Hub, parquet or webdataset source without downloading, converting or indexing it first")
        group.add_argument("--shuffle-buffer", type=int, default=10_000, help="--streaming: shuffle buffer size (samples per worker)")


def dataset_from_args(args, split: str | None = None) -> ImageDataset:
    return load_images(args.dataset, split=split or args.split, config=args.dataset_config, image_column=args.image_column,
                       label_column=args.label_column, on_bad_image=args.on_bad_image)


def available_splits(spec: str) -> list[str] | None:
    """The splits a source has, where that is cheap to tell (None: unknown, e.g. a Hub name)."""
    kind = describe_source(spec)
    if kind == "digits":
        return ["train", "test"]
    if kind == "imagefolder":
        path = spec[len("imagefolder:"):]
        return sorted(imagefolder_splits(path)) if os.path.isdir(path) else None
    if kind == "webdataset":
        path = spec[len("webdataset:"):] if spec.startswith("webdataset:") else spec
        return sorted(group_files_by_split(webdataset_shards(path), spec)) if webdataset_shards(path) else None
    if kind == "table":
        return sorted(group_files_by_split(table_files(spec), spec))
    if kind == "saved":
        if os.path.isfile(os.path.join(spec, "dataset_dict.json")):
            with open(os.path.join(spec, "dataset_dict.json")) as handle:
                return list(json.load(handle)["splits"])
        return ["train"]
    return None


def evaluation_split(args) -> str | None:
    """The split to evaluate on: `--eval-split` as given, else 'test' or 'validation' when the
    dataset has one besides the training split; never the training split unless asked for."""
    if args.eval_split:
        if canonical_split(args.eval_split) == canonical_split(args.split):
            logger.warning("evaluating on the training split %r, as --eval-split asks", args.split)
        return args.eval_split
    splits = available_splits(args.dataset)
    if splits is None:
        return None
    for candidate in ("test", "validation"):
        if candidate in splits and candidate != canonical_split(args.split):
            return candidate
    return None
