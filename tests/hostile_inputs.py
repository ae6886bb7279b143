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

from mim_hub.models.catalogue import METHODS as CATALOGUE_METHODS

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
    from mim_hub.utils.safe_pickle import inert_class

    cfg = inert_class("yacs.config", "CfgNode")()
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
    return path, "truncated"


def truncated_pickle(folder):
    """A raw pickle cut short: a truncated file, not a request to run code."""
    data = pickle.dumps({"model": {"w": [0.5] * 64}}, protocol=2)
    path = os.path.join(folder, "truncated.pkl")
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    return path, "truncated"


def truncated_legacy_file(folder):
    source = os.path.join(folder, "legacy_full.pth")
    torch.save({"model": _tiny_state()}, source, _use_new_zipfile_serialization=False)
    data = open(source, "rb").read()
    os.remove(source)
    path = os.path.join(folder, "truncated_legacy.pth")
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 3])
    return path, "truncated"


def _with_tensor(folder, name, key, tensor, phrase):
    state = _tiny_state()
    state[key] = tensor
    path = os.path.join(folder, name)
    torch.save({"model": state}, path)
    return path, phrase


# 22.5: weights of a dtype the model cannot hold
def integer_weights(folder):
    return _with_tensor(folder, "int.pth", "blocks.0.mlp.fc1.weight", torch.ones(128, 32, dtype=torch.int64), "wrong dtype")


def boolean_weights(folder):
    return _with_tensor(folder, "bool.pth", "blocks.0.norm1.weight", torch.ones(32, dtype=torch.bool), "wrong dtype")


def complex_weights(folder):
    return _with_tensor(folder, "complex.pth", "blocks.0.attn.qkv.weight", torch.ones(96, 32, dtype=torch.complex64), "complex")


# 22.6: tiny files whose tensors claim far more than they store
def stride_zero_tensors(folder):
    """Every tensor an expansion of one stored value: a few KB on disk, gigabytes if copied."""
    state = {k: v.reshape(-1)[:1].clone().expand(*v.shape) for k, v in _tiny_state().items()}
    state["pos_embed"] = torch.zeros(1).expand(1, 4097, 32)  # a 4096-patch grid: a 256-px image
    path = os.path.join(folder, "stride0.pth")
    torch.save({"model": state}, path)
    return path, "stride"


def stride_zero_trillion(folder):
    return _with_tensor(folder, "trillion.pth", "blocks.0.mlp.fc1.weight", torch.zeros(1).expand(1_000_000, 1_000_000), "stride")


def overlapping_strides(folder):
    base = torch.zeros(64)
    return _with_tensor(folder, "overlap.pth", "blocks.0.mlp.fc2.weight", base.as_strided((32, 128), (1, 0)), "overlapping")


def huge_window_table(folder):
    """A SimMIM ViT whose relative position table (one head, 640 KB) implies a 200x200-patch
    window: its index buffer would be (40001)^2 int64, 12.8 GB, built from a small file."""
    from reference_simmim import random_original_vit

    state = random_original_vit(img=32, patch=4, dim=32, depth=1, heads=2, mlp_hidden=64, pretrain=False)
    rows = (2 * 200 - 1) ** 2 + 3
    for key in list(state):
        if key.endswith("relative_position_bias_table"):
            state[key] = torch.zeros(rows, state[key].shape[1])
    path = os.path.join(folder, "huge_window.pth")
    torch.save({"model": state}, path)
    return path, "cannot have"


huge_window_table.method = "simmim"


# 22.11: tensors that hold no plain values
def meta_tensor(folder):
    return _with_tensor(folder, "meta.pth", "norm.weight", torch.zeros(32, device="meta"), "meta device")


def sparse_tensor(folder):
    return _with_tensor(folder, "sparse.pth", "norm.weight", torch.zeros(32).to_sparse(), "sparse")


