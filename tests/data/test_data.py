"""The data layer: every `--dataset` source on small data written here (offline), lazy decoding,
bad images, streaming across ranks and workers with exact resume, prepare-shards, JPEG draft
decoding and chunked kNN."""

import io
import itertools
import json
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from mim_hub.data.arrow import ArrowImages
from mim_hub.data import available_splits
from mim_hub.data import DatasetError, load_images
from mim_hub.training.settings import DataSettings
from mim_hub.data import open_stream
from mim_hub.data.stream import ShardedStream, StreamState, collate_with_positions

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _picture(value: int, size=(20, 16)) -> Image.Image:
    """An image whose value tells which one it is (uniform grey `value`, one red pixel)."""
    array = np.full((size[1], size[0], 3), value, np.uint8)
    array[0, 0] = (255, 0, 0)
    return Image.fromarray(array)


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    _picture(value).save(buffer, "PNG")
    return buffer.getvalue()


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def _write_tar(path, samples):
    """samples: (key, image bytes, label or None)"""
    with tarfile.open(path, "w") as tar:
        for key, blob, label in samples:
            for name, payload in [(f"{key}.png", blob)] + ([(f"{key}.cls", str(label).encode())] if label is not None else []):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def _value(image) -> int:
    return int(np.asarray(image.convert("RGB"))[5, 5, 1])


def test_truncated_jpeg_passes_verify_and_fails_at_decoding():
    blob = _truncated_jpeg()
    Image.open(io.BytesIO(blob)).verify()  # what the old up-front check relied on
    with pytest.raises(OSError, match="truncated"):
        Image.open(io.BytesIO(blob)).load()


