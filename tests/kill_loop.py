"""Crash safety of training: kill a pre-training run with SIGKILL at random moments, many times,
resuming after each kill. After every kill the latest checkpoint must load, no half-written
checkpoint may be visible, and the run must end with exactly the weights of an uninterrupted run.
Shared by tests/test_robustness.py and benchmarks/robustness.py."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


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
            "--max-steps", str(steps), "--save-every", "2", "--batch-size", "16", "--log-every", "1", "--lr", "1e-3", "--resume"]


def checkpoint_loads(output: str) -> bool:
    """The latest complete checkpoint (if any) has readable weights and counters."""
    root = os.path.join(output, "checkpoints")
    if not os.path.isdir(root):
        return True
    done = sorted(d for d in os.listdir(root) if d.startswith("step_"))
    for name in done:
        if not os.path.isfile(os.path.join(root, name, "state.json")):
            return False  # a visible checkpoint must be complete
    if not done:
        return True
    load_file(os.path.join(root, done[-1], "model.safetensors"))
    return True


def kill_loop(folder: str, kills: int = 5, steps: int = 24, seed: int = 0) -> tuple[int, int, bool]:
    """Returns (kills survived, kills tried, final weights identical to an uninterrupted run)."""
    model = _tiny_model(folder)
    reference = os.path.join(folder, "reference")
    subprocess.run(_command(model, reference, steps), check=True, capture_output=True, env=ENV)
    output = os.path.join(folder, "killed")
    rng = random.Random(seed)
    survived = tried = 0
    for _ in range(kills):
        if os.path.isfile(os.path.join(output, "model.safetensors")):
            break
        proc = subprocess.Popen(_command(model, output, steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        time.sleep(rng.uniform(2.0, 6.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            tried += 1
        proc.wait()
        try:
            survived += checkpoint_loads(output) if proc.returncode == -signal.SIGKILL else 0
        except Exception:  # an unreadable checkpoint is a failure, counted as not survived
            pass
    subprocess.run(_command(model, output, steps), check=True, capture_output=True, env=ENV)
    a = load_file(os.path.join(reference, "model.safetensors"))
    b = load_file(os.path.join(output, "model.safetensors"))
    identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return survived, tried, identical
