"""Round three (issue 34): the data layer under hostile and careless input, as classes of cases
shared by tests/data/test_robustness_data.py and benchmarks/robustness.py (`CLASSES`). Each case takes
an empty folder, writes the data it needs there, and returns (ok, why): ok when the input was
refused with a clear message (exit 2 from the CLI, the phrase naming the fault in it, nothing
half-written) or handled correctly (as docs/training.md states)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile

import numpy as np
from PIL import Image


def cli(*argv) -> tuple[int, str]:
    """(exit code, the error line or the whole stderr) of `mim-hub ARGV` run in this process."""
    from mim_hub.cli import main

    stream = io.StringIO()
    with contextlib.redirect_stderr(stream):
        code = main([str(a) for a in argv])
    text = stream.getvalue().replace("\r", "\n")
    errors = [line for line in text.splitlines() if "error:" in line]
    return code, errors[-1] if errors else text[-400:]


def refused(code: int, message: str, phrase: str, *absent: str) -> tuple[bool, str]:
    """A clean refusal: exit 2, `phrase` in the message, and none of `absent` written."""
    written = [path for path in absent if os.path.exists(path)]
    ok = code == 2 and phrase.lower() in message.lower() and not written
    return ok, (f"written: {written}; " if written else "") + (message[-200:] or f"exit {code}")


def raises(function, phrase: str, error=Exception) -> tuple[bool, str]:
    """`function()` raises `error` whose message holds `phrase` (a traceback-free refusal)."""
    try:
        function()
    except error as caught:
        message = str(caught)
        return phrase.lower() in message.lower(), f"{type(caught).__name__}: {message[:200]}"
    except Exception as caught:  # noqa: BLE001 - the wrong kind of error is a wrong answer
        return False, f"{type(caught).__name__}: {str(caught)[:200]}"
    return False, "accepted"


# ---------------------------------------------------------------- data the cases write

def picture(value: int, size=(20, 16)) -> Image.Image:
    """A flat picture whose red channel tells which one it is."""
    return Image.new("RGB", size, (value, 255 - value, 128))


def png(value: int, size=(20, 16)) -> bytes:
    buffer = io.BytesIO()
    picture(value, size).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(value: int, size=(20, 16)) -> bytes:
    buffer = io.BytesIO()
    picture(value, size).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def image_folder(root: str, classes=("a", "b"), per_class: int = 3, start: int = 0) -> str:
    """ROOT/<class>/<n>.png, each picture's value its index (from `start`)."""
    value = start
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            picture(value * 10 % 256).save(os.path.join(root, name, f"{i}.png"))
            value += 1
    return root