def test_imagefolder_splits_as_datasets_defines_them(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(count):
                _picture(10 * i + (100 if split == "test" else 0)).save(tmp_path / split / label / f"{i}.png")
    train = load_images(f"imagefolder:{tmp_path}")
    test = load_images(f"imagefolder:{tmp_path}", split="test")
    assert train.label_names == test.label_names == ["cat", "dog"]  # not ['test', 'train']
    assert len(train) == 6 and len(test) == 4 and test.labels.tolist() == [0, 0, 1, 1]
    assert all(_value(test.image(i)) >= 100 for i in range(4)) and all(_value(train.image(i)) < 100 for i in range(6))
    with pytest.raises(DatasetError, match=r"no split 'validation'.*\['test', 'train'\]"):
        load_images(f"imagefolder:{tmp_path}", split="validation")
    assert DataSettings(f"imagefolder:{tmp_path}").evaluation_split() == "test"
    flat = tmp_path / "train"  # class folders only: one split, 'train'; asking for another is an error, never the training images
    assert DataSettings(f"imagefolder:{flat}").evaluation_split() is None
    with pytest.raises(DatasetError, match="its one split is 'train'"):
        load_images(f"imagefolder:{flat}", split="test")


def test_saved_dataset_and_dataset_dict_are_read_lazily(tmp_path):
    import datasets

    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["a", "b", "c"])})
    train = datasets.Dataset.from_dict({"img": [_picture(v) for v in (10, 20, 30)], "y": [2, 0, 1]}, features=features)
    test = datasets.Dataset.from_dict({"img": [_picture(40)], "y": [1]}, features=features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dict"))
    train.save_to_disk(str(tmp_path / "one"))
    loaded = load_images(str(tmp_path / "dict"))
    assert isinstance(loaded, ArrowImages) and loaded.label_names == ["a", "b", "c"]
    assert loaded.labels.tolist() == [2, 0, 1] and [_value(loaded.image(i)) for i in range(3)] == [10, 20, 30]
    assert _value(load_images(str(tmp_path / "dict"), split="test").image(0)) == 40
    with pytest.raises(DatasetError, match=r"no split 'validation'.*\['test', 'train'\]"):
        load_images(str(tmp_path / "dict"), split="validation")
    assert len(load_images(str(tmp_path / "one"))) == 3
    assert available_splits(str(tmp_path / "dict")) == ["train", "test"]
    datasets.Dataset.from_dict({"text": ["x"], "n": [1]}).save_to_disk(str(tmp_path / "text"))
    with pytest.raises(DatasetError, match=r"no image column.*\['text', 'n'\]"):
        load_images(str(tmp_path / "text"))


def test_parquet_and_arrow_files_by_folder_and_glob(tmp_path):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
    make = lambda values, labels: datasets.Dataset.from_dict({"image": [_picture(v) for v in values], "label": labels}, features=features)  # noqa: E731
    (tmp_path / "pq").mkdir()
    make([1, 2, 3, 4], [0, 1, 0, 1]).to_parquet(str(tmp_path / "pq" / "train-00000.parquet"))
    make([5, 6], [1, 1]).to_parquet(str(tmp_path / "pq" / "test-00000.parquet"))
    train = load_images(str(tmp_path / "pq"))
    assert [_value(train.image(i)) for i in range(4)] == [1, 2, 3, 4] and train.label_names == ["x", "y"]
    assert load_images(str(tmp_path / "pq"), split="test").labels.tolist() == [1, 1]
    assert len(load_images(str(tmp_path / "pq" / "train-*.parquet"))) == 4
    make([7, 8, 9], [0, 0, 1]).save_to_disk(str(tmp_path / "saved"))
    arrow = sorted(f for f in os.listdir(tmp_path / "saved") if f.endswith(".arrow"))
    for f in arrow:
        os.replace(tmp_path / "saved" / f, tmp_path / f"shard-{f}")
    loaded = load_images(str(tmp_path / "shard-*.arrow"))  # memory-mapped as it is, no conversion
    assert [_value(loaded.image(i)) for i in range(3)] == [7, 8, 9]
    stream = open_stream(str(tmp_path / "pq"))
    assert stream.total == 4 and stream.label_names == ["x", "y"]
    records = [r for shard in stream.shards for r in stream.records(shard)]
    assert [(_value(stream.open(p)), label) for _, p, label in records] == [(1, 0), (2, 1), (3, 0), (4, 1)]


def test_webdataset_shards_map_style_and_labels(tmp_path):
    _write_tar(tmp_path / "train-000.tar", [(f"s{i}", _png(i), i % 3) for i in range(5)])
    _write_tar(tmp_path / "train-001.tar", [(f"t{i}", _png(50 + i), 1) for i in range(3)])
    data = load_images(f"webdataset:{tmp_path}")
    assert len(data) == 8 and data.labels.tolist() == [0, 1, 2, 0, 1, 1, 1, 1]
    assert [_value(data.image(i)) for i in range(8)] == [0, 1, 2, 3, 4, 50, 51, 52]
    assert data.describe(6).endswith("train-001.tar:t1.png")
    assert len(load_images(f"webdataset:{tmp_path}/train-{{000..001}}.tar")) == 8
    assert len(load_images(f"webdataset:{tmp_path}/train-001.tar")) == 3
    with pytest.raises(DatasetError, match=r"no split 'test'.*\['train'\]"):
        load_images(f"webdataset:{tmp_path}", split="test")


def test_an_unreadable_image_is_skipped_named_and_the_batch_stays_full(tmp_path):
    from mim_hub import MAEConfig
    from mim_hub.training.pretrain_data import EpochPermutation, PretrainData
    from mim_hub.training.recipes import PretrainRecipe

    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    for i in range(7):
        _picture(i * 30, (40, 40)).save(root / "a" / f"{i}.png")
    (root / "a" / "3_bad.jpg").write_bytes(_truncated_jpeg())
    images = load_images(f"imagefolder:{root}")
    images.bad_image_log = str(tmp_path / "bad.tsv")
    config = MAEConfig(image_size=32, patch_size=8)
    recipe = PretrainRecipe(config, mean=(0.5,) * 3, std=(0.5,) * 3)
    data = PretrainData(images, recipe.train_transform(), recipe, config, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_size=4, sampler=EpochPermutation(len(data), 0), collate_fn=recipe.collate,
                                         num_workers=1)
    batches = list(loader)
    assert [b["pixel_values"].shape[0] for b in batches] == [4, 4]
    lines = (tmp_path / "bad.tsv").read_text().splitlines()
    assert len(lines) == 1 and "3_bad.jpg" in lines[0] and "truncated" in lines[0]
    again = list(torch.utils.data.DataLoader(data, batch_size=4, sampler=EpochPermutation(len(data), 0), collate_fn=recipe.collate))
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(batches, again))  # the stand-in is deterministic
    strict = load_images(f"imagefolder:{root}", on_bad_image="error")
    with pytest.raises(DatasetError, match="3_bad.jpg.*truncated"):
        [strict.image(i) for i in range(len(strict))]