def quantized_tensor(folder):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tensor = torch.quantize_per_tensor(torch.rand(32), 0.1, 0, torch.quint8)
    return _with_tensor(folder, "quantized.pth", "norm.weight", tensor, "quantized")


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

# Round two (issue 22): the classes each counted on their own in the summary. Each maker is tried
# with MAE's converter unless it names its method (`maker.method`).
ROUND_TWO = {
    "truncated files": [truncated_pickle, truncated_legacy_file],
    "odd dtypes": [integer_weights, boolean_weights, complex_weights],
    "claimed sizes": [stride_zero_tensors, stride_zero_trillion, overlapping_strides, huge_window_table],
    "meta/sparse/quantized": [meta_tensor, sparse_tensor, quantized_tensor],
}
HOSTILE = HOSTILE + [m for makers in ROUND_TWO.values() for m in makers]

# Files hostile or broken as files or as tensors (payloads, corruption, wrong containers, tensors
# without plain values), whatever the method: every method's converter must refuse them the same
# way. The others are MAE-layout state dicts (or name their method).
_LAYOUT_LEVEL = (missing_tensor, unexpected_tensor, misshaped_tensor, integer_weights, boolean_weights, huge_window_table)
FILE_LEVEL = [m for m in HOSTILE if m not in _LAYOUT_LEVEL]
METHODS = list(CATALOGUE_METHODS)


def try_one(maker, folder, method: str = "mae") -> tuple[bool, str]:
    """Convert the hostile file with `mim_hub.conversion.convert` for `method`; True when it was
    refused with a `CheckpointError` that names the file and the problem, no payload ran and no
    output exists."""
    from mim_hub.conversion import CheckpointError, convert

    if os.path.exists(MARKER):
        os.remove(MARKER)
    method = getattr(maker, "method", method)
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


# Round two, runs (issue 22 items 3, 9, 10, 15): each case takes a folder and returns (ok, why),
# ok when the run was refused clearly (exit 2, the phrase in its one-line error) or cleaned up.
def _tiny_pretraining_model(folder):
    from mim_hub import MAEConfig, MAEForPreTraining, MAEImageProcessor

    path = os.path.join(folder, "tiny")
    torch.manual_seed(0)
    MAEForPreTraining(MAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                decoder_num_attention_heads=2, decoder_intermediate_size=64)).save_pretrained(path)
    MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(path)
    return path


_RUN_ARGS = ["--dataset", "digits", "--batch-size", "16", "--log-every", "1", "--lr", "1e-3", "--save-every", "3", "--max-steps", "6"]


def _pretrain(model, output, *extra):
    """(exit code, stderr) of `mim-hub pretrain` run in this process."""
    import contextlib

    from mim_hub.cli import main

    stream = io.StringIO()
    with contextlib.redirect_stderr(stream):
        code = main(["pretrain", "--model", model, "--output-dir", output, *_RUN_ARGS, *extra])
    errors = [line for line in stream.getvalue().replace("\r", "\n").splitlines() if "error:" in line]
    return code, errors[-1] if errors else ""


def _stopped_run(folder):
    """A run folder holding only the step-3 checkpoint of a 6-step run (as if stopped there)."""
    import shutil

    model = _tiny_pretraining_model(folder)
    full = os.path.join(folder, "full")
    code, why = _pretrain(model, full)
    if code != 0:
        raise RuntimeError(why)
    stopped = os.path.join(folder, "stopped")
    os.makedirs(os.path.join(stopped, "checkpoints"))
    shutil.copytree(os.path.join(full, "checkpoints", "step_00000003"), os.path.join(stopped, "checkpoints", "step_00000003"))
    return model, stopped


def _refused(code, why, phrase, output):
    ok = code == 2 and phrase in why and not os.path.exists(os.path.join(output, "model.safetensors"))
    return ok, why[-160:] or f"exit {code}"