def write_tar(path: str, members) -> str:
    """A tar of (name, bytes) members, in order."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(blob), 0
            tar.addfile(info, io.BytesIO(blob))
    return path


def samples(count: int, start: int = 0, label=lambda i: i % 2):
    """Members of `count` samples: `<key>.png` + `<key>.cls`."""
    members = []
    for i in range(start, start + count):
        members += [(f"s{i:04d}.png", png(i * 10 % 256)), (f"s{i:04d}.cls", str(label(i)).encode())]
    return members


def tiny_mae(folder: str) -> str:
    from hostile_inputs import _tiny_pretraining_model

    return _tiny_pretraining_model(folder)


PRETRAIN = ["--dataset", "digits", "--batch-size", "16", "--max-steps", "2", "--num-workers", "0", "--log-every", "1"]


# ---------------------------------------------------------------- 6: values checked where they enter

def _value_case(command: str, option: str, value: str, phrase: str):
    def case(folder):
        output = os.path.join(folder, "out")
        if command == "pretrain":
            argv = ["pretrain", "--model", "mae-tiny-digits", "--output-dir", output, *PRETRAIN]
        elif command == "finetune":
            argv = ["finetune", "--model", os.path.join(folder, "none"), "--output-dir", output, "--dataset", "digits"]
        elif command == "eval":
            argv = ["eval", "--model", os.path.join(folder, "none"), "--dataset", "digits", "--output", os.path.join(output, "r.json")]
        else:
            argv = ["prepare-shards", "--dataset", "digits", "--output", output]
        if option in argv:  # the case's value replaces the common one
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
        return refused(*cli(*argv), phrase, output)
    return case


VALUES = [
    ("pretrain --lr inf", _value_case("pretrain", "--lr", "inf", "--lr inf: must be a finite number > 0")),
    ("pretrain --lr nan", _value_case("pretrain", "--lr", "nan", "--lr nan")),
    ("pretrain --lr -1", _value_case("pretrain", "--lr", "-1", "--lr -1.0: must be")),
    ("pretrain --mask-ratio 0", _value_case("pretrain", "--mask-ratio", "0", "--mask-ratio 0.0: must be a finite number in (0, 1)")),
    ("pretrain --mask-ratio 1", _value_case("pretrain", "--mask-ratio", "1", "--mask-ratio 1.0")),
    ("pretrain --max-steps 0", _value_case("pretrain", "--max-steps", "0", "--max-steps 0: must be an integer >= 1")),
    ("pretrain --max-steps -3", _value_case("pretrain", "--max-steps", "-3", "--max-steps -3")),
    ("pretrain --epochs 0", _value_case("pretrain", "--epochs", "0", "--epochs 0.0: must be a finite number > 0")),
    ("pretrain --epochs -1", _value_case("pretrain", "--epochs", "-1", "--epochs -1.0")),
    ("pretrain --crop-min-scale -1", _value_case("pretrain", "--crop-min-scale", "-1", "--crop-min-scale -1.0: must be")),
    ("pretrain --grad-accum 0", _value_case("pretrain", "--grad-accum", "0", "--grad-accum 0")),
    ("pretrain --log-every 0", _value_case("pretrain", "--log-every", "0", "--log-every 0")),
    ("pretrain --batch-size 0", _value_case("pretrain", "--batch-size", "0", "--batch-size 0")),
    ("pretrain --num-workers 10000", _value_case("pretrain", "--num-workers", "10000", "--num-workers 10000: must be an integer in [0,")),
    ("pretrain --num-workers -1", _value_case("pretrain", "--num-workers", "-1", "--num-workers -1")),
    ("pretrain --min-lr-ratio 2", _value_case("pretrain", "--min-lr-ratio", "2", "--min-lr-ratio 2.0")),
    ("pretrain --shuffle-buffer 0", _value_case("pretrain", "--shuffle-buffer", "0", "--shuffle-buffer 0")),
    ("finetune --batch-size 0", _value_case("finetune", "--batch-size", "0", "--batch-size 0")),
    ("finetune --epochs -2", _value_case("finetune", "--epochs", "-2", "--epochs -2.0")),
    ("finetune --base-lr inf", _value_case("finetune", "--base-lr", "inf", "--base-lr inf")),
    ("finetune --label-smoothing 1", _value_case("finetune", "--label-smoothing", "1", "--label-smoothing 1.0")),
    ("finetune --mixup-prob 1.5", _value_case("finetune", "--mixup-prob", "1.5", "--mixup-prob 1.5")),
    ("eval --k 0", _value_case("eval", "--k", "0", "--k 0")),
    ("eval --batch-size -5", _value_case("eval", "--batch-size", "-5", "--batch-size -5")),
    ("eval --temperature 0", _value_case("eval", "--temperature", "0", "--temperature 0.0")),
    ("prepare-shards --shard-size 0", _value_case("prepare-shards", "--shard-size", "0", "--shard-size 0")),
    ("prepare-shards --quality 0", _value_case("prepare-shards", "--quality", "0", "--quality 0")),
    ("prepare-shards --max-side -1", _value_case("prepare-shards", "--max-side", "-1", "--max-side -1")),
    ("prepare-shards --num-workers 10000", _value_case("prepare-shards", "--num-workers", "10000", "--num-workers 10000")),
]


def _diverging_run(folder):
    """A finite but absurd lr: the run stops at the first NaN loss, and no model is saved."""
    model, output = tiny_mae(folder), os.path.join(folder, "out")
    code, message = cli("pretrain", "--model", model, "--output-dir", output, *PRETRAIN, "--lr", "1e30", "--max-steps", "4")
    return refused(code, message, "the loss is nan at step", os.path.join(output, "model.safetensors"))


def _finetune_keywords(folder):
    """The Python API checks its keywords as the CLI checks its options."""
    from mim_hub.data import load_images
    from mim_hub.training.finetune import finetune

    images = load_images("digits")
    return raises(lambda: finetune(os.path.join(folder, "none"), images, output_dir=folder, batch_size=0), "--batch-size 0", ValueError)


VALUES += [("pretrain --lr 1e30 (diverges)", _diverging_run), ("finetune(batch_size=0)", _finetune_keywords)]


# ---------------------------------------------------------------- 2: indexes that verify what they trust

@contextlib.contextmanager
def captured_log(name: str = "mim_hub"):
    """The messages logged under `name` inside the block (a list, filled as they come)."""
    import logging

    messages = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger, handler = logging.getLogger(name), Keep(level=logging.DEBUG)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def prepared_shards(folder: str, per_class: int = 3, shard_size: int = 4) -> str:
    """Shards written by prepare-shards from a two-class image folder (pictures of distinct values)."""
    from mim_hub.data.shard_writing import prepare_shards

    source = image_folder(os.path.join(folder, "images"), per_class=per_class)
    output = os.path.join(folder, "shards")
    prepare_shards(f"imagefolder:{source}", output, max_side=0, shard_size=shard_size, progress=False, command="test")
    return output


def red(image) -> int:
    return int(np.asarray(image.convert("RGB"))[..., 0].mean().round())


def _tar_truth(shards: str) -> list[tuple[int, int]]:
    """(label, picture value) of every sample, read from the tar members themselves."""
    from mim_hub.data.sources.webdataset import webdataset_shards
    from mim_hub.data.shard_reading import iter_samples

    truth = []
    for shard in webdataset_shards(shards):
        for _, _, _, _, label, data in iter_samples(shard, read_images=True):
            truth.append((label, red(Image.open(io.BytesIO(data)))))
    return truth


def _receipt_case(tamper, phrase="does not match the shard"):
    """Tamper with the shards or their receipts; the map-style index must still give each image
    its own label (the receipt re-checked, the shard indexed from its tar), and say so."""
    def case(folder):
        from mim_hub.data import load_images

        shards = prepared_shards(folder)
        tamper(os.path.join(shards, "train-000000.tar"))
        truth = _tar_truth(shards)
        with captured_log() as log:
            data = load_images(f"webdataset:{shards}")
            got = [(int(data.labels[i]), red(data.image(i))) for i in range(len(data))]
        said = any(phrase in m for m in log)
        ok = got == truth and said
        return ok, f"{'labels and images as in the tar' if got == truth else f'wrong: {got} != {truth}'}; " + (
            next((m for m in log if phrase in m), "no warning")[:200])
    return case


def _edit_receipt(change):
    def tamper(shard):
        path = shard + ".json"
        receipt = json.load(open(path))
        change(receipt)
        with open(path, "w") as handle:
            json.dump(receipt, handle)
    return tamper


def _relabel_in_place(shard):
    """Flip one .cls member's digit in place: the same size, another label."""
    from mim_hub.data.shard_reading import iter_tar

    for name, offset, size, _ in iter_tar(shard):
        if name.endswith(".cls"):
            with open(shard, "r+b") as handle:
                handle.seek(offset)
                digit = handle.read(1)
                handle.seek(offset)
                handle.write(b"1" if digit == b"0" else b"0")
            return


def _relabel_keeping_mtime(shard):
    """Relabel in place and put the old modification time back: the labels are then re-read."""
    stat = os.stat(shard)
    _relabel_in_place(shard)
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))


def _empty_receipt(shard):
    open(shard + ".json", "w").close()


def _tar_claiming_a_tebibyte(folder):
    from mim_hub.data import DatasetError, load_images

    path = write_tar(os.path.join(folder, "train-000000.tar"), samples(2))
    with open(path, "r+b") as handle:  # the first member's size field: 1 TiB, checksum fixed up
        header = bytearray(handle.read(512))
        header[124:136] = bytes([0x80]) + (1 << 40).to_bytes(11, "big")  # GNU base-256
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        handle.seek(0)
        handle.write(header)
    return raises(lambda: load_images(f"webdataset:{folder}"), "claims 1099511627776 bytes, but the file ends", DatasetError)