def test_every_reader_reports_a_bad_image_the_same_way(tmp_path, caplog):
    """Indexed datasets, streams and prepare-shards share one bookkeeping (data.bad_image)."""
    from mim_hub.data.shard_writing import prepare_shards

    root = tmp_path / "images" / "a"
    root.mkdir(parents=True)
    for i in range(3):
        _picture(i * 40, (40, 40)).save(root / f"{i}.png")
    (root / "1_bad.jpg").write_bytes(_truncated_jpeg())
    images = load_images(f"imagefolder:{tmp_path / 'images'}")
    images.bad_image_log = str(tmp_path / "indexed.tsv")
    [images.image(i) for i in range(len(images))]
    (tmp_path / "shards").mkdir()
    stream = ShardedStream(_stream(tmp_path / "shards", shards=1, per_shard=4, bad=2), _ids, seed=0, shuffle_buffer=1,
                           bad_image_log=str(tmp_path / "streamed.tsv"))
    assert len(list(itertools.islice(stream, 3))) == 3  # one epoch's readable samples (a buffer of 1 keeps k002 before k003)
    for skipped, log, name in ((images.skipped, "indexed.tsv", "1_bad.jpg"), (stream.skipped, "streamed.tsv", "train-000.tar:k002")):
        assert len(skipped) == 1 and skipped[0].endswith(name)
        where, error = (tmp_path / log).read_text().splitlines()[0].split("\t")
        assert where == skipped[0] and "truncated" in error
    manifest = prepare_shards(f"imagefolder:{tmp_path / 'images'}", str(tmp_path / "out"), max_side=0, progress=False)
    assert manifest["splits"]["train"]["skipped"] == 1 and manifest["splits"]["train"]["samples"] == 3
    warnings = [r.getMessage() for r in caplog.records if "skipped unreadable image" in r.getMessage()]
    assert len(warnings) == 3 and all("skipped so far in this process" in w for w in warnings)
    with pytest.raises(DatasetError, match="unreadable image .*1_bad.jpg.*truncated"):
        prepare_shards(f"imagefolder:{tmp_path / 'images'}", str(tmp_path / "strict"), max_side=0, progress=False, on_bad_image="error")


def _stream(tmp_path, shards=4, per_shard=6, bad=None):
    for s in range(shards):
        _write_tar(tmp_path / f"train-{s:03d}.tar",
                   [(f"k{s * per_shard + i:03d}", _truncated_jpeg() if s * per_shard + i == bad else _png(s * per_shard + i), 0)
                    for i in range(per_shard)])
    return open_stream(f"webdataset:{tmp_path}")


def _ids(image, rng, label):
    return {"id": torch.tensor(_value(image)), "draw": torch.tensor(float(rng.random()))}


def test_streaming_slots_are_disjoint_and_cover_each_epoch(tmp_path):
    source = _stream(tmp_path)
    for shards in (4, 2):  # shards dealt to slots; fewer shards than slots: samples dealt
        source.shards = source.shards[:shards]
        everything = set(range(6 * shards))
        for epoch in (0, 1):
            seen = []
            for rank in (0, 1):
                stream = ShardedStream(source, _ids, seed=3, shuffle_buffer=4, rank=rank, world_size=2)
                for worker in (0, 1):  # as DataLoader worker `worker` of 2 would
                    records = stream.epoch_records(epoch, rank * 2 + worker, 4)
                    seen.append([_value(source.open(p)) for _, p, _ in records])
            flat = [i for slot in seen for i in slot]
            assert sorted(flat) == sorted(everything) and len(flat) == len(everything)
        assert seen != [[_value(source.open(p)) for _, p, _ in ShardedStream(source, _ids, seed=3, shuffle_buffer=4, world_size=2,
                                                                            rank=r).epoch_records(0, r * 2 + w, 4)]
                        for r in (0, 1) for w in (0, 1)]  # epochs are reshuffled