def _resume_case(extra=(), tamper=None, phrase=""):
    def case(folder):
        model, output = _stopped_run(folder)
        if tamper is not None:
            path = os.path.join(output, "checkpoints", "step_00000003", "state.json")
            state = __import__("json").load(open(path))
            with open(path, "w") as handle:
                handle.write(tamper(state))
        args = list(extra)
        return _refused(*_pretrain(model, output, "--resume", *args), phrase, output)
    return case


def _json(change):
    import json

    return lambda state: json.dumps(change(state))


def _locked_folder(folder):
    import subprocess
    import sys

    model = _tiny_pretraining_model(folder)
    output = os.path.join(folder, "shared")
    code = ("import sys; from mim_hub.utils.atomic import OutputLock; lock = OutputLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); sys.stdin.read(); lock.release()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", code, output], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        if holder.stdout.readline().strip() != "held":
            return False, "the lock holder did not start"
        return _refused(*_pretrain(model, output), f"in use by another run (process {holder.pid}", output)
    finally:
        holder.stdin.close()
        holder.wait()


def _failed_save(folder):
    import errno

    from accelerate import Accelerator

    model = _tiny_pretraining_model(folder)
    output = os.path.join(folder, "full")
    original = Accelerator.save_state

    def save_state(self, target, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    Accelerator.save_state = save_state
    try:
        ok, why = _refused(*_pretrain(model, output), "checkpoint at step 3 could not be written: No space left on device", output)
    finally:
        Accelerator.save_state = original
    left = [n for n in os.listdir(os.path.join(output, "checkpoints"))]
    return (ok and not left), why if not left else f"left behind: {left}"


def _killed_save_debris(folder):
    model, output = _stopped_run(folder)
    for debris in (os.path.join(output, ".tmp-.tmp-final-abc"), os.path.join(output, "checkpoints", ".tmp-step_00000006")):
        os.makedirs(debris)
    code, why = _pretrain(model, output, "--resume")
    left = [name for root, dirs, files in os.walk(output) for name in dirs + files if name.startswith(".tmp-")]
    return code == 0 and not left, f"exit {code}, left {left}" if left or code else "removed on start"


def _folder_modes(folder):
    import stat

    from mim_hub.conversion import convert

    path = os.path.join(folder, "c.pth")
    torch.save({"model": _tiny_state()}, path)
    previous = os.umask(0o022)
    try:
        output = os.path.join(folder, "out")
        convert("mae", path, output, config={"num_attention_heads": 2})
    finally:
        os.umask(previous)
    modes = {name: oct(stat.S_IMODE(os.stat(os.path.join(output, name)).st_mode)) for name in os.listdir(output)}
    ok = stat.S_IMODE(os.stat(output).st_mode) == 0o755 and set(modes.values()) == {"0o644"}
    return ok, f"folder {oct(stat.S_IMODE(os.stat(output).st_mode))}, files {sorted(set(modes.values()))}"


RUN_CLASSES = [
    ("resume", [
        ("other batch size", _resume_case(["--batch-size", "8"], phrase="batch_size: 16 -> 8")),
        ("other lr", _resume_case(["--lr", "2e-3"], phrase="lr: 0.001 -> 0.002")),
        ("step 999", _resume_case(tamper=_json(lambda s: {**s, "step": 999}), phrase="this run has 6 steps")),
        ("step -6", _resume_case(tamper=_json(lambda s: {**s, "step": -6}), phrase="step -6")),
        ("string step", _resume_case(tamper=_json(lambda s: {**s, "step": "3"}), phrase="not an integer")),
        ("missing key", _resume_case(tamper=_json(lambda s: {"step": 3}), phrase="has no 'epoch'")),
    ]),
    ("shared output", [("lock held by another process", _locked_folder)]),
    ("debris", [("disk full while saving", _failed_save), ("killed saves", _killed_save_debris)]),
    ("modes", [("converted folder under umask 022", _folder_modes)]),
]
