"""A Hub dataset name: downloaded and converted into datasets' cache once, then memory-mapped, or
read through datasets' streaming mode (`--streaming`), its shards dealt out as ours."""

from __future__ import annotations

import logging
import os

from ..arrow import from_hf_dataset
from ..columns import find_columns
from ..errors import DatasetError
from ..images import ImageDataset
from ..segmentation import HFSegmentation
from ..source import ReadOptions, Source
from ..stream import StreamSource

logger = logging.getLogger("mim_hub.data")


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


def load_hub_segmentation(name: str, split: str, options: ReadOptions = ReadOptions()) -> HFSegmentation:
    import datasets  # optional heavy dependency: only datasets sources need it

    try:
        data = datasets.load_dataset(name, options.config, split=split)
    except Exception as error:
        raise DatasetError(_hub_error(name, options.config, split, error)) from None
    return HFSegmentation(data, name=f"{name}:{split}", image_column=options.image_column, label_column=options.label_column,
                          reduce_labels=options.reduce_labels)


class HubStream(StreamSource):
    """A Hub dataset through datasets' streaming mode, its shards dealt out as ours."""

    def __init__(self, name: str, config, split: str, image_column=None, label_column=None):
        import datasets  # optional heavy dependency (see load_hub_dataset)

        try:
            data = datasets.load_dataset(name, config, split=split, streaming=True)
        except Exception as error:
            raise DatasetError(_hub_error(name, config, split, error)) from None
        features = data.features
        if features is None:
            raise DatasetError(f"{name}: its features are unknown without reading it; pass --image-column and --label-column")
        self.image_column, self.label_column = find_columns(features, image_column, label_column, name)
        if isinstance(features[self.image_column], datasets.Image):
            data = data.cast_column(self.image_column, datasets.Image(decode=False))
        feature = features.get(self.label_column) if self.label_column else None
        self.label_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        if feature is not None and not (isinstance(feature, datasets.ClassLabel) or
                                        (isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")))):
            # a label space over a streamed Hub dataset's every split would read them all: its labels are not read
            # (streams feed pre-training, which does not use them)
            logger.info("%s: the label column %r holds %s values, not class ids: the stream carries no labels", name,
                        self.label_column, feature)
            self.label_column = None
        self.data, self.name = data, name
        self.shards = list(range(data.num_shards))
        splits = getattr(data.info, "splits", None) or {}
        self.total = splits[split].num_examples if split in splits and splits[split].num_examples else None

    def records(self, shard):
        for row, item in enumerate(self.data.shard(len(self.shards), shard, contiguous=True)):
            label = item.get(self.label_column, -1) if self.label_column else -1
            yield f"{self.name} shard {shard} row {row}", item[self.image_column], -1 if label is None else int(label)




def _matches(spec: str) -> bool:  # what no other row claims and is not a local folder or glob
    return not os.path.isdir(spec) and not any(c in spec for c in "*?[")


SOURCE = Source("hub", _matches, "a Hub dataset name",
                images=lambda name, split, options: load_hub_dataset(name, config=options.config, split=split,
                                                                     image_column=options.image_column,
                                                                     label_column=options.label_column,
                                                                     on_bad_image=options.on_bad_image),
                stream=lambda name, split, options: HubStream(name, options.config, split, options.image_column, options.label_column),
                segmentation=load_hub_segmentation)