def test_streaming_resumes_exactly_with_workers_and_skips_bad_images(tmp_path):
    source = _stream(tmp_path, bad=7)
    make = lambda: ShardedStream(source, _ids, seed=1, shuffle_buffer=5)  # noqa: E731
    collate = collate_with_positions(lambda samples: {k: torch.stack([s[k] for s in samples]) for k in samples[0]})
    loader = lambda stream: iter(torch.utils.data.DataLoader(stream, batch_size=3, num_workers=2, collate_fn=collate))  # noqa: E731
    straight = loader(make())
    reference = [next(straight) for _ in range(20)]  # 60 samples: more than two epochs of 23 readable ones
    assert all(len(b["id"]) == 3 for b in reference)
    ids = [i for b in reference for i in b["id"].tolist()]
    assert 7 not in ids and set(ids) == set(range(24)) - {7}
    state = StreamState()
    interrupted = loader(make())
    for _ in range(9):
        state.update(next(interrupted).pop("stream_position"))
    resumed_stream = make()
    resumed_stream.resume(state.positions, state.batches)
    resumed = loader(resumed_stream)
    for expected in reference[9:]:
        got = next(resumed)
        assert torch.equal(got["id"], expected["id"]) and torch.equal(got["draw"], expected["draw"])


def test_streaming_refuses_indexed_sources(tmp_path):
    (tmp_path / "a").mkdir()
    _picture(1).save(tmp_path / "a" / "x.png")
    with pytest.raises(DatasetError, match="--streaming reads"):
        open_stream(f"imagefolder:{tmp_path}")


