"""Image data for pre-training, fine-tuning, evaluation, segmentation and reconstruction: one lazy layer.

`--dataset SPEC` is resolved by one table of source kinds (`sources/__init__.py`), one file each:
- `digits`: scikit-learn's bundled 8x8 handwritten digits, upsampled to 32 px (offline);
- `digits-seg`: digits pasted on a canvas, with label maps (offline; segmentation);
- `imagefolder:PATH`: `PATH/<class>/<image>`, or with splits `PATH/{train,test,validation}/<class>/`;
- `segfolder:PATH`: images with same-named label PNGs (segmentation);
- `webdataset:PATH_OR_GLOB`: tar shards (`<key>.jpg` + `<key>.cls`, the layout of
  `timm/imagenet-1k-wds` and of `mim-hub prepare-shards`);
- a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`;
- a folder or glob of parquet or arrow files (files named after a split form that split);
- a Hub dataset name.

Each kind offers an indexed reader (`load_images`: an `ImageDataset`, an index whose images are
decoded per item in the DataLoader's workers), a streamed one where it can stream (`open_stream`,
for `--streaming`: nothing is indexed, see `stream.py`), and a segmentation reader where its
items carry label maps (`load_segmentation`). Written once, below the sources: the bad-image
policy (`bad_images.py`), split names (`splits.py`) and column choice (`columns.py`). Shards are
read by `shard_reading.py` (below the sources) and written by `shard_writing.py` (above them).

Adding a source kind: a file in `sources/` defining `SOURCE = Source(kind, matches, help,
images=..., stream=..., segmentation=..., splits=...)` with the readers it offers, and its row in
`sources.SOURCES`. Everything else (the trainers, eval, prepare-shards) works on what they return.
"""

from __future__ import annotations

from .bad_images import bad_image, count_bad_images, read_bad_images
from .errors import IMAGE_ERRORS, BadImage, DatasetError
from .images import ImageDataset, ImageList, SubsetImages, open_image_value, to_rgb
from .segmentation import IGNORE_INDEX, SegmentationDataset
from .source import ReadOptions, Source
from .sources import SOURCES, available_splits, describe_source, load_images, load_segmentation, open_stream, resolve
from .sources.digits import load_digits_dataset
from .splits import canonical_split, evaluation_split
from .arrow import from_hf_dataset

__all__ = [
    "DatasetError", "IMAGE_ERRORS", "ImageDataset", "ImageList", "SubsetImages", "SegmentationDataset", "IGNORE_INDEX",
    "ReadOptions", "Source", "SOURCES", "resolve", "describe_source", "load_images", "open_stream", "load_segmentation",
    "available_splits", "load_digits_dataset", "from_hf_dataset", "canonical_split", "evaluation_split", "bad_image",
    "count_bad_images", "read_bad_images", "BadImage", "open_image_value", "to_rgb",
]
