"""Crash safety of training: kill a pre-training run with SIGKILL many times, at points chosen by
its progress (after the k-th optimizer step, and at each stage of writing a checkpoint), resuming
after each kill. After every kill each visible checkpoint must be complete and load, and the run
must end with exactly the weights of an uninterrupted run.

No clock decides anything here: the run is started with `MIM_HUB_PAUSE_AT=POINT:STEP`
(src/mim_hub/utils/test_hooks.py), blocks when it gets there and says so on stderr, and is
killed then. A fast machine and a loaded one kill at the same points and reach the same verdict.
Shared by tests/test_robustness.py and benchmarks/robustness.py."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import torch
from safetensors.torch import load_file

from mim_hub.utils.test_hooks import ENV as PAUSE_ENV
from mim_hub.utils.test_hooks import MARKER, POINTS

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
ENV.pop(PAUSE_ENV, None)
SAVE_EVERY = 2


def _tiny_model(folder: str) -> str:
    from mim_hub import MAEConfig, MAEForPreTraining, MAEImageProcessor

    path = os.path.join(folder, "tiny")
    if not os.path.isdir(path):
        torch.manual_seed(0)
        MAEForPreTraining(MAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                    decoder_num_attention_heads=2, decoder_intermediate_size=64)).save_pretrained(path)
        MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(path)
    return path


def _command(model: str, output: str, steps: int) -> list[str]:
    return [sys.executable, "-m", "mim_hub", "pretrain", "--model", model, "--output-dir", output, "--dataset", "digits",
            "--max-steps", str(steps), "--save-every", str(SAVE_EVERY), "--batch-size", "16", "--log-every", "1", "--lr", "1e-3",
            "--resume"]


def kill_plan(kills: int, steps: int, seed: int = 0) -> list[tuple[str, int]]:
    """`kills` (point, step) pairs at strictly increasing steps below `steps`, every point of
    test_hooks.POINTS used in turn (in an order drawn from `seed`), steps a seeded 1-3 apart.
    Checkpoint points fall on checkpoint steps (multiples of SAVE_EVERY)."""
    rng = random.Random(seed)
    order = list(POINTS)
    rng.shuffle(order)
    plan, step = [], 0
    for i in range(kills):
        point = order[i % len(order)]
        step += rng.randint(1, 3)
        if point != "step":
            step += -step % SAVE_EVERY
        plan.append((point, step))
    if plan and plan[-1][1] >= steps:
        raise ValueError(f"{kills} kills need more than {steps} steps (the last falls at step {plan[-1][1]})")
    return plan


def visible_checkpoints_complete(output: str) -> bool:
    """Every checkpoint a resume could pick (`checkpoints/step_N`) is whole: its counters say step
    N, its weights and optimizer state load (safely)."""
    root = os.path.join(output, "checkpoints")
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if not name.startswith("step_"):
            continue
        folder = os.path.join(root, name)
        state_path = os.path.join(folder, "state.json")
        if not os.path.isfile(state_path) or json.load(open(state_path))["step"] != int(name[len("step_"):]):
            return False
        load_file(os.path.join(folder, "model.safetensors"))
        torch.load(os.path.join(folder, "optimizer.bin"), weights_only=True)
    return True


def _landed_where_asked(output: str, point: str, step: int) -> bool:
    """What the checkpoints folder holds shows the kill fell at `point` of `step`."""
    root = os.path.join(output, "checkpoints")
    tmp, final = os.path.join(root, f".tmp-step_{step:08d}"), os.path.join(root, f"step_{step:08d}")
    files = set(os.listdir(tmp)) if os.path.isdir(tmp) else None
    if point == "checkpoint-begin":
        return files == set() and not os.path.exists(final)
    if point == "checkpoint-written":
        return files is not None and "model.safetensors" in files and "state.json" not in files and not os.path.exists(final)
    if point == "checkpoint-rename":
        return files is not None and "state.json" in files and not os.path.exists(final)
    if point == "checkpoint-prune":
        return files is None and os.path.isdir(final)
    return files is None and not os.path.exists(final)  # "step": between checkpoints


def run_until_paused(command: list[str], point: str, step: int) -> tuple[bool, str]:
    """Start the run asking it to pause at point:step; SIGKILL it once it says it has.
    Returns (killed there, the run's stderr tail)."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**ENV, PAUSE_ENV: f"{point}:{step}"})
    tail, paused = [], False
    for raw in proc.stderr:  # ends only when the run pauses (we kill it) or exits
        line = raw.decode(errors="replace").strip()
        tail = (tail + [line])[-30:]
        if line == f"{MARKER} {point}:{step}":
            paused = True
            proc.send_signal(signal.SIGKILL)
            break
    proc.stderr.close()
    proc.wait()
    return paused and proc.returncode == -signal.SIGKILL, "\n".join(tail)


def kill_loop(folder: str, kills: int = 5, steps: int = 24, seed: int = 0) -> tuple[int, int, bool]:
    """Returns (kills survived, kills made, final weights identical to an uninterrupted run).
    A kill is made when the run reached its planned point and died of the SIGKILL there; it is
    survived when the checkpoints folder then shows the kill fell where planned and every
    visible checkpoint is complete."""
    model = _tiny_model(folder)
    reference = os.path.join(folder, "reference")
    subprocess.run(_command(model, reference, steps), check=True, capture_output=True, env=ENV)
    output = os.path.join(folder, "killed")
    survived = made = 0
    for point, step in kill_plan(kills, steps, seed):
        killed, tail = run_until_paused(_command(model, output, steps), point, step)
        if not killed:
            raise AssertionError(f"the run never paused at {point}:{step}:\n{tail}")
        made += 1
        try:
            survived += _landed_where_asked(output, point, step) and visible_checkpoints_complete(output)
        except Exception:  # an unreadable checkpoint is a failure, counted as not survived
            pass
    subprocess.run(_command(model, output, steps), check=True, capture_output=True, env=ENV)
    a = load_file(os.path.join(reference, "model.safetensors"))
    b = load_file(os.path.join(output, "model.safetensors"))
    identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return survived, made, identical