def test_prepare_shards_writes_bounded_images_labels_manifest_and_resumes(tmp_path):
    from mim_hub.data.shard_writing import prepare_shards

    root = tmp_path / "images"
    for split, n in (("train", 5), ("test", 2)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                _picture(20 * i, (500, 375)).save(root / split / label / f"{i}.jpg", quality=95)
    out = tmp_path / "shards"
    manifest = prepare_shards(f"imagefolder:{root}", str(out), splits=("train", "test"), max_side=100, shard_size=4, progress=False,
                              command="test")
    assert manifest["splits"]["train"]["samples"] == 10 and manifest["splits"]["test"]["samples"] == 4
    assert manifest["classes"] == ["a", "b"] and manifest["command"] == "test"
    assert json.loads((out / "manifest.json").read_text())["splits"]["train"]["shards"] == [
        "train-000000.tar", "train-000001.tar", "train-000002.tar"]
    data = load_images(f"webdataset:{out}")
    assert len(data) == 10 and data.labels.tolist() == [0] * 5 + [1] * 5 and data.label_names == ["a", "b"]
    # the receipts hold the member index (no tar header read at start-up); it is the one the headers give
    from mim_hub.data import shard_reading as shards_module

    shards = sorted(str(p) for p in out.glob("train-*.tar"))
    from mim_hub.data.receipts import verified_index

    assert all(verified_index(shard) is not None for shard in shards)
    scanned = {"shard": [], "offset": [], "size": [], "label": []}
    for number, shard in enumerate(shards):
        for _, _, offset, size, label, _ in shards_module.iter_samples(shard):
            for key, value in zip(scanned, (number, offset, size, label)):
                scanned[key].append(value)
    indexed = shards_module.index_webdataset(shards)
    assert all(indexed[key].tolist() == scanned[key] for key in scanned)
    assert data.image(0).size == (100, 75)
    assert abs(_value(data.image(3)) - 60) <= 3
    stream = open_stream(f"webdataset:{out}", split="test")
    assert stream.total == 4 and stream.label_names == ["a", "b"]
    # resumable: finished shards (with their receipt) are kept, the missing one is written again
    kept = os.path.getmtime(out / "train-000000.tar")
    os.remove(out / "train-000001.tar.json")
    prepare_shards(f"imagefolder:{root}", str(out), splits=("train",), max_side=100, shard_size=4, progress=False)
    assert os.path.getmtime(out / "train-000000.tar") == kept and (out / "train-000001.tar.json").exists()
    assert len(load_images(f"webdataset:{out}")) == 10


def test_jpeg_draft_decoding_in_the_pretraining_crop(tmp_path):
    from mim_hub.training.transforms import RandomResizedCropFlip, draft_for_crop

    smooth = np.linspace(0, 255, 640)[None, :, None] * np.ones((480, 1, 3))
    Image.fromarray(smooth.astype(np.uint8)).save(tmp_path / "big.jpg", quality=95)
    with Image.open(tmp_path / "big.jpg") as lazy:
        image, box = draft_for_crop(lazy, (0, 0, 400, 400), 32)
        assert image.size == (80, 60) and box == (0, 0, 50, 50)  # 1/8 scale: the crop is downscaled 12.5x
    with Image.open(tmp_path / "big.jpg") as lazy:
        assert draft_for_crop(lazy, (0, 0, 50, 50), 32)[0].size == (640, 480)  # < 2x: decoded at full size
    transform = RandomResizedCropFlip(32, (0.5,) * 3, (0.5,) * 3)
    exact = RandomResizedCropFlip(32, (0.5,) * 3, (0.5,) * 3, draft=False)
    with Image.open(tmp_path / "big.jpg") as a, Image.open(tmp_path / "big.jpg") as b:
        fast, full = transform(a, np.random.default_rng(0)), exact(b, np.random.default_rng(0))
    assert np.abs(fast - full).mean() < 0.05  # the same region, within a pixel of the reduced image
    decoded = Image.open(tmp_path / "big.jpg").convert("RGB")  # a decoded image is never drafted
    assert np.array_equal(transform(decoded, np.random.default_rng(0)), exact(decoded, np.random.default_rng(0)))


def test_the_pretraining_crops_fast_paths_compute_what_they_replace():
    """RandomResizedCropFlip's per-item path, made cheaper, gives the same numbers: the box from
    `rng.random()` is `rng.uniform`'s (torchvision's sampling), the crop is cut in PIL before one
    copy into NumPy, the normalisation writes straight into its output."""
    import math

    from mim_hub.models.image_processing_common import resize_uint8
    from mim_hub.training.transforms import Normalize, RandomResizedCropFlip, random_resized_crop_box

    def reference_box(width, height, rng, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
        for _ in range(10):
            target = width * height * rng.uniform(scale[0], scale[1])
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                return left, top, left + w, top + h
        return None

    for seed in range(200):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        expected = reference_box(500, 375, b)
        assert random_resized_crop_box(500, 375, a) == expected and a.random() == b.random()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pixels = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    formula = ((pixels.transpose(2, 0, 1) / 255.0 - np.asarray(mean)[:, None, None]) / np.asarray(std)[:, None, None]).astype(np.float32)
    assert np.array_equal(Normalize(mean, std)(pixels), formula)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (75, 100, 3), dtype=np.uint8))
    transform = RandomResizedCropFlip(32, mean, std)
    for box in ((3, 5, 71, 60), (0, 0, 100, 75)):
        cut = np.asarray(image)[box[1]:box[3], box[0]:box[2]]
        assert np.array_equal(transform.crop_resize(image, box, False), resize_uint8(cut, 32, 32, Image.BICUBIC, "torch"))
    # uint8 crops normalised a batch at a time (on the GPU, in pretrain) are the per-image values, bit for bit
    crops = RandomResizedCropFlip(32, mean, std, uint8=True)
    per_image = [transform(image, np.random.default_rng(seed)) for seed in range(4)]
    as_uint8 = torch.from_numpy(np.stack([crops(image, np.random.default_rng(seed)) for seed in range(4)]))
    assert as_uint8.dtype == torch.uint8 and torch.equal(transform.normalize.batch(as_uint8), torch.from_numpy(np.stack(per_image)))
    # the table goes to the batch's device once, not every step, and never travels to workers
    first = transform.normalize._device_table(as_uint8.device)
    assert transform.normalize._device_table(as_uint8.device) is first
    assert torch.equal(transform.normalize.batch(as_uint8), torch.from_numpy(np.stack(per_image)))
    assert "_device_tables" not in pickle.loads(pickle.dumps(transform.normalize)).__dict__


