"""Runs that collide, resume from something else, or leave debris (issue 22 items 3, 9, 10, 15):
the output folder is locked, a resume is checked against the run that wrote the checkpoint,
temporary folders are cleaned, a failed checkpoint write is reported with the one still intact,
and written folders get the usual modes."""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys

import pytest
import torch

from mim_hub.cli import main as cli

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64)
ARGS = ["--dataset", "digits", "--batch-size", "16", "--log-every", "1", "--lr", "1e-3", "--save-every", "3"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from mim_hub import MAEConfig, MAEForPreTraining, MAEImageProcessor

    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    MAEForPreTraining(MAEConfig(**TINY)).save_pretrained(folder)
    MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(folder)
    return str(folder)


def pretrain(model, output, *extra, steps=6):
    return cli(["pretrain", "--model", model, "--output-dir", str(output), "--max-steps", str(steps), *ARGS, *extra])


@pytest.fixture(scope="module")
def checkpointed(tiny_model, tmp_path_factory):
    """A run's folder holding only its step-3 checkpoint (as if it had been stopped there)."""
    run = tmp_path_factory.mktemp("run")
    assert pretrain(tiny_model, run, steps=6) == 0
    only = tmp_path_factory.mktemp("stopped")
    shutil.copytree(run / "checkpoints", only / "checkpoints")
    shutil.rmtree(only / "checkpoints" / "step_00000006", ignore_errors=True)
    assert sorted(os.listdir(only / "checkpoints")) == ["step_00000003"]
    return only


def _copy(folder, tmp_path):
    target = tmp_path / "out"
    shutil.copytree(folder, target)
    return target


@pytest.mark.parametrize("change, named", [(["--batch-size", "8"], "batch_size: 16 -> 8"), (["--lr", "2e-3"], "lr: 0.001 -> 0.002"),
                                           (["--seed", "3"], "seed: 0 -> 3"), (["--max-steps", "9"], "total_steps: 6 -> 9"),
                                           (["--mask-ratio", "0.5"], "config_hash")])
def test_resume_refuses_a_checkpoint_of_another_run(tiny_model, checkpointed, tmp_path, capsys, change, named):
    out = _copy(checkpointed, tmp_path)
    args = ["pretrain", "--model", tiny_model, "--output-dir", str(out), "--max-steps", "6", *ARGS, "--resume"]
    for i in range(0, len(change), 2):  # replace the value where the flag is already given
        if change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += change[i:i + 2]
    assert cli(args) == 2
    error = capsys.readouterr().err
    assert "written by a different run" in error and named in error and "--resume-with-changes" in error
    assert not (out / "model.safetensors").exists() and not (out / "log.jsonl").exists()


@pytest.mark.slow
def test_resume_with_changes_follows_the_new_arguments(tiny_model, checkpointed, tmp_path, capsys):
    out = _copy(checkpointed, tmp_path)
    assert pretrain(tiny_model, out, "--resume", "--resume-with-changes", "--lr", "2e-3", steps=8) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [4, 5, 6, 7, 8]
    from mim_hub.training.optim import cosine_with_warmup

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    schedule = cosine_with_warmup(optimizer, 0, 8, 0.0)
    expected = []
    for _ in range(8):
        optimizer.step()
        schedule.step()
        expected.append(schedule.get_last_lr()[0])
    assert [r["lr"] for r in log] == pytest.approx(expected[3:], rel=1e-6)  # the new lr and length, from step 4 on


@pytest.mark.parametrize("tamper, phrase", [
    (lambda s: {**s, "step": 999}, "this run has 6 steps"),
    (lambda s: {**s, "step": -6}, "step -6"),
    (lambda s: {**s, "step": "3"}, "'step' is '3', not an integer"),
    (lambda s: {k: v for k, v in s.items() if k != "epoch"}, "has no 'epoch'"),
    (lambda s: [s], "holds a list"),
    (lambda s: {**s, "batch_in_epoch": 1}, "counters were edited"),
    (lambda s: {**s, "epoch": True}, "'epoch' is True"),
    (None, "not readable JSON"),
])
@pytest.mark.slow
def test_resume_refuses_a_tampered_state_json(tiny_model, checkpointed, tmp_path, capsys, tamper, phrase):
    out = _copy(checkpointed, tmp_path)
    path = out / "checkpoints" / "step_00000003" / "state.json"
    state = json.loads(path.read_text())
    path.write_text("{not json" if tamper is None else json.dumps(tamper(state)))
    assert pretrain(tiny_model, out, "--resume") == 2
    error = capsys.readouterr().err
    assert phrase in error, error
    assert not (out / "model.safetensors").exists()


def _hold_lock(folder):
    """A second process that takes the output folder's lock and holds it until its stdin closes."""
    code = ("import sys; from mim_hub.utils.atomic import OutputLock; lock = OutputLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); sys.stdin.read(); lock.release()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"  # deterministic: the lock is held from here on
    return proc


@pytest.mark.slow
def test_a_second_run_in_a_locked_output_folder_is_refused(tiny_model, tmp_path, capsys):
    out = tmp_path / "shared"
    holder = _hold_lock(out)
    try:
        assert pretrain(tiny_model, out, steps=2) == 2
        error = capsys.readouterr().err
        assert f"in use by another run (process {holder.pid} on host" in error and "--output-dir" in error
        assert sorted(os.listdir(out)) == [".lock"]  # nothing of the refused run was written
    finally:
        holder.stdin.close()
        holder.wait()
    assert not (out / ".lock").exists()
    assert pretrain(tiny_model, out, steps=2) == 0  # released: the folder is free again
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_a_stale_lock_of_a_dead_process_is_taken_over(tiny_model, tmp_path):
    out = tmp_path / "stale"
    holder = _hold_lock(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads((out / ".lock").read_text())["pid"] == holder.pid  # left behind by the killed run
    assert pretrain(tiny_model, out, steps=2) == 0
    assert (out / "model.safetensors").exists() and not (out / ".lock").exists()


@pytest.mark.slow
def test_debris_of_killed_saves_is_removed_on_start(tiny_model, checkpointed, tmp_path):
    out = _copy(checkpointed, tmp_path)
    for debris in (out / ".tmp-.tmp-final-abc", out / ".tmp-final", out / "checkpoints" / ".tmp-step_00000006"):
        debris.mkdir()
        (debris / "model.safetensors").write_bytes(b"half")
    assert pretrain(tiny_model, out, "--resume") == 0
    leftovers = [os.path.join(root, name) for root, dirs, files in os.walk(out) for name in dirs + files if name.startswith(".tmp-")]
    assert leftovers == []


@pytest.mark.parametrize("fail_at_save", [1, 2])
@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1234 vs 5678")])
def test_a_failed_checkpoint_write_is_reported_and_cleaned(tiny_model, tmp_path, capsys, monkeypatch, fail_at_save, error):
    from accelerate import Accelerator

    original, calls = Accelerator.save_state, []

    def save_state(self, folder, *args, **kwargs):
        calls.append(folder)
        if len(calls) == fail_at_save:
            with open(os.path.join(folder, "model.safetensors"), "wb") as handle:
                handle.write(b"half a file")
            raise error
        return original(self, folder, *args, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    out = tmp_path / "full"
    assert cli(["pretrain", "--model", tiny_model, "--output-dir", str(out), "--max-steps", "8", *ARGS[:-1], "2"]) == 2
    message = capsys.readouterr().err
    step = 2 * fail_at_save
    reason = "No space left on device" if isinstance(error, OSError) else "inline_container.cc"
    assert f"checkpoint at step {step} could not be written: " in message and reason in message
    assert ("there is no earlier checkpoint" if fail_at_save == 1 else "the previous checkpoint at step 2 is intact") in message
    assert "Traceback" not in message
    assert sorted(os.listdir(out / "checkpoints")) == ([] if fail_at_save == 1 else ["step_00000002"])
    assert not (out / ".lock").exists()


def test_the_final_save_writes_one_temporary_folder_and_cleans_it(tiny_model, tmp_path, monkeypatch):
    """The final model is written in one temporary folder (no `.tmp-.tmp-` from save_pretrained
    nesting its own inside), and an interrupted save leaves no temporary folder."""
    from transformers import PreTrainedModel

    from mim_hub import MAEForPreTraining, MAEImageProcessor
    from mim_hub.training.saving import save_final

    model, processor = MAEForPreTraining.from_pretrained(tiny_model), MAEImageProcessor.from_pretrained(tiny_model)
    out = tmp_path / "final"
    out.mkdir()
    (out / "log.jsonl").write_text("{}\n")
    seen = []
    original = PreTrainedModel.save_pretrained

    def record(self, folder, *args, **kwargs):
        seen.append((str(folder), sorted(os.listdir(tmp_path))))
        original(self, folder, *args, **kwargs)
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", record)
    with pytest.raises(KeyboardInterrupt):
        save_final(model, processor, str(out), method="mae", provenance="test")
    (folder, listing), = seen
    assert os.path.dirname(folder) == str(tmp_path) and os.path.basename(folder).startswith(".tmp-final-")
    assert listing == sorted(["final", os.path.basename(folder)])  # transformers writes into the one temporary folder
    assert sorted(os.listdir(tmp_path)) == ["final"] and sorted(os.listdir(out)) == ["log.jsonl"]


def test_converted_and_saved_folders_get_the_usual_modes(tmp_path):
    from reference_mae import random_original_state

    from mim_hub.conversion import convert

    torch.save({"model": random_original_state(dim=32, depth=1, num_classes=3)}, tmp_path / "c.pth")
    previous = os.umask(0o022)
    try:
        convert("mae", str(tmp_path / "c.pth"), str(tmp_path / "out"), config={"num_attention_heads": 2})
        os.umask(0o002)
        convert("mae", str(tmp_path / "c.pth"), str(tmp_path / "group"), config={"num_attention_heads": 2})
    finally:
        os.umask(previous)
    for folder, (dir_mode, file_mode) in (("out", (0o755, 0o644)), ("group", (0o775, 0o664))):
        root = tmp_path / folder
        assert stat.S_IMODE(root.stat().st_mode) == dir_mode
        assert {name: stat.S_IMODE((root / name).stat().st_mode) for name in os.listdir(root)} == {name: file_mode for name in os.listdir(root)}
