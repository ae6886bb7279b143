"""A catalogue of hostile and broken checkpoint files, shared by tests/test_robustness.py and
benchmarks/robustness.py. Each maker writes one file into a folder and returns its path and the
phrase the refusal must contain."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile

import torch

MARKER = "/tmp/mim_hub_hostile_payload_ran"


class _SystemPayload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


class _EvalPayload:
    def __reduce__(self):
        return (eval, (f"open({MARKER!r}, 'w').write('x')",))


class _ExecInsideConfig:
    """A payload hidden inside what looks like a yacs config (an allow-listed prefix)."""

    def __reduce__(self):
        return (exec, (f"open({MARKER!r}, 'w').write('x')",))


def _tiny_state():
    from reference_mae import random_original_state

    return random_original_state(dim=32, depth=1, num_classes=3, seed=0)


def os_system_payload(folder):
    path = os.path.join(folder, "system.pth")
    torch.save({"model": _tiny_state(), "extra": _SystemPayload()}, path)
    return path, "not allow-listed"


def eval_payload(folder):
    path = os.path.join(folder, "eval.pth")
    torch.save({"model": _tiny_state(), "extra": _EvalPayload()}, path)
    return path, "not allow-listed"


def exec_beside_config_object(folder):
    from mim_hub.conversion.loading import _inert_class

    cfg = _inert_class("yacs.config", "CfgNode")()
    cfg["MODEL"] = {"TYPE": "vit"}
    path = os.path.join(folder, "exec_cfg.pth")
    torch.save({"model": _tiny_state(), "config": cfg, "payload": _ExecInsideConfig()}, path)
    return path, "not allow-listed"


def legacy_format_payload(folder):
    path = os.path.join(folder, "legacy.pth")
    torch.save({"model": _tiny_state(), "extra": _SystemPayload()}, path, _use_new_zipfile_serialization=False)
    return path, "not allow-listed"


def raw_pickle_payload(folder):
    path = os.path.join(folder, "raw.pkl")
    with open(path, "wb") as handle:
        pickle.dump({"model": {}, "x": _SystemPayload()}, handle)
    return path, "checkpoint"


def truncated_file(folder):
    source = os.path.join(folder, "full.pth")
    torch.save({"model": _tiny_state()}, source)
    data = open(source, "rb").read()
    os.remove(source)
    path = os.path.join(folder, "truncated.pth")
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    return path, "not a readable"


def corrupt_bytes(folder):
    source = os.path.join(folder, "full2.pth")
    torch.save({"model": _tiny_state()}, source)
    data = bytearray(open(source, "rb").read())
    os.remove(source)
    for i in range(200, min(len(data), 4000), 7):
        data[i] ^= 0xFF
    path = os.path.join(folder, "corrupt.pth")
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    return path, "checkpoint"


def empty_file(folder):
    path = os.path.join(folder, "empty.pth")
    open(path, "wb").close()
    return path, "not a readable"


def text_file(folder):
    path = os.path.join(folder, "notes.pth")
    with open(path, "w") as handle:
        handle.write("this is not a checkpoint\n")
    return path, "not a readable"


def zip_without_pickle(folder):
    path = os.path.join(folder, "zip.pth")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/readme.txt", "nothing here")
    return path, "not a readable"


def list_container(folder):
    path = os.path.join(folder, "list.pth")
    torch.save([torch.zeros(3)], path)
    return path, "expected a dict"


def bare_tensor(folder):
    path = os.path.join(folder, "tensor.pth")
    torch.save(torch.zeros(3), path)
    return path, "expected a dict"


def dict_without_tensors(folder):
    path = os.path.join(folder, "no_tensors.pth")
    torch.save({"model": {"a": 1}, "epoch": 3}, path)
    return path, "holds no tensors"


def missing_tensor(folder):
    state = _tiny_state()
    del state["blocks.0.attn.proj.weight"]
    path = os.path.join(folder, "missing.pth")
    torch.save({"model": state}, path)
    return path, "missing keys"


def unexpected_tensor(folder):
    state = _tiny_state()
    state["blocks.0.attn.rope.weight"] = torch.zeros(2)
    path = os.path.join(folder, "unexpected.pth")
    torch.save({"model": state}, path)
    return path, "unexpected keys"


def misshaped_tensor(folder):
    state = _tiny_state()
    state["blocks.0.mlp.fc2.bias"] = torch.zeros(31)
    path = os.path.join(folder, "misshaped.pth")
    torch.save({"model": state}, path)
    return path, "mis-shaped"


def safetensors_bad_header(folder):
    path = os.path.join(folder, "bad.safetensors")
    with open(path, "wb") as handle:
        header = b'{"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 999999]}}'
        handle.write(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    return path, "not a readable safetensors"


def safetensors_huge_header_length(folder):
    path = os.path.join(folder, "huge.safetensors")
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", 2**62) + b"{}")
    return path, "not a readable safetensors"


def missing_file(folder):
    return os.path.join(folder, "does_not_exist.pth"), "no such checkpoint file"


HOSTILE = [
    os_system_payload, eval_payload, exec_beside_config_object, legacy_format_payload, raw_pickle_payload,
    truncated_file, corrupt_bytes, empty_file, text_file, zip_without_pickle, list_container, bare_tensor,
    dict_without_tensors, missing_tensor, unexpected_tensor, misshaped_tensor, safetensors_bad_header,
    safetensors_huge_header_length, missing_file,
]

# Files hostile or broken as files (payloads, corruption, wrong containers), whatever the method:
# every method's converter must refuse them the same way. The others are MAE-layout state dicts.
FILE_LEVEL = [m for m in HOSTILE if m not in (missing_tensor, unexpected_tensor, misshaped_tensor)]
METHODS = ["mae", "simmim", "cae", "mr_mae", "color_mae", "crate_mae"]


def try_one(maker, folder, method: str = "mae") -> tuple[bool, str]:
    """Convert the hostile file with `mim_hub.conversion.convert` for `method`; True when it was
    refused with a `CheckpointError` that names the file and the problem, no payload ran and no
    output exists."""
    from mim_hub.conversion import CheckpointError, convert

    if os.path.exists(MARKER):
        os.remove(MARKER)
    path, phrase = maker(folder)
    output = os.path.join(folder, f"out_{method}_{maker.__name__}")
    try:
        convert(method, path, output, config={"num_attention_heads": 2} if method == "mae" else None)
    except CheckpointError as error:
        message = str(error)
        ok = os.path.basename(path) in message and phrase.lower() in message.lower()
        why = message[:160]
    except Exception as error:  # anything else is not a clean refusal
        ok, why = False, f"{type(error).__name__}: {str(error)[:160]}"
    else:
        ok, why = False, "accepted"
    if os.path.exists(MARKER):
        ok, why = False, "PAYLOAD RAN"
    if os.path.exists(output):
        ok, why = False, f"output written: {why}"
    return ok, why
