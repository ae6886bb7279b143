"""Hostile and broken inputs: each is refused with one clear error naming the file and the
problem, no payload runs, and nothing is written."""

import os
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from hostile_inputs import FILE_LEVEL, HOSTILE, MARKER, METHODS, try_one
from mim_hub.conversion import convert_checkpoint


@pytest.mark.parametrize("maker", HOSTILE, ids=lambda m: m.__name__)
def test_hostile_checkpoint_is_refused_cleanly(maker, tmp_path):
    ok, why = try_one(maker, str(tmp_path))
    assert ok, why
    assert not os.path.exists(MARKER)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "mae"])
def test_every_converter_refuses_hostile_files_cleanly(method, tmp_path):
    for maker in FILE_LEVEL:
        folder = tmp_path / maker.__name__
        folder.mkdir()
        ok, why = try_one(maker, str(folder), method)
        assert ok, f"{method} / {maker.__name__}: {why}"
        assert not os.path.exists(MARKER)


def test_nan_weights_are_loaded_with_a_warning(tmp_path):
    from reference_mae import random_original_state

    state = random_original_state(dim=32, depth=1, num_classes=3, seed=0)
    state["head.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save({"model": state}, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert_checkpoint("mae", str(path), {"num_attention_heads": 2})
    assert any("NaN or inf" in str(w.message) and "head.weight" in str(w.message) for w in caught)


def _fake_module(name, **classes):
    module = types.ModuleType(name)
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__ = name, cls_name
        setattr(module, cls_name, cls)
    return module


class _Ran(Exception):
    pass


@pytest.mark.parametrize("protocol", [2, 4])
def test_training_checkpoint_with_config_objects_is_read_without_running_them(tmp_path, monkeypatch, protocol):
    """yacs/mmengine objects, pickled as those libraries pickle them, are read as inert data:
    their classes are never imported and none of their code runs."""
    from mim_hub.conversion.loading import checkpoint_args, load_checkpoint

    from reference_mae import random_original_state

    class CfgNode(dict):
        def __setstate__(self, state):
            raise _Ran("yacs code ran")

    class MessageHub:
        def __init__(self):
            self.log_scalars = {"loss": [0.5]}

        def __setstate__(self, state):
            raise _Ran("mmengine code ran")

    yacs = _fake_module("yacs.config", CfgNode=CfgNode)
    mmengine = _fake_module("mmengine.logging.message_hub", MessageHub=MessageHub)
    fakes = {"yacs": types.ModuleType("yacs"), "yacs.config": yacs, "mmengine": types.ModuleType("mmengine"),
             "mmengine.logging": types.ModuleType("mmengine.logging"), "mmengine.logging.message_hub": mmengine}
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    cfg = CfgNode(MODEL={"TYPE": "vit"}, DATA={"IMG_SIZE": 32})
    path = tmp_path / "train.pth"
    torch.save({"model": random_original_state(dim=32, depth=1), "config": cfg, "message_hub": MessageHub()}, path, pickle_protocol=protocol)
    for name in fakes:
        monkeypatch.delitem(sys.modules, name)
    checkpoint = load_checkpoint(str(path))
    assert "yacs.config" not in sys.modules and "mmengine.logging.message_hub" not in sys.modules
    assert checkpoint_args(checkpoint)["DATA"]["IMG_SIZE"] == 32
    assert "blocks.0.attn.qkv.weight" in checkpoint["model"]


@pytest.mark.slow
def test_training_survives_repeated_sigkill(tmp_path):
    """Kills at points chosen by progress (test_hooks.py), never by a clock: after a logged step
    and at each stage of writing a checkpoint, so the verdict is the same on any machine."""
    from kill_loop import kill_loop, kill_plan

    from mim_hub.utils.test_hooks import POINTS

    plan = kill_plan(5, 16, seed=1)
    assert {point for point, _ in plan} == set(POINTS)  # mid-training and every stage of a checkpoint
    survived, made, identical = kill_loop(str(tmp_path), kills=5, steps=16, seed=1)
    assert made == 5
    assert survived == made  # each kill landed where planned, every visible checkpoint complete
    assert identical


def test_a_run_pauses_only_at_the_point_asked(tmp_path, monkeypatch, capsys):
    import threading

    from mim_hub.utils import test_hooks as crash_points

    waited = []
    monkeypatch.setattr(threading.Event, "wait", lambda self, timeout=None: waited.append(True))
    monkeypatch.delenv(crash_points.ENV, raising=False)
    crash_points.pause_if_asked("step", 3)
    monkeypatch.setenv(crash_points.ENV, "checkpoint-written:4, step:3")
    crash_points.pause_if_asked("step", 4)
    crash_points.pause_if_asked("checkpoint-begin", 4)
    assert waited == [] and capsys.readouterr().err == ""
    crash_points.pause_if_asked("step", 3)
    assert waited == [True] and capsys.readouterr().err.strip() == "MIM_HUB_PAUSED step:3"


def test_save_pretrained_is_written_aside_then_renamed(tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    from mim_hub import MAEConfig, MAEModel

    model = MAEModel(MAEConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    target = tmp_path / "model"
    model.save_pretrained(target)
    before = (target / "model.safetensors").read_bytes()
    original = PreTrainedModel.save_pretrained

    def crash(self, folder, *args, **kwargs):
        original(self, folder, *args, **kwargs)
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", crash)
    with torch.no_grad():
        model.embeddings.cls_token.add_(1)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(target)
    assert (target / "model.safetensors").read_bytes() == before  # the old model is intact
    assert sorted(os.listdir(tmp_path)) == ["model"]  # and no temporary folder is left
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def _mmengine_modules(monkeypatch):
    """Fake mmengine classes with mmengine's module paths (pickled as the Runner pickles them)."""

    class HistoryBuffer:
        def __init__(self, values):
            self._log_history = np.asarray(values, dtype=np.float64)
            self._count_history = np.ones(len(values), dtype=np.int64)
            self.max_length = 1000

        def __setstate__(self, state):
            raise _Ran("mmengine code ran")

    class MessageHub:
        def __init__(self):
            self.log_scalars = {"train/loss": HistoryBuffer([0.9, 0.7, 0.5]), "train/lr": HistoryBuffer([1.5e-4])}
            self.runtime_info = {"epoch": np.int64(400), "iter": 500400, "max_lr": np.float32(1.5e-4), "ok": np.bool_(True)}

        def __setstate__(self, state):
            raise _Ran("mmengine code ran")

    names = {"mmengine": None, "mmengine.logging": None}
    modules = {name: types.ModuleType(name) for name in names}
    modules["mmengine.logging.history_buffer"] = _fake_module("mmengine.logging.history_buffer", HistoryBuffer=HistoryBuffer)
    modules["mmengine.logging.message_hub"] = _fake_module("mmengine.logging.message_hub", MessageHub=MessageHub)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return modules, MessageHub


def _color_mae_state():
    from reference_mae import random_original_state

    from mim_hub.conversion.color_mae import mmpretrain_to_mae_key

    mae = random_original_state(dim=32, depth=1, dec_dim=32, dec_depth=1, seed=0)
    state = {}
    for key, value in mae.items():  # mmpretrain's name for each of MAE's keys
        state[next(guess for guess in _mmpretrain_names(key) if mmpretrain_to_mae_key(guess) == key)] = value
    return state, mae


def _mmpretrain_names(key):
    import re

    block = lambda rest: rest.replace("norm1.", "ln1.").replace("norm2.", "ln2.").replace("mlp.fc1.", "ffn.layers.0.0.").replace("mlp.fc2.", "ffn.layers.1.")  # noqa: E731
    match = re.match(r"blocks\.(\d+)\.(.*)", key)
    if match:
        yield f"backbone.layers.{match.group(1)}.{block(match.group(2))}"
    match = re.match(r"decoder_blocks\.(\d+)\.(.*)", key)
    if match:
        yield f"neck.decoder_blocks.{match.group(1)}.{block(match.group(2))}"
    if key.startswith("patch_embed.proj."):
        yield "backbone.patch_embed.projection." + key.split(".")[-1]
    if key.startswith("norm."):
        yield "backbone.ln1." + key[5:]
    if key.startswith("fc_norm."):
        yield "backbone.ln2." + key[8:]
    if key.startswith("decoder_norm."):
        yield "neck.ln1." + key[len("decoder_norm."):]
    yield "backbone." + key
    yield "neck." + key


@pytest.mark.parametrize("protocol", [2, 4])
def test_mmengine_runner_checkpoint_with_numpy_state_is_read_as_data(tmp_path, monkeypatch, protocol):
    """An `epoch_N.pth` as mmengine's Runner writes it (meta, state_dict, message_hub with numpy
    HistoryBuffers, param_schedulers): numpy arrays and scalars come back as equal numpy data,
    no mmengine code runs, and ColorMAE's converter converts it."""
    from mim_hub.conversion import convert
    from mim_hub.conversion.loading import load_checkpoint

    modules, MessageHub = _mmengine_modules(monkeypatch)
    state, mae = _color_mae_state()
    checkpoint = {
        "meta": {"epoch": 400, "iter": 500400, "mmengine_version": "0.10.3", "seed": np.int64(0), "cfg": "model = dict(...)"},
        "state_dict": state,
        "message_hub": MessageHub(),
        "param_schedulers": [{"begin": 0, "end": 40, "last_step": 40, "base_values": [np.float64(1.5e-4)], "_last_value": [0.0]}],
    }
    path = tmp_path / "epoch_400.pth"
    torch.save(checkpoint, path, pickle_protocol=protocol)
    for name in modules:
        monkeypatch.delitem(sys.modules, name)
    loaded = load_checkpoint(str(path))
    assert not any(name.startswith("mmengine") for name in sys.modules)
    hub = loaded["message_hub"]
    history = hub["log_scalars"]["train/loss"]["_log_history"]
    assert isinstance(history, np.ndarray) and history.dtype == np.float64 and np.array_equal(history, [0.9, 0.7, 0.5])
    assert np.array_equal(hub["log_scalars"]["train/loss"]["_count_history"], [1, 1, 1])
    assert hub["runtime_info"]["epoch"] == 400 and isinstance(hub["runtime_info"]["epoch"], np.int64)
    assert hub["runtime_info"]["max_lr"] == np.float32(1.5e-4) and bool(hub["runtime_info"]["ok"])
    assert loaded["param_schedulers"][0]["base_values"][0] == 1.5e-4
    model = convert("color_mae", str(path), str(tmp_path / "out"))
    weights = [v for k, v in model.state_dict().items() if k.endswith("projection.weight") and v.dim() == 4]
    assert len(weights) == 1 and torch.equal(weights[0], mae["patch_embed.proj.weight"])


@pytest.mark.parametrize("protocol", [2, 4])
def test_mmengine_checkpoint_with_callables_named_by_reference_is_read_as_inert_data(tmp_path, monkeypatch, protocol):
    """mmengine's `HistoryBuffer` keeps its statistics methods (`min`, `max`, `mean`, `current`):
    Python's pickle writes a bound method, and below protocol 4 a class's function, as a call of
    `builtins.getattr`; the Runner's file also holds optimizer and scheduler states, numpy and
    Python RNG states and a logger (`logging.getLogger(name)`). All of it is read as inert data:
    the named callables come back as `InertCall`s recording the call, never made; no mmengine
    code runs; the weights convert."""
    import logging
    import random

    from mim_hub.conversion import convert
    from mim_hub.conversion.loading import load_checkpoint
    from mim_hub.utils.safe_pickle import InertCall

    calls = []

    class HistoryBuffer:
        def __init__(self, values):
            self._log_history = np.asarray(values, dtype=np.float64)
            self._count_history = np.ones(len(values), dtype=np.int64)
            self.max_length = 1000
            # as mmengine: the statistics by name (bound methods and the class's functions)
            self._statistics_methods = {"min": self.min, "max": self.max, "mean": HistoryBuffer.mean, "current": HistoryBuffer.current}

        def min(self):
            calls.append("min")

        def max(self):
            calls.append("max")

        def mean(self):
            calls.append("mean")

        def current(self):
            calls.append("current")

        def __setstate__(self, state):
            raise _Ran("mmengine code ran")

    for method in ("min", "max", "mean", "current"):  # (named as mmengine's own are)
        function = getattr(HistoryBuffer, method)
        function.__module__, function.__qualname__ = "mmengine.logging.history_buffer", f"HistoryBuffer.{method}"

    class MessageHub:
        def __init__(self):
            self.log_scalars = {"train/loss": HistoryBuffer([0.9, 0.7]), "train/lr": HistoryBuffer([1.5e-4])}
            self.runtime_info = {"epoch": np.int64(400), "iter": 500400}

        def __setstate__(self, state):
            raise _Ran("mmengine code ran")

    modules = {name: types.ModuleType(name) for name in ("mmengine", "mmengine.logging")}
    modules["mmengine.logging.history_buffer"] = _fake_module("mmengine.logging.history_buffer", HistoryBuffer=HistoryBuffer)
    modules["mmengine.logging.message_hub"] = _fake_module("mmengine.logging.message_hub", MessageHub=MessageHub)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    state, mae = _color_mae_state()
    weights = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(weights.parameters(), lr=1.5e-4)
    weights(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    np.random.seed(3)
    random.seed(3)
    checkpoint = {
        "meta": {"epoch": 400, "iter": 500400, "mmengine_version": "0.10.4", "seed": 0, "cfg": "model = dict(...)",
                 "np_random_state": np.random.get_state(), "random_state": random.getstate()},
        "state_dict": state,
        "message_hub": MessageHub(),
        "optimizer": optimizer.state_dict(),
        "param_schedulers": [scheduler.state_dict()],
        "logger": logging.getLogger("mmengine"),
    }
    path = tmp_path / "epoch_400.pth"
    torch.save(checkpoint, path, pickle_protocol=protocol)
    for name in modules:
        monkeypatch.delitem(sys.modules, name)
    with open(path, "rb") as handle:  # the file names builtins.getattr, as the real one does
        assert b"getattr" in handle.read() or protocol == 4
    loaded = load_checkpoint(str(path))
    assert not any(name.startswith("mmengine") for name in sys.modules) and not calls
    buffer = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert np.array_equal(buffer["_log_history"], [0.9, 0.7])
    methods = buffer["_statistics_methods"]
    assert set(methods) == {"min", "max", "mean", "current"}
    bound = methods["min"]
    assert isinstance(bound, InertCall) and bound._qualified_name == "builtins.getattr" and bound._args[1] == "min"
    assert bound._args[0] is buffer  # (the buffer itself, as inert data)
    assert not isinstance(methods["mean"], type(HistoryBuffer.mean))  # a stand-in, whatever the protocol wrote
    assert isinstance(bound(), InertCall) and not calls  # calling a stand-in runs nothing either
    assert loaded["logger"]._qualified_name == "logging.getLogger" and loaded["logger"]._args == ("mmengine",)
    assert loaded["optimizer"]["state"][0]["exp_avg"].shape == (4, 4) and loaded["optimizer"]["param_groups"][0]["lr"] == 1.5e-4
    assert loaded["param_schedulers"][0]["T_max"] == 10
    kind, keys, position = loaded["meta"]["np_random_state"][:3]
    assert kind == "MT19937" and np.array_equal(keys, np.random.RandomState(3).get_state()[1]) and position == 624
    assert loaded["meta"]["random_state"] == random.Random(3).getstate()
    model = convert("color_mae", str(path), str(tmp_path / "out"))
    converted = [v for k, v in model.state_dict().items() if k.endswith("projection.weight") and v.dim() == 4]
    assert len(converted) == 1 and torch.equal(converted[0], mae["patch_embed.proj.weight"])


def test_a_callable_named_by_reference_is_never_called(tmp_path):
    """`builtins.getattr` (and `functools.partial`, `operator`'s getters, `logging.getLogger`) is
    read as a stand-in: the call the file asks for is recorded, not made, so what it would reach
    (here a real class's method, then a call of it) never runs; globals outside the lists stay refused."""
    import collections
    import functools
    import operator

    from mim_hub.conversion.loading import CheckpointError, load_checkpoint
    from mim_hub.utils.safe_pickle import InertCall

    class Reach:  # getattr(OrderedDict, "fromkeys")
        def __reduce__(self):
            return (getattr, (collections.OrderedDict, "fromkeys"))

    class CallIt:  # OrderedDict.fromkeys("abc"): a bound method (pickled as getattr(OrderedDict, "fromkeys")), called
        def __reduce__(self):
            return (collections.OrderedDict.fromkeys, ("abc",))

    path = tmp_path / "crafted.pth"
    torch.save({"model": {"w": torch.ones(2)}, "reach": Reach(), "call": CallIt(), "getter": operator.itemgetter("a")}, path,
               pickle_protocol=2)
    loaded = load_checkpoint(str(path))
    assert isinstance(loaded["reach"], InertCall) and loaded["reach"]._args[1] == "fromkeys"
    assert isinstance(loaded["call"], InertCall) and loaded["call"]._args == ("abc",)
    assert isinstance(loaded["getter"], InertCall) and loaded["getter"]._qualified_name == "operator.itemgetter"
    assert torch.equal(loaded["model"]["w"], torch.ones(2))
    # a partial of a builtin names that builtin as a global of its own: refused by name
    refused = tmp_path / "partial.pth"
    torch.save({"model": {"w": torch.ones(2)}, "f": functools.partial(max, 1)}, refused, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="builtins.max"):
        load_checkpoint(str(refused))


def _numpy_pickle(tmp_path, name, payload, protocol=2):
    path = tmp_path / name
    torch.save({"model": {"w": torch.ones(2)}, "message_hub": payload}, path, pickle_protocol=protocol)
    return path


@pytest.mark.parametrize("case", ["object_array", "object_scalar", "structured_dtype", "reconstruct_other_class", "short_bytes", "unicode_dtype"])
def test_numpy_state_that_is_not_plain_numbers_is_refused(tmp_path, case):
    """numpy data is rebuilt only for plain numeric dtypes from exactly the right bytes: an object
    array (which would unpickle whatever it holds), a structured dtype, a `_reconstruct` of another
    class or bytes of the wrong length are refused by name."""
    from mim_hub.conversion.loading import CheckpointError, load_checkpoint

    if case == "object_array":
        payload = np.array([{"a": 1}, None], dtype=object)
    elif case == "object_scalar":
        payload = {"x": np.array([1], dtype=object)[0:1]}
    elif case == "structured_dtype":
        payload = np.zeros(2, dtype=[("a", "<f4"), ("b", "<i8")])
    elif case == "unicode_dtype":
        payload = np.array(["abc"])
    else:
        reconstruct = np.arange(3.0).__reduce__()[0]  # numpy's own _reconstruct, under numpy's module name

        class Crafted:  # numpy's pickle protocol with one thing changed
            def __reduce__(self):
                if case == "reconstruct_other_class":
                    return (reconstruct, (np.matrix, (0,), b"b"), (1, (3,), np.dtype("f8"), False, bytes(24)))
                return (reconstruct, (np.ndarray, (0,), b"b"), (1, (3,), np.dtype("f8"), False, bytes(16)))  # 16 bytes for 24

        payload = Crafted()
    path = _numpy_pickle(tmp_path, f"{case}.pth", payload)
    with pytest.raises(CheckpointError, match="refusing to load: (numpy|global .numpy)"):
        load_checkpoint(str(path))