RECEIPTS = [
    ("labels permuted", _receipt_case(_edit_receipt(lambda r: r.update(labels=r["labels"][::-1])))),
    ("fewer labels than offsets", _receipt_case(_edit_receipt(lambda r: r.update(labels=r["labels"][:-1])))),
    ("every offset at one member", _receipt_case(_edit_receipt(lambda r: r.update(offsets=[r["offsets"][0]] * len(r["offsets"]),
                                                                                  sizes=[r["sizes"][0]] * len(r["sizes"]))))),
    ("offset at a label member", _receipt_case(_edit_receipt(lambda r: r.update(offsets=[o + 1024 if i == 1 else o for i, o in
                                                                                         enumerate(r["offsets"])])))),
    ("claimed size 1 TiB", _receipt_case(_edit_receipt(lambda r: r.update(sizes=[1 << 40] + r["sizes"][1:])))),
    ("offsets not integers", _receipt_case(_edit_receipt(lambda r: r.update(offsets=[str(o) for o in r["offsets"]])))),
    ("relabelled in place, same size", _receipt_case(_relabel_in_place)),
    ("relabelled in place, mtime kept", _receipt_case(_relabel_keeping_mtime)),
    ("empty receipt (full disk)", _receipt_case(_empty_receipt, phrase="unreadable")),
    ("tar member claiming 1 TiB", _tar_claiming_a_tebibyte),
]


# ---------------------------------------------------------------- 3: one label space per dataset

def hf_split(values, labels, column="label"):
    """A datasets.Dataset of pictures (an Image column) and a plain label column."""
    import datasets

    data = datasets.Dataset.from_dict({"image": [{"bytes": png(v), "path": None} for v in values], column: labels})
    return data.cast_column("image", datasets.Image())


def _write_splits(folder, kind, splits):
    """`splits` {name: (values, labels)} written as parquet files, arrow files or a save_to_disk DatasetDict."""
    import datasets

    root = os.path.join(folder, kind)
    os.makedirs(root, exist_ok=True)
    made = {name: hf_split(*data) for name, data in splits.items()}
    if kind == "saved":
        datasets.DatasetDict(made).save_to_disk(root)
    for name, data in made.items():
        if kind == "parquet":
            data.to_parquet(os.path.join(root, f"{name}-0.parquet"))
        elif kind == "arrow":
            data.flatten_indices().save_to_disk(os.path.join(folder, f"tmp-{name}"))
            arrow = [f for f in os.listdir(os.path.join(folder, f"tmp-{name}")) if f.endswith(".arrow")][0]
            os.replace(os.path.join(folder, f"tmp-{name}", arrow), os.path.join(root, f"{name}-0.arrow"))
    return root


def _label_space_case(kind):
    """Strings in the training split, a class missing from the test split: one numbering."""
    def case(folder):
        from mim_hub.data import load_images

        root = _write_splits(folder, kind, {"train": ([10, 20, 30, 40], ["cat", "dog", "eel", "cat"]),
                                            "test": ([50, 60], ["eel", "cat"])})
        train, test = load_images(root, split="train"), load_images(root, split="test")
        ok = (train.label_names == test.label_names == ["cat", "dog", "eel"] and train.labels.tolist() == [0, 1, 2, 0]
              and test.labels.tolist() == [2, 0])
        return ok, f"train {train.label_names} {train.labels.tolist()}, test {test.label_names} {test.labels.tolist()}"
    return case


def _null_label(folder):
    """A null in an int label column: unlabelled (-1) and counted, never a class "nan"; names stay ints."""
    from mim_hub.data import load_images

    root = _write_splits(folder, "parquet", {"train": ([10, 20, 30], [3, None, 7])})
    with captured_log() as log:
        data = load_images(root)
    said = any("1 of 3 rows have no 'label'" in m for m in log)
    ok = data.label_names == ["3", "7"] and data.labels.tolist() == [0, -1, 1] and said
    return ok, f"names {data.label_names}, labels {data.labels.tolist()}, counted: {said}"


def _null_label_refused_by_finetune(folder):
    from mim_hub.data import load_images
    from mim_hub.data.labels import LabelError, check_labelled

    root = _write_splits(folder, "parquet", {"train": ([10, 20, 30], [3, None, 7])})
    return raises(lambda: check_labelled(load_images(root), None, "fine-tuning"), "1 without a label of 3 items", LabelError)


def _labels_beyond_manifest(folder):
    """A .cls beyond the manifest's classes: fine-tuning is refused before it starts."""
    shards = os.path.join(folder, "shards")
    os.makedirs(shards)
    write_tar(os.path.join(shards, "train-000000.tar"), samples(4, label=lambda i: 5 if i == 2 else i % 2))
    with open(os.path.join(shards, "manifest.json"), "w") as handle:
        json.dump({"classes": ["a", "b"], "splits": {}}, handle)
    model, output = tiny_mae(folder), os.path.join(folder, "out")
    code, message = cli("finetune", "--model", model, "--output-dir", output, "--dataset", f"webdataset:{shards}",
                        "--epochs", "1", "--num-workers", "0")
    return refused(code, message, "1 with a class id >= 2 (the number of classes) of 4 items", os.path.join(output, "model.safetensors"))


def _string_labels_streamed(folder):
    """String labels in parquet under --streaming: the same label space as without it."""
    from mim_hub.data import open_stream

    root = _write_splits(folder, "parquet", {"train": ([10, 20, 30], ["eel", "cat", "dog"]), "test": ([40], ["ant"])})
    stream = open_stream(root, split="train")
    labels = [label for shard in stream.shards for _, _, label in stream.records(shard)]
    ok = stream.label_names == ["ant", "cat", "dog", "eel"] and labels == [3, 1, 2]
    return ok, f"names {stream.label_names}, labels {labels}"


LABELS = [
    ("parquet --streaming: string labels", _string_labels_streamed),
    ("parquet: test split lacks a class", _label_space_case("parquet")),
    ("arrow: test split lacks a class", _label_space_case("arrow")),
    ("save_to_disk: test split lacks a class", _label_space_case("saved")),
    ("null in an int label column", _null_label),
    ("missing labels refused by fine-tuning", _null_label_refused_by_finetune),
    ("webdataset label beyond the manifest", _labels_beyond_manifest),
]


# ---------------------------------------------------------------- 1: prepare-shards outputs that know what made them

def shard_values(shards: str, split: str = "train") -> list[int]:
    from mim_hub.data import load_images

    data = load_images(f"webdataset:{shards}", split=split)
    return [red(data.image(i)) for i in range(len(data))]


def close(values, indices) -> bool:
    """Pictures `indices` of `image_folder` (JPEG re-encoding moves a flat value by a step or two)."""
    expected = [i * 10 % 256 for i in indices]
    return len(values) == len(expected) and all(abs(a - b) <= 3 for a, b in zip(values, expected))


