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
from ..files import only_regular, open_regular
from ..images import ImageDataset
from ..members import WDS_IMAGE_KEYS
from ..receipts import verified_index
from ..shard_reading import index_webdataset, iter_samples, member_name
from ..source import Source
from ..splits import canonical_split, choose_split, group_files_by_split
from ..stream import StreamSource


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
        read = 0
        for key, _, _, _, label, data in iter_samples(shard, image_key=self.image_key, label_key=self.label_key, read_images=True):
            read += 1
            yield f"{shard}:{key}", data, label
        known = self._counts.get(os.path.basename(shard))
        if known is not None and known != read:  # the counts a resume skips by must be true
            raise DatasetError(_count_error(shard, known, read))

    def count(self, shard) -> int:
        """Samples in `shard` (what a resumed stream skips by): the manifest's count, checked once
        against the shard (its verified receipt, else its headers)."""
        cache = self.__dict__.setdefault("_checked", {})
        if shard not in cache:
            receipt = verified_index(shard) if self.image_key in (None, "jpg") else None
            cache[shard] = len(receipt["offsets"]) if receipt is not None else sum(
                1 for _ in iter_samples(shard, image_key=self.image_key, label_key=self.label_key))
            known = self._counts.get(os.path.basename(shard))
            if known is not None and known != cache[shard]:
                raise DatasetError(_count_error(shard, known, cache[shard]))
        return cache[shard]

    def world(self) -> dict:
        return {"shards": [[os.path.basename(s), os.stat(s).st_size, os.stat(s).st_mtime_ns] for s in self.shards],
                "counts": [self._counts.get(os.path.basename(s)) for s in self.shards]}


def _count_error(shard: str, known: int, actual: int) -> str:
    return (f"{shard}: manifest.json says {known} samples, the shard holds {actual}; the manifest does not describe these "
            "shards (write them again with prepare-shards, or remove manifest.json to count them from the shards)")




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
