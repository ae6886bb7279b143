"""What a source kind is: one row of the table `--dataset` resolves (`sources/__init__.py`).

A `Source` says how to recognise its specs (`matches`) and offers up to three readers of one
split, each taking the spec's path (the spec less its `kind:` prefix), the split and the
`ReadOptions`:
- `images`: the indexed `ImageDataset` (classification, pre-training, evaluation, shards);
- `stream`: the `StreamSource` that `--streaming` iterates without indexing;
- `segmentation`: the `SegmentationDataset` of (image, label map) pairs.
and `splits(path)`: the splits it has, where that is cheap to tell (None: unknown).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ReadOptions:
    """How to read a source, whatever its kind: the Hub config, which columns hold the image and
    the label (auto-detected when None), the bad-image policy, and for label maps ADE20K's label
    reduction and the seed of generated data."""

    # label maps and generated data
    reduce_labels: bool = False
    seed: int = 0
    # the Hub config, the columns (auto-detected when None) and unreadable images
    config: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    on_bad_image: str = "skip"


@dataclass(frozen=True)
class Source:
    """One kind of `--dataset` source (see the module docstring)."""

    kind: str
    matches: Callable[[str], bool]
    help: str
    prefix: str = ""  # "imagefolder:": stripped from the spec before a reader sees it
    images: Callable | None = None
    stream: Callable | None = None
    segmentation: Callable | None = None
    splits: Callable[[str], list[str] | None] = lambda path: None

    def path(self, spec: str) -> str:
        return spec[len(self.prefix):] if self.prefix and spec.startswith(self.prefix) else spec