def _prepare(source, output, *extra):
    return cli("prepare-shards", "--dataset", f"imagefolder:{source}", "--output", output, "--max-side", "0", "--shard-size", "4",
               "--num-workers", "0", *extra)


def _other_source_into_folder(folder):
    """Dataset B into dataset A's folder: refused, A's shards untouched; --overwrite replaces them."""
    a = image_folder(os.path.join(folder, "a"), per_class=3, start=0)
    b = image_folder(os.path.join(folder, "b"), per_class=2, start=10)
    output = os.path.join(folder, "shards")
    _prepare(a, output)
    before = shard_values(output)
    code, message = _prepare(b, output)
    ok, why = refused(code, message, "holds shards of another run")
    kept = shard_values(output) == before
    code2, _ = _prepare(b, output, "--overwrite")
    manifest = json.load(open(os.path.join(output, "manifest.json")))
    replaced = code2 == 0 and manifest["source"] == f"imagefolder:{b}" and close(shard_values(output), range(10, 14))
    return ok and kept and replaced, f"{why}; A kept: {kept}; --overwrite wrote B: {replaced}"


def _rerun_with_other(option, value, check):
    def case(folder):
        source = image_folder(os.path.join(folder, "images"), per_class=9, classes=("a", "b"))
        output = os.path.join(folder, "shards")
        _prepare(source, output)
        code, message = _prepare(source, output, option, value)
        ok, why = refused(code, message, option.lstrip("-").replace("-", "_"))
        code2, _ = cli("prepare-shards", "--dataset", f"imagefolder:{source}", "--output", output, "--num-workers", "0",
                       *{"--shard-size": ["--max-side", "0"], "--max-side": ["--shard-size", "4"]}[option], option, value, "--overwrite")
        result = check(output)
        return ok and code2 == 0 and result[0], f"{why}; after --overwrite: {result[1]}"
    return case


def _count_is_18(output):
    manifest = json.load(open(os.path.join(output, "manifest.json")))
    values = shard_values(output)
    return (manifest["splits"]["train"]["samples"] == 18 and len(values) == 18), f"{len(values)} samples for 18 images"


def _sides_at_most_8(output):
    from mim_hub.data import load_images

    data = load_images(f"webdataset:{output}")
    sides = {max(data.image(i).size) for i in range(len(data))}
    return sides == {8}, f"longer sides {sorted(sides)}"


def _one_split_regenerated(folder):
    """Writing one split again keeps the other splits in the manifest."""
    source = os.path.join(folder, "images")
    image_folder(os.path.join(source, "train"), per_class=2)
    image_folder(os.path.join(source, "test"), per_class=1, start=20)
    output = os.path.join(folder, "shards")
    _prepare(source, output)  # every split
    code, message = _prepare(source, output, "--split", "test")
    splits = sorted(json.load(open(os.path.join(output, "manifest.json")))["splits"])
    return code == 0 and splits == ["test", "train"], f"exit {code}, manifest splits {splits}"


def _empty_receipt_rerun(folder):
    """A receipt left empty (a full disk): the rerun writes that shard again."""
    source = image_folder(os.path.join(folder, "images"), per_class=3)
    output = os.path.join(folder, "shards")
    _prepare(source, output)
    open(os.path.join(output, "train-000001.tar.json"), "w").close()
    code, message = _prepare(source, output)
    values = shard_values(output) if code == 0 else []
    return code == 0 and close(values, range(6)), f"exit {code}: {message[-120:]}; values {values}"


def _receipt_of_other_range(folder):
    """The same settings on a source that grew: shards whose range differs are written again."""
    source = image_folder(os.path.join(folder, "images"), classes=("a",), per_class=3)
    output = os.path.join(folder, "shards")
    _prepare(source, output)
    image_folder(source, classes=("b",), per_class=3, start=3)
    code, _ = _prepare(source, output)
    values = shard_values(output)
    return code == 0 and close(values, range(6)), f"exit {code}, values {values}"


def _output_inside_input(folder):
    source = image_folder(os.path.join(folder, "images"))
    output = os.path.join(source, "shards")
    return refused(*_prepare(source, output), "is inside the source", output)


def _dead_worker(folder):
    """A writer process killed (as by the OOM killer): an error at once, not a hang; a rerun resumes."""
    source = image_folder(os.path.join(folder, "images"), per_class=6)
    output = os.path.join(folder, "shards")
    os.environ["MIM_HUB_DIE_AT"] = "shard:1"
    try:
        code, message = cli("prepare-shards", "--dataset", f"imagefolder:{source}", "--output", output, "--max-side", "0",
                            "--shard-size", "4", "--num-workers", "2")
    finally:
        del os.environ["MIM_HUB_DIE_AT"]
    ok, why = refused(code, message, "worker process died", os.path.join(output, "manifest.json"))
    code2, _ = _prepare(source, output)
    values = shard_values(output) if code2 == 0 else []
    return ok and close(values, range(12)), f"{why}; rerun: {len(values)} samples"


PROVENANCE = [
    ("another source into the folder", _other_source_into_folder),
    ("rerun with another --shard-size", _rerun_with_other("--shard-size", "5", _count_is_18)),
    ("rerun with another --max-side", _rerun_with_other("--max-side", "8", _sides_at_most_8)),
    ("one split written again", _one_split_regenerated),
    ("empty receipt (full disk)", _empty_receipt_rerun),
    ("source grew between runs", _receipt_of_other_range),
    ("--output inside the input", _output_inside_input),
]


# ---------------------------------------------------------------- 4: streamed resume checks its world

def stream_shards(folder: str, shards: int = 3, per_shard: int = 8) -> str:
    root = os.path.join(folder, "stream")
    os.makedirs(root, exist_ok=True)
    for s in range(shards):
        write_tar(os.path.join(root, f"train-{s:06d}.tar"), samples(per_shard, start=s * per_shard))
    return root


