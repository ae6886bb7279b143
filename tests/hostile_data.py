"""Round three (issue 34): the data layer under hostile and careless input, as classes of cases
shared by tests/test_robustness_data.py and benchmarks/robustness.py (`CLASSES`). Each case takes
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
    from mim_hub.training.data import load_images
    from mim_hub.training.finetune import finetune

    images = load_images("digits")
    return raises(lambda: finetune(os.path.join(folder, "none"), images, output_dir=folder, batch_size=0), "--batch-size 0", ValueError)


VALUES += [("pretrain --lr 1e30 (diverges)", _diverging_run), ("finetune(batch_size=0)", _finetune_keywords)]


CLASSES = [
    ("values", VALUES),
]
