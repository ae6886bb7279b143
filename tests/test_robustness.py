"""Hostile and broken inputs: each is refused with one clear error naming the file and the
problem, no payload runs, and nothing is written."""

import os
import sys
import types
import warnings

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
    """Kills at points chosen by progress (crash_points.py), never by a clock: after a logged step
    and at each stage of writing a checkpoint, so the verdict is the same on any machine."""
    from kill_loop import kill_loop, kill_plan

    from mim_hub.training.crash_points import POINTS

    plan = kill_plan(5, 16, seed=1)
    assert {point for point, _ in plan} == set(POINTS)  # mid-training and every stage of a checkpoint
    survived, made, identical = kill_loop(str(tmp_path), kills=5, steps=16, seed=1)
    assert made == 5
    assert survived == made  # each kill landed where planned, every visible checkpoint complete
    assert identical


def test_a_run_pauses_only_at_the_point_asked(tmp_path, monkeypatch, capsys):
    import threading

    from mim_hub.training import crash_points

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