def _stopped_stream_run(folder, shards):
    """A streamed pre-training run stopped after its step-3 checkpoint (the checkpoint alone)."""
    import shutil

    model = tiny_mae(folder)
    argv = ["pretrain", "--model", model, "--dataset", f"webdataset:{shards}", "--streaming", "--shuffle-buffer", "4", "--batch-size", "4",
            "--max-steps", "6", "--save-every", "3", "--log-every", "1", "--num-workers", "0", "--lr", "1e-3"]
    full, stopped = os.path.join(folder, "full"), os.path.join(folder, "stopped")
    code, message = cli(*argv, "--output-dir", full)
    if code != 0:
        raise RuntimeError(message)
    os.makedirs(os.path.join(stopped, "checkpoints"))
    shutil.copytree(os.path.join(full, "checkpoints", "step_00000003"), os.path.join(stopped, "checkpoints", "step_00000003"))
    return argv + ["--output-dir", stopped, "--resume"], stopped


def _resume_after(change, phrase):
    def case(folder):
        shards = stream_shards(folder)
        argv, stopped = _stopped_stream_run(folder, shards)
        change(shards)
        return refused(*cli(*argv), phrase, os.path.join(stopped, "model.safetensors"))
    return case


def _add_shard(shards):
    write_tar(os.path.join(shards, "train-000003.tar"), samples(8, start=24))


def _grow_shard(shards):
    write_tar(os.path.join(shards, "train-000001.tar"), samples(9, start=8))


def _remove_shard(shards):
    os.remove(os.path.join(shards, "train-000002.tar"))


def _wrong_manifest_counts(folder):
    """A manifest whose counts are wrong: a resume that skips whole epochs by them is refused."""
    from mim_hub.data import DatasetError
    from mim_hub.data import open_stream
    from mim_hub.data.stream import ShardedStream

    shards = stream_shards(folder)
    with open(os.path.join(shards, "manifest.json"), "w") as handle:
        json.dump({"splits": {"train": {"shards": [f"train-{s:06d}.tar" for s in range(3)], "shard_samples": [8, 6, 8]}}}, handle)
    stream = ShardedStream(open_stream(f"webdataset:{shards}"), lambda image, rng, label: {"x": label}, seed=0, shuffle_buffer=4)
    stream.resume({"0": 30}, 7)  # past the first epoch (24 samples; the manifest says 22)
    return raises(lambda: next(iter(stream)), "manifest.json says 6 samples, the shard holds 8", DatasetError)


def _wrong_manifest_counts_read(folder):
    """Reading a shard whose manifest count is wrong is an error at the shard's end, not a skew."""
    from mim_hub.data import DatasetError
    from mim_hub.data import open_stream

    shards = stream_shards(folder)
    with open(os.path.join(shards, "manifest.json"), "w") as handle:
        json.dump({"splits": {"train": {"shards": [f"train-{s:06d}.tar" for s in range(3)], "shard_samples": [8, 9, 8]}}}, handle)
    source = open_stream(f"webdataset:{shards}")
    return raises(lambda: list(source.records(source.shards[1])), "manifest.json says 9 samples, the shard holds 8", DatasetError)


RESUME = [
    ("a shard added", _resume_after(_add_shard, "shards added: train-000003.tar")),
    ("a shard rewritten larger", _resume_after(_grow_shard, "shards changed: train-000001.tar")),
    ("a shard removed", _resume_after(_remove_shard, "shards removed: train-000002.tar")),
    ("wrong manifest counts, skipped by", _wrong_manifest_counts),
    ("wrong manifest counts, read", _wrong_manifest_counts_read),
]


# ---------------------------------------------------------------- 5: hangs

def without_hanging(function, fifo: str):
    """`function()` run in a thread; if it blocks on the FIFO, the FIFO's writer end is opened
    (so the test itself cannot hang) and the case fails."""
    import threading

    result = {}

    def run():
        try:
            result["value"] = function()
        except Exception as error:  # noqa: BLE001 - reported to the case
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(120)  # generous: the work itself takes well under a second
    if thread.is_alive():
        descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK) if os.path.exists(fifo) else None
        if descriptor is not None:
            os.close(descriptor)
        thread.join(10)
        return False, "blocked on the FIFO"
    if "error" in result:
        return False, f"{type(result['error']).__name__}: {str(result['error'])[:200]}"
    return True, result["value"]


def _fifo_in_image_folder(folder):
    """A FIFO named x.png among the images: an unreadable image, skipped and named, not a hang."""
    from mim_hub.data import load_images

    source = image_folder(os.path.join(folder, "images"), per_class=2)
    fifo = os.path.join(source, "a", "x.png")
    os.mkfifo(fifo)
    data = load_images(f"imagefolder:{source}")

    def read_all():
        with captured_log() as log:
            values = [red(data.image(i)) for i in range(len(data))]
        return values, log

    ok, value = without_hanging(read_all, fifo)
    if not ok:
        return ok, value
    values, log = value
    named = any("x.png is a FIFO" in m for m in log)
    return named and len(values) == len(data), f"{len(values)} items read; skipped and named: {named}"


def _fifo_in_path_column(folder):
    """A parquet path column naming a FIFO: an unreadable image, skipped and named."""
    import datasets

    from mim_hub.data import load_images

    fifo = os.path.join(folder, "pipe.png")
    os.mkfifo(fifo)
    good = os.path.join(folder, "good.png")
    picture(40).save(good)
    data = datasets.Dataset.from_dict({"image": [{"bytes": None, "path": fifo}, {"bytes": None, "path": good}], "label": [0, 1]})
    data.cast_column("image", datasets.Image()).to_parquet(os.path.join(folder, "train-0.parquet"))
    images = load_images(os.path.join(folder, "train-0.parquet"))

    def read_all():
        with captured_log() as log:
            return [red(images.image(i)) for i in range(len(images))], log

    ok, value = without_hanging(read_all, fifo)
    if not ok:
        return ok, value
    values, log = value
    named = any("pipe.png is a FIFO" in m for m in log)
    return named and values == [40, 40], f"values {values}; named: {named}"


def _fifo_shard(folder):
    from mim_hub.data import DatasetError, load_images

    root = stream_shards(folder, shards=1)
    fifo = os.path.join(root, "train-000001.tar")
    os.mkfifo(fifo)
    ok, value = without_hanging(lambda: raises(lambda: load_images(f"webdataset:{root}"), "train-000001.tar is a FIFO", DatasetError),
                                fifo)
    return value if ok else (ok, value)


def _fifo_table(folder):
    from mim_hub.data import DatasetError, load_images

    _write_splits(folder, "parquet", {"train": ([10], [0])})
    fifo = os.path.join(folder, "parquet", "train-1.parquet")
    os.mkfifo(fifo)
    ok, value = without_hanging(lambda: raises(lambda: load_images(os.path.join(folder, "parquet", "*.parquet")),
                                               "train-1.parquet is a FIFO", DatasetError), fifo)
    return value if ok else (ok, value)


