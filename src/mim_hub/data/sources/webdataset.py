"""`webdataset:PATH_OR_GLOB` (or a folder of `.tar` files): tar shards (`<key>.jpg` + `<key>.cls`, the
layout of `timm/imagenet-1k-wds` and of `mim-hub prepare-shards`), indexed from their headers
or streamed member by member (`--streaming`)."""

from __future__ import annotations

import glob as globlib
import io
import json
import os
import re

from PIL import Image

from ..errors import DatasetError
from ..images import ImageDataset
from ..shard_reading import WDS_IMAGE_KEYS, index_webdataset, iter_samples, member_name
from ..source import Source
from ..splits import canonical_split, choose_split, group_files_by_split
from ..stream import StreamSource


def webdataset_shards(spec: str) -> list[str]:
    """Tar shards of a folder or glob (`{000..099}` ranges as in webdataset URLs expand too)."""
    if os.path.isdir(spec):
        return sorted(os.path.join(spec, f) for f in os.listdir(spec) if f.endswith(".tar"))
    patterns = [spec]
    match = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if match:
        width = len(match.group(1))
        patterns = [spec[:match.start()] + str(i).zfill(width) + spec[match.end():]
                    for i in range(int(match.group(1)), int(match.group(2)) + 1)]
    return sorted(f for p in patterns for f in globlib.glob(p))


def read_manifest(spec: str) -> dict:
    """`manifest.json` beside the shards (written by `mim-hub prepare-shards`), or {}."""
    folder = spec if os.path.isdir(spec) else os.path.dirname(webdataset_shards(spec)[0]) if webdataset_shards(spec) else ""
    path = os.path.join(folder, "manifest.json")
    if os.path.isfile(path):
        with open(path) as handle:
            return json.load(handle)
    return {}


class WebDatasetImages(ImageDataset):
    """Samples of tar shards by (shard, byte offset, size) of their image member; the index is
    built by reading the tar headers only (see `shard_reading.index_webdataset`)."""

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
            handle = self._handles[shard] = open(self.shards[shard], "rb")
        handle.seek(int(self.offsets[index]))
        data = handle.read(int(self.sizes[index]))
        if len(data) != int(self.sizes[index]):
            raise OSError("the shard ends inside this member")
        return data

    def _open(self, index):
        return Image.open(io.BytesIO(self._read(index)))

    def describe(self, index):
        shard = self.shards[int(self.shard_ids[index])]
        return f"{shard}:{member_name(shard, int(self.offsets[index]))}"


def load_webdataset(spec: str, split: str, image_column=None, label_column=None, on_bad_image="skip") -> ImageDataset:
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


class WebDatasetStream(StreamSource):
    """Tar shards read member by member (sample counts from the manifest when there is one)."""

    def __init__(self, spec: str, split: str, image_key=None, label_key=None):
        shards = webdataset_shards(spec)
        if not shards:
            raise DatasetError(f"webdataset:{spec}: no .tar shards found")
        self.shards = choose_split(group_files_by_split(shards, f"webdataset:{spec}"), split, f"webdataset:{spec}")
        self.name, self.image_key, self.label_key = f"webdataset:{spec}", image_key, label_key
        manifest = read_manifest(spec)
        self.label_names = manifest.get("classes")
        info = manifest.get("splits", {}).get(canonical_split(split))
        self._counts = dict(zip(info["shards"], info["shard_samples"])) if info else {}
        if info and all(os.path.basename(s) in self._counts for s in self.shards):
            self.total = sum(self._counts[os.path.basename(s)] for s in self.shards)

    def records(self, shard):
        for key, _, _, _, label, data in iter_samples(shard, image_key=self.image_key, label_key=self.label_key, read_images=True):
            yield f"{shard}:{key}", data, label

    def count(self, shard) -> int:
        known = self._counts.get(os.path.basename(shard))
        return known if known is not None else sum(1 for _ in iter_samples(shard, image_key=self.image_key, label_key=self.label_key))


def _matches(spec: str) -> bool:
    return spec.startswith("webdataset:") or (os.path.isdir(spec) and bool(webdataset_shards(spec)))


def _splits(path: str) -> list[str] | None:
    shards = webdataset_shards(path)
    return sorted(group_files_by_split(shards, f"webdataset:{path}")) if shards else None


SOURCE = Source("webdataset", _matches, "'webdataset:PATH_OR_GLOB' (tar shards)", prefix="webdataset:",
                images=lambda path, split, options: load_webdataset(path, split, options.image_column, options.label_column,
                                                                    options.on_bad_image),
                stream=lambda path, split, options: WebDatasetStream(path, split, options.image_column, options.label_column),
                splits=_splits)