@pytest.mark.slow
def test_pretrain_normalising_uint8_batches_on_the_device_trains_exactly_the_same(tiny_mae, tmp_path):
    from safetensors.torch import load_file

    common = ["pretrain", "--model", tiny_mae, "--dataset", "digits", "--batch-size", "8", "--max-steps", "3", "--save-every", "0",
              "--num-workers", "1", "--lr", "1e-3"]
    _cli(*common, "--output-dir", str(tmp_path / "workers"))
    proc = subprocess.run([sys.executable, "-m", "mim_hub", *common, "--output-dir", str(tmp_path / "device")], capture_output=True,
                          text=True, timeout=300,
                          env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path), "MIM_HUB_NORMALIZE_ON_DEVICE": "1"})  # as on a GPU
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hand over uint8 crops, normalised on cpu" in proc.stderr  # the device path was taken
    a, b = load_file(tmp_path / "workers" / "model.safetensors"), load_file(tmp_path / "device" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_chunked_knn_matches_the_full_similarity_matrix():
    from mim_hub.training.evaluate import knn_topk

    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(500, 8, generator=generator), torch.randn(70, 8, generator=generator)
    sims, idx = knn_topk(train, test, 5, test_chunk=16, train_chunk=37)
    full_sims, full_idx = (test @ train.T).topk(5, dim=1)
    assert torch.allclose(sims, full_sims) and torch.equal(idx, full_idx)


def test_hub_name_offline_is_a_clear_error():
    with pytest.raises(DatasetError, match="cannot load dataset 'no-such-user/no-such-set'.*offline"):
        load_images("no-such-user/no-such-set")
    with pytest.raises(DatasetError, match="cannot load dataset"):
        open_stream("no-such-user/no-such-set")


RANKS_SCRIPT = """
import json, sys, torch
from accelerate import PartialState
from mim_hub.data import open_stream
from mim_hub.data.stream import ShardedStream, collate_with_positions
from PIL import Image
import numpy as np
state = PartialState(cpu=True)  # gloo across CPU processes
source = open_stream("webdataset:" + sys.argv[1])
stream = ShardedStream(source, lambda image, rng, label: {"id": torch.tensor(int(np.asarray(image.convert("RGB"))[5, 5, 1]))},
                       seed=0, shuffle_buffer=3, rank=state.process_index, world_size=state.num_processes)
loader = iter(torch.utils.data.DataLoader(stream, batch_size=2, num_workers=2,
              collate_fn=collate_with_positions(lambda s: {"id": torch.stack([x["id"] for x in s])})))
ids = [i for _ in range(6) for i in next(loader)["id"].tolist()]  # 12 per rank: one epoch of 24 over 2 ranks
json.dump(ids, open(f"{sys.argv[2]}/rank{state.process_index}.json", "w"))
"""


@pytest.mark.slow
def test_two_ranks_under_accelerate_launch_stream_disjoint_halves_of_the_epoch(tmp_path):
    (tmp_path / "shards").mkdir()
    _stream(tmp_path / "shards", shards=4, per_shard=6)
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    # `--cpu --num_processes 2` starts ONE process in accelerate 1.15 (its simple launcher); `--multi_gpu` starts two,
    # which the script's PartialState(cpu=True) joins over gloo
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(tmp_path / "shards"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (tmp_path / "rank1.json").exists(), "two processes ran"
    assert len(first) == len(second) == 12 and not set(first) & set(second) and sorted(first + second) == list(range(24))


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "mim_hub", *args], capture_output=True, text=True, timeout=300,
                          env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture
def tiny_mae(tiny_mae_dir):
    return tiny_mae_dir


@pytest.mark.slow
def test_pretrain_streams_webdataset_with_a_bad_image_and_resumes_exactly(tiny_mae, tmp_path):
    from safetensors.torch import load_file

    (tmp_path / "shards").mkdir()
    _stream(tmp_path / "shards", bad=5)
    common = ["pretrain", "--model", tiny_mae, "--dataset", f"webdataset:{tmp_path / 'shards'}", "--streaming", "--shuffle-buffer", "4",
              "--batch-size", "4", "--max-steps", "6", "--save-every", "3", "--log-every", "1", "--num-workers", "2", "--lr", "1e-3"]
    _cli(*common, "--output-dir", str(tmp_path / "a"))
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and log[-1]["bad_images"] >= 1
    assert 0 <= log[-1]["data_wait_fraction"] <= 1 and log[-1]["images_per_s"] > 0
    assert log[0]["data_index_s"] >= 0 and log[0]["data_first_batch_s"] >= 0  # the data layer's own start-up, logged once
    assert "data_index_s" not in log[1]
    state = json.loads((tmp_path / "a" / "checkpoints" / "step_00000003" / "state.json").read_text())
    assert state["stream"]["batches"] == 3 and state["stream"]["num_workers"] == 2
    # a crash after step 3: the checkpoint alone, resumed
    import shutil

    os.makedirs(tmp_path / "b" / "checkpoints")
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_00000003", tmp_path / "b" / "checkpoints" / "step_00000003")
    _cli(*common, "--output-dir", str(tmp_path / "b"), "--resume")
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _launch_two_ranks(*args, env=None):
    # accelerate 1.15's `--cpu --num_processes 2` starts ONE process (its simple launcher); `--multi_gpu` starts two
    # (torchrun), which pretrain joins over gloo on a machine without an accelerator
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mim_hub", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["webdataset", "parquet"])
def test_pretrain_as_two_gloo_ranks_trains_on_disjoint_halves_of_a_streamed_epoch(tiny_mae, tmp_path, kind):
    (tmp_path / "data").mkdir()
    if kind == "webdataset":
        _stream(tmp_path / "data", shards=4, per_shard=6)
        spec = f"webdataset:{tmp_path / 'data'}"
    else:
        import datasets
        import pyarrow.parquet as pq

        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
        rows = datasets.Dataset.from_dict({"image": [_picture(v) for v in range(24)], "label": [v % 2 for v in range(24)]},
                                          features=features)
        rows.to_parquet(str(tmp_path / "data" / "train-00000.parquet"), batch_size=6)
        assert pq.read_metadata(tmp_path / "data" / "train-00000.parquet").num_row_groups == 4  # the stream's 4 shards
        spec = str(tmp_path / "data")
    source = open_stream(spec)
    epoch = [where for shard in source.shards for where, _, _ in source.records(shard)]
    assert len(set(epoch)) == 24
    # 2 ranks x 2 workers = 4 slots, one shard each; 2 ranks x batch 3 x 4 steps = 24 samples = one epoch
    _launch_two_ranks("pretrain", "--model", tiny_mae, "--dataset", spec, "--streaming", "--shuffle-buffer", "4", "--batch-size", "3",
                      "--max-steps", "4", "--save-every", "2", "--log-every", "1", "--num-workers", "2", "--lr", "1e-3",
                      "--output-dir", str(tmp_path / "run"), env={"MIM_HUB_SAMPLE_LOG": str(tmp_path / "samples")})
    trained = {}
    for rank in (0, 1):
        lines = [line.split("\t") for line in (tmp_path / "samples" / f"samples.rank{rank}.tsv").read_text().splitlines()]
        assert [int(step) for step, _ in lines] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
        trained[rank] = [key for _, key in lines]
        assert len(set(trained[rank])) == 12
    assert not set(trained[0]) & set(trained[1])  # disjoint
    assert sorted(trained[0] + trained[1]) == sorted(epoch)  # and together the whole epoch
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_00000002" / "state.json").read_text())
    assert state["run"]["num_processes"] == 2 and state["run"]["total_batch"] == 6
    assert state["stream"]["positions"] == {"0": 3, "1": 3, "2": 3, "3": 3}  # every rank's slots, gathered over gloo
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.slow
def test_pretrain_and_eval_commands_on_a_saved_dataset_dict(tiny_mae, tmp_path):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["dark", "light"])})
    rows = lambda n, offset: {"image": [_picture((i * 37 + offset) % 256) for i in range(n)], "label": [i % 2 for i in range(n)]}  # noqa: E731
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows(16, 0), features=features),
                          "test": datasets.Dataset.from_dict(rows(6, 11), features=features)}).save_to_disk(str(tmp_path / "saved"))
    _cli("pretrain", "--model", tiny_mae, "--dataset", str(tmp_path / "saved"), "--batch-size", "8", "--max-steps", "2",
         "--save-every", "0", "--output-dir", str(tmp_path / "run"))
    assert (tmp_path / "run" / "model.safetensors").exists()
    out = tmp_path / "eval.json"
    _cli("eval", "--model", tiny_mae, "--dataset", str(tmp_path / "saved"), "--protocol", "knn", "--k", "3", "--output", str(out))
    assert 0 <= json.loads(out.read_text())["knn"] <= 1  # evaluated on 'test', found by itself
    datasets.Dataset.from_dict({"image": rows(4, 0)["image"]}).cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "nolabels"))
    proc = subprocess.run([sys.executable, "-m", "mim_hub", "eval", "--model", tiny_mae, "--dataset", str(tmp_path / "nolabels"),
                           "--eval-split", "train"], capture_output=True, text=True, env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 2 and "has no labels" in proc.stderr


def test_shards_interoperate_with_the_webdataset_library(tmp_path):
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "train-0.tar")) as sink:  # written by the library, read by us
        for i in range(4):
            sink.write({"__key__": f"sample{i:04d}", "png": _png(i * 10), "cls": str(i % 2).encode()})
    ours = load_images(f"webdataset:{tmp_path}")
    assert [_value(ours.image(i)) for i in range(4)] == [0, 10, 20, 30] and ours.labels.tolist() == [0, 1, 0, 1]
    from mim_hub.data.shard_writing import prepare_shards

    prepare_shards(f"webdataset:{tmp_path}", str(tmp_path / "out"), max_side=0, shard_size=3, progress=False)
    read = list(wds.WebDataset(str(tmp_path / "out" / "train-{000000..000001}.tar"), shardshuffle=False))  # ours, by the library
    assert [int(s["cls"]) for s in read] == [0, 1, 0, 1] and [s["__key__"] for s in read][:1] == ["000000000"]
    assert [_value(Image.open(io.BytesIO(s["jpg"]))) for s in read] == pytest.approx([0, 10, 20, 30], abs=6)  # re-encoded as JPEG


@pytest.mark.slow
def test_reconstruct_takes_an_item_of_a_dataset_and_finetune_refuses_unlabelled_data(tiny_mae, tmp_path):
    from mim_hub.cli import main
    from mim_hub.training.finetune import finetune

    (tmp_path / "flat").mkdir()
    for i in range(3):
        _picture(40 * i, (40, 30)).save(tmp_path / "flat" / f"{i}.png")
    picture = tmp_path / "rec.png"
    assert main(["reconstruct", "--model", tiny_mae, "--dataset", f"imagefolder:{tmp_path / 'flat'}", "--index", "2",
                 "--output", str(picture)]) == 0
    assert Image.open(picture).width > 4 * 32
    assert main(["reconstruct", "--model", tiny_mae, "--dataset", f"imagefolder:{tmp_path / 'flat'}", "--index", "3",
                 "--output", str(picture)]) == 2  # out of range: a clear error, exit code 2
    unlabelled = load_images(f"imagefolder:{tmp_path / 'flat'}")
    assert not unlabelled.has_labels
    with pytest.raises(ValueError, match="has no labels"):
        finetune(tiny_mae, unlabelled, output_dir=str(tmp_path / "ft"))