def _fifo_to_reconstruct(folder):
    fifo = os.path.join(folder, "photo.png")
    os.mkfifo(fifo)
    model, output = tiny_mae(folder), os.path.join(folder, "out.png")
    ok, value = without_hanging(lambda: refused(*cli("reconstruct", "--model", model, "--image", fifo, "--output", output),
                                                "photo.png is a FIFO", output), fifo)
    return value if ok else (ok, value)


HANGS = [
    ("FIFO given to reconstruct --image", _fifo_to_reconstruct),
    ("FIFO named x.png in an image folder", _fifo_in_image_folder),
    ("FIFO named by a parquet path column", _fifo_in_path_column),
    ("FIFO named like a shard", _fifo_shard),
    ("FIFO named like a parquet file", _fifo_table),
    ("a prepare-shards writer killed", _dead_worker),
]


# ---------------------------------------------------------------- 7: malformed data, clear errors

def _shard_folder(folder, members, name="train-000000.tar"):
    root = os.path.join(folder, "wds")
    os.makedirs(root, exist_ok=True)
    write_tar(os.path.join(root, name), members)
    return root


def _load_error(spec_of, phrase, streaming=False):
    """Loading (and reading every item of) the data the maker writes is a DatasetError naming it."""
    def case(folder):
        from mim_hub.data import DatasetError, load_images
        from mim_hub.data import open_stream

        spec = spec_of(folder)

        def load():
            if streaming:
                source = open_stream(spec)
                return [r for shard in source.shards for r in source.records(shard)]
            data = load_images(spec)
            return [data.image(i) for i in range(len(data))]
        return raises(load, phrase, DatasetError)
    return case


def _gzip_tar(folder):
    import gzip

    root = os.path.join(folder, "wds")
    os.makedirs(root)
    plain = write_tar(os.path.join(folder, "plain.tar"), samples(2))
    with open(os.path.join(root, "train-000000.tar"), "wb") as handle:
        handle.write(gzip.compress(open(plain, "rb").read()))
    return f"webdataset:{root}"


def _garbage_tar(folder):
    root = os.path.join(folder, "wds")
    os.makedirs(root)
    with open(os.path.join(root, "train-000000.tar"), "wb") as handle:
        handle.write(np.random.default_rng(0).bytes(4096))
    return f"webdataset:{root}"


def _json_list_label(folder):
    return f"webdataset:{_shard_folder(folder, [('a.png', png(1)), ('a.json', b'[1, 2]')])}"


def _huge_cls(folder):
    return f"webdataset:{_shard_folder(folder, [('a.png', png(1)), ('a.cls', str(2 ** 70).encode())])}"


def _text_cls(folder):
    return f"webdataset:{_shard_folder(folder, [('a.png', png(1)), ('a.cls', b'cat')])}"


def _duplicate_keys(folder):
    return f"webdataset:{_shard_folder(folder, samples(2) + samples(1))}"


def _duplicate_member(folder):
    return f"webdataset:{_shard_folder(folder, [('a.png', png(1)), ('a.png', png(2)), ('a.cls', b'0')])}"


def _zero_row_parquet(folder):
    root = os.path.join(folder, "p")
    os.makedirs(root)
    hf_split([1], [0]).select([]).to_parquet(os.path.join(root, "train-0.parquet"))
    return root


def _zero_row_saved(folder):
    import datasets

    root = os.path.join(folder, "saved")
    datasets.DatasetDict({"train": hf_split([1], [0]).select([]).flatten_indices()}).save_to_disk(root)
    return root


def _receipts_by_glob(folder):
    """`webdataset:DIR/train-*` beside receipts: the receipts are not taken for shards."""
    from mim_hub.data import load_images

    shards = prepared_shards(folder)
    data = load_images(f"webdataset:{shards}/train-*")
    return len(data) == 6, f"{len(data)} samples from {sorted(set(data.shards))}"


def _brace_range_missing(folder):
    from mim_hub.data import DatasetError, load_images

    root = stream_shards(folder, shards=2)
    return raises(lambda: load_images(f"webdataset:{root}/train-{{000000..000003}}.tar"), "2 of the 4 shards the range names do not exist",
                  DatasetError)


def _gif_members(folder):
    """.gif members are images, as image folders read them."""
    from mim_hub.data import load_images

    buffer = io.BytesIO()
    picture(70).save(buffer, "GIF")
    root = _shard_folder(folder, [("a.gif", buffer.getvalue()), ("a.cls", b"1"), ("b.png", png(30)), ("b.cls", b"0")])
    data = load_images(f"webdataset:{root}")
    return len(data) == 2 and data.labels.tolist() == [1, 0], f"{len(data)} samples, labels {data.labels.tolist()}"


def _unreadable_class_folder(folder):
    """A class folder that cannot be listed is an error naming it, not a silent drop. (Tests run as
    root, whom permissions do not stop: the listing's PermissionError is what is simulated.)"""
    from mim_hub.data import DatasetError, load_images

    source = image_folder(os.path.join(folder, "images"))
    locked = os.path.join(source, "b")
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real(path)

    os.scandir = scandir
    try:
        return raises(lambda: load_images(f"imagefolder:{source}"), f"{locked}: cannot list this folder", DatasetError)
    finally:
        os.scandir = real


def _flat_folder_with_subfolder(folder):
    from mim_hub.data import DatasetError, load_images

    source = os.path.join(folder, "flat")
    os.makedirs(os.path.join(source, "stray"))
    for i in range(3):
        picture(i).save(os.path.join(source, f"{i}.png"))
    return raises(lambda: load_images(f"imagefolder:{source}"), "holds images (0.png, 1.png ...) beside subfolders (stray)", DatasetError)


def _streamed_garbage_via_cli(folder):
    """A garbage shard under --streaming: the CLI prints one line naming it (no worker traceback), exit 2."""
    spec = _garbage_tar(folder)
    model, output = tiny_mae(folder), os.path.join(folder, "out")
    code, message = cli("pretrain", "--model", model, "--output-dir", output, "--dataset", spec, "--streaming", "--max-steps", "2",
                        "--batch-size", "2", "--num-workers", "1")
    ok, why = refused(code, message, "train-000000.tar: not a tar file", os.path.join(output, "model.safetensors"))
    return ok and "Traceback" not in message, why


MALFORMED = [
    ("gzip file named .tar", _load_error(_gzip_tar, "a gzip-compressed file, not a plain tar")),
    ("garbage named .tar", _load_error(_garbage_tar, "train-000000.tar: not a tar file")),
    ("garbage named .tar, streamed", _load_error(_garbage_tar, "train-000000.tar: not a tar file", streaming=True)),
    ("garbage shard, streamed by the CLI", _streamed_garbage_via_cli),
    (".json label that is a list", _load_error(_json_list_label, "sample 'a': the .json label is list [1, 2]")),
    (".cls of 2**70", _load_error(_huge_cls, f"the .cls label {2 ** 70} is outside")),
    (".cls that is a word", _load_error(_text_cls, "the .cls label 'cat' is not an integer")),
    ("duplicate keys in a shard", _load_error(_duplicate_keys, "key 's0000' appears twice")),
    ("duplicate member of one key", _load_error(_duplicate_member, "two 'png' members for key 'a'")),
    ("0-row parquet", _load_error(_zero_row_parquet, "hold no rows")),
    ("0-row save_to_disk", _load_error(_zero_row_saved, "has no rows")),
    ("webdataset glob beside receipts", _receipts_by_glob),
    ("brace range naming missing shards", _brace_range_missing),
    (".gif members", _gif_members),
    ("unreadable class folder", _unreadable_class_folder),
    ("flat folder with a stray subfolder", _flat_folder_with_subfolder),
]


# ---------------------------------------------------------------- 8: images decoded as datasets decodes them

def _sixteen_bit_png(folder):
    """A 16-bit grey PNG at half range decodes to grey 128, not white (clipped at 255)."""
    from mim_hub.data import load_images

    root = os.path.join(folder, "images")
    os.makedirs(root)
    Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)).save(os.path.join(root, "grey.png"))
    image = load_images(f"imagefolder:{root}").image(0)
    value = np.asarray(image)
    return image.mode == "RGB" and int(value.max()) == int(value.min()) == 128, f"{image.mode}, values {int(value.min())}-{int(value.max())}"


def _exif_rotated(folder):
    """A JPEG stored 20 x 10 with EXIF orientation 6 (rotate 90 clockwise) is seen 10 x 20, its left half at the top."""
    from mim_hub.data import load_images

    root = os.path.join(folder, "images")
    os.makedirs(root)
    stored = Image.new("RGB", (20, 10), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 10, 10))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(os.path.join(root, "photo.jpg"), quality=95, exif=exif.tobytes())
    image = np.asarray(load_images(f"imagefolder:{root}").image(0))
    top_red = image[:5, :, 0].mean() > 200 and image[-5:, :, 2].mean() > 200
    return image.shape[:2] == (20, 10) and top_red, f"shape {image.shape[:2]}, left half on top: {top_red}"


def _with_budget(pixels, function):
    from mim_hub.data.decode import PIXEL_BUDGET_ENV

    previous = os.environ.get(PIXEL_BUDGET_ENV)
    os.environ[PIXEL_BUDGET_ENV] = str(pixels)
    try:
        return function()
    finally:
        if previous is None:
            del os.environ[PIXEL_BUDGET_ENV]
        else:
            os.environ[PIXEL_BUDGET_ENV] = previous


def _png_over_budget(folder):
    """A PNG over the pixel budget (under PIL's limit) is an unreadable image, named; its neighbour stands in."""
    from mim_hub.data import load_images

    root = os.path.join(folder, "images")
    os.makedirs(root)
    Image.new("RGB", (2000, 2000), (200, 0, 0)).save(os.path.join(root, "a_big.png"))
    picture(40).save(os.path.join(root, "b_small.png"))
    data = load_images(f"imagefolder:{root}")
    with captured_log() as log:
        value = _with_budget(500_000, lambda: red(data.image(0)))
    named = any("a_big.png" in m and "over the budget of 500000" in m for m in log)
    return named and value == 40, f"item 0 -> value {value}; named: {named}"


def _jpeg_over_budget(folder):
    """A JPEG over the budget is decoded at a reduced scale (1/4 here), never at full size."""
    from mim_hub.data import load_images

    root = os.path.join(folder, "images")
    os.makedirs(root)
    Image.new("RGB", (2000, 2000), (200, 0, 0)).save(os.path.join(root, "big.jpg"), quality=90)
    image = _with_budget(500_000, lambda: load_images(f"imagefolder:{root}").image(0))
    return image.size == (500, 500) and abs(red(image) - 200) <= 3, f"decoded at {image.size}"


def _budget_from_the_cli(folder):
    """--max-image-pixels reaches the decoders (and the worker processes, through the environment)."""
    from mim_hub.data.decode import PIXEL_BUDGET_ENV

    source = os.path.join(folder, "images", "a")
    os.makedirs(source)
    Image.new("RGB", (1000, 1000), (90, 0, 0)).save(os.path.join(source, "big.png"))
    picture(40).save(os.path.join(source, "small.png"))
    previous = os.environ.pop(PIXEL_BUDGET_ENV, None)
    try:
        code, message = cli("prepare-shards", "--dataset", f"imagefolder:{os.path.dirname(source)}", "--output",
                            os.path.join(folder, "shards"), "--max-image-pixels", "10000", "--num-workers", "0", "--max-side", "0")
    finally:
        os.environ.pop(PIXEL_BUDGET_ENV, None)
        if previous is not None:
            os.environ[PIXEL_BUDGET_ENV] = previous
    manifest = json.load(open(os.path.join(folder, "shards", "manifest.json"))) if code == 0 else {}
    skipped = manifest.get("splits", {}).get("train", {}).get("skipped")
    return code == 0 and skipped == 1, f"exit {code}, skipped {skipped}: {message[-100:]}"


def _transform_error_is_not_bad_data(folder):
    """An error in a transform on a healthy image is raised as it is (not "unreadable", not in bad_images.tsv)."""
    from mim_hub.data import load_images

    source = image_folder(os.path.join(folder, "images"))
    data = load_images(f"imagefolder:{source}")
    data.bad_image_log = os.path.join(folder, "bad_images.tsv")

    def transform(image):
        raise ValueError("a bug in a transform")

    ok, why = raises(lambda: data.with_image(0, transform), "a bug in a transform", ValueError)
    blamed = os.path.exists(data.bad_image_log) or data.skipped
    return ok and not blamed, why + (f"; healthy images blamed: {data.skipped}" if blamed else "")


def _decode_error_is_bad_data(folder):
    """A truncated JPEG that fails only when the transform decodes it is still a bad image."""
    from mim_hub.data import load_images

    root = os.path.join(folder, "images")
    os.makedirs(root)
    with open(os.path.join(root, "a_cut.jpg"), "wb") as handle:
        handle.write(jpeg(10, (64, 64))[:300])
    picture(40).save(os.path.join(root, "b.png"))
    data = load_images(f"imagefolder:{root}")
    value = data.with_image(0, lambda image: red(image))
    return value == (40, 1) and len(data.skipped) == 1, f"got {value}, skipped {data.skipped}"


def _streamed_transform_error(folder):
    """The same under --streaming: a transform's error on a healthy image is raised."""
    from mim_hub.data import open_stream
    from mim_hub.data.stream import ShardedStream

    root = stream_shards(folder, shards=1)

    def sample(image, rng, label):
        raise ValueError("a bug in a transform")

    stream = ShardedStream(open_stream(f"webdataset:{root}"), sample, seed=0, shuffle_buffer=2)
    ok, why = raises(lambda: next(iter(stream)), "a bug in a transform", ValueError)
    return ok and not stream.skipped, why


def _large_cells(folder):
    """Image cells are read straight from Arrow memory (map-style: no Python copy of the cell) and
    streamed parquet reads batches of bounded bytes (one row each here), each row's value made only
    when it is yielded; the pictures are still the right ones."""
    import pyarrow as pa

    from mim_hub.data import load_images, open_stream
    from mim_hub.data.sources import table as streaming  # the parquet stream's batch size

    root = _write_splits(folder, "parquet", {"train": ([10, 20, 30], [0, 1, 0])})
    data = load_images(root)
    opened = data._open(1)
    mapped = isinstance(opened.fp, pa.BufferReader) and red(data.image(1)) == 20
    previous, streaming.PARQUET_BATCH_BYTES = streaming.PARQUET_BATCH_BYTES, 1
    try:
        source = open_stream(root)
        values = [red(source.open(payload)) for shard in source.shards for _, payload, _ in source.records(shard)]
    finally:
        streaming.PARQUET_BATCH_BYTES = previous
    return mapped and values == [10, 20, 30], f"map-style from Arrow memory: {mapped}; streamed {values}"


DECODING = [
    ("large cells, map-style and streamed", _large_cells),
    ("16-bit PNG", _sixteen_bit_png),
    ("EXIF orientation", _exif_rotated),
    ("PNG over the pixel budget", _png_over_budget),
    ("JPEG over the pixel budget", _jpeg_over_budget),
    ("--max-image-pixels", _budget_from_the_cli),
    ("transform error on a healthy image", _transform_error_is_not_bad_data),
    ("decode error inside the transform", _decode_error_is_bad_data),
    ("transform error, streamed", _streamed_transform_error),
]


# ---------------------------------------------------------------- 9: bad_images.tsv, the same from every command

def _with_a_bad_image(root, name="a\tb\nc.jpg"):
    """An image folder of two classes with one truncated JPEG (a name with a tab and a newline)."""
    image_folder(root, per_class=4)
    with open(os.path.join(root, "a", name), "wb") as handle:
        handle.write(jpeg(10, (64, 64))[:300])
    return os.path.join(root, "a", name)


def _escaped_and_distinct(folder):
    """A name with a tab and a newline is one line, read back whole; met three times, it counts once."""
    from mim_hub.data import count_bad_images, load_images, read_bad_images

    bad = _with_a_bad_image(os.path.join(folder, "images"))
    data = load_images(f"imagefolder:{os.path.join(folder, 'images')}")
    data.bad_image_log = os.path.join(folder, "bad_images.tsv")
    index = [str(f) for f in data.files].index(bad)
    for _ in range(3):
        data.image(index)
    lines = open(data.bad_image_log).read().splitlines()
    entries = read_bad_images(data.bad_image_log)
    ok = len(lines) == 3 and {e[0] for e in entries} == {bad} and count_bad_images(data.bad_image_log) == 1
    return ok, f"{len(lines)} lines, names {sorted({e[0] for e in entries})!r}, counted {count_bad_images(data.bad_image_log)}"


def _every_command_writes_it(folder):
    """pretrain, finetune, eval and prepare-shards each write bad_images.tsv naming the bad image."""
    from mim_hub.data import read_bad_images

    source = os.path.join(folder, "images")
    bad = _with_a_bad_image(source, "broken.jpg")
    model = tiny_mae(folder)
    common = ["--dataset", f"imagefolder:{source}", "--num-workers", "0", "--batch-size", "4"]
    runs = {
        "pretrain": (["pretrain", "--model", model, "--output-dir", os.path.join(folder, "pre"), *common, "--max-steps", "3"],
                     os.path.join(folder, "pre")),
        "finetune": (["finetune", "--model", model, "--output-dir", os.path.join(folder, "ft"), *common, "--epochs", "1",
                      "--eval-split", "train"], os.path.join(folder, "ft")),
        "eval": (["eval", "--model", model, *common, "--eval-split", "train", "--protocol", "knn", "--k", "2",
                  "--output", os.path.join(folder, "ev", "results.json")], os.path.join(folder, "ev")),
        "prepare-shards": (["prepare-shards", "--output", os.path.join(folder, "wds"), "--dataset", f"imagefolder:{source}",
                            "--num-workers", "0"], os.path.join(folder, "wds")),
    }
    os.makedirs(os.path.join(folder, "ev"))
    missing = []
    for command, (argv, where) in runs.items():
        code, message = cli(*argv)
        names = {e[0] for e in read_bad_images(os.path.join(where, "bad_images.tsv"))}
        if code != 0 or names != {bad}:
            missing.append(f"{command}: exit {code}, names {sorted(names)} {message[-100:] if code else ''}")
    return not missing, "; ".join(missing) or "all four"


BAD_IMAGES = [
    ("names escaped, images counted once", _escaped_and_distinct),
    ("every command writes it", _every_command_writes_it),
]


CLASSES = [
    ("prepare-shards", PROVENANCE),
    ("values", VALUES),
    ("receipts", RECEIPTS),
    ("labels", LABELS),
    ("streamed resume", RESUME),
    ("hangs", HANGS),
    ("malformed data", MALFORMED),
    ("decoding", DECODING),
    ("bad_images.tsv", BAD_IMAGES),
]
