"""Pre-training checkpoints: what a checkpoint records about its run, how a resume is checked
against it, and how a checkpoint is written (aside, then renamed; a failed write reported with
the checkpoint that is still intact), through `utils.atomic.atomic_folder` like every other folder.

A checkpoint's `state.json` holds the counters (`step`, `epoch`, `batch_in_epoch`) and `run`:
every argument that changes the result (batch size, lr, schedule, data, method, seed, ...), the
values derived from them (total batch, lr, warm-up and total steps), and a hash of the model's
config. `--resume` refuses a checkpoint whose run differs, naming each difference, unless
`--resume-with-changes` is given; it always refuses counters that are not integers in range.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil

from ..utils.atomic import atomic_folder
from ..utils.test_hooks import pause_if_asked

# arguments that do not change what is trained (where files go, how often to log, workers, ...)
NEUTRAL_ARGUMENTS = frozenset({
    "output_dir", "resume", "resume_with_changes", "num_workers", "log_every", "save_every", "keep_checkpoints",
    "push_to_hub", "model", "verbose", "func", "command", "compile", "compile_backend", "compile_mode",
})


class ResumeError(ValueError):
    """A checkpoint that this run cannot resume from (tampered, or written by another run)."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the message names the one still intact."""


def config_hash(config) -> str:
    values = {k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "_name_or_path", "architectures")}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_record(settings: dict, config, **derived) -> dict:
    """What the run is: its result-changing settings (by flag name), derived values and the config's hash."""
    record = {k: v for k, v in sorted(settings.items()) if k not in NEUTRAL_ARGUMENTS and isinstance(v, (int, float, str, bool, type(None), list, tuple))}
    record = json.loads(json.dumps(record))  # tuples as lists, as they come back from state.json
    record.update(derived)
    record["config_hash"] = config_hash(config)
    return record


def differences(saved: dict, current: dict) -> list[str]:
    names = sorted(set(saved) | set(current))
    return [f"{name}: {saved.get(name, '<unset>')!r} -> {current.get(name, '<unset>')!r}" for name in names if saved.get(name) != current.get(name)]


def latest_checkpoint(folder: str) -> str | None:
    root = os.path.join(folder, "checkpoints")
    if not os.path.isdir(root):
        return None
    done = sorted(d for d in os.listdir(root) if d.startswith("step_") and os.path.isfile(os.path.join(root, d, "state.json")))
    return os.path.join(root, done[-1]) if done else None


def read_state(checkpoint: str, *, total_steps: int, steps_per_epoch: int) -> dict:
    """state.json of `checkpoint`, checked: a JSON object, integer counters in range and
    consistent with the folder's name and with this run's length."""
    path = os.path.join(checkpoint, "state.json")
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError) as error:
        raise ResumeError(f"--resume: {path} is not readable JSON ({error})") from None
    if not isinstance(state, dict):
        raise ResumeError(f"--resume: {path} holds a {type(state).__name__}, not the checkpoint's counters")
    for key in ("step", "epoch", "batch_in_epoch"):
        if key not in state:
            raise ResumeError(f"--resume: {path} has no '{key}' (keys: {sorted(state)})")
        if not isinstance(state[key], int) or isinstance(state[key], bool):
            raise ResumeError(f"--resume: {path}: '{key}' is {state[key]!r}, not an integer")
    step, epoch, batch = state["step"], state["epoch"], state["batch_in_epoch"]
    name = os.path.basename(os.path.normpath(checkpoint))
    if step < 1:
        raise ResumeError(f"--resume: {path}: step {step} is not a step a checkpoint is written at (1 or more)")
    if step >= total_steps:
        raise ResumeError(f"--resume: {path} is at step {step}, but this run has {total_steps} steps: nothing is left to train "
                          "(a larger --max-steps or --epochs continues it)")
    if step < 0 or name != f"step_{step:08d}":
        raise ResumeError(f"--resume: {path} says step {step}, but the checkpoint is {name}")
    if epoch < 0 or epoch > step or batch < 0 or batch > step:
        raise ResumeError(f"--resume: {path}: epoch {epoch} and batch_in_epoch {batch} are not counters of step {step}")
    if batch > steps_per_epoch:
        raise ResumeError(f"--resume: {path}: batch_in_epoch {batch} is more than the {steps_per_epoch} steps of an epoch")
    return state


def check_resume(state: dict, current: dict, checkpoint: str, *, with_changes: bool, exact_epochs: bool) -> list[str]:
    """Compare the checkpoint's run with this one. Returns the differences (empty when the same
    run); raises `ResumeError` on differences without `with_changes`."""
    saved = state.get("run")
    if not isinstance(saved, dict):
        if with_changes:
            return ["the checkpoint does not record its run"]
        raise ResumeError(f"--resume: {checkpoint} does not record the run that wrote it (an older mim_hub, or an edited "
                          "state.json): pass --resume-with-changes to continue it with this run's arguments")
    changed = differences(saved, current)
    if changed and not with_changes:
        raise ResumeError(f"--resume: {checkpoint} was written by a different run: " + "; ".join(changed)
                          + ". Resume with the same arguments, pass --resume-with-changes to continue with these (the lr "
                          "schedule and the data position follow the new arguments), or use another --output-dir")
    if not changed and exact_epochs and not state.get("resumed_with_changes"):
        steps_per_epoch = current.get("steps_per_epoch")
        if isinstance(steps_per_epoch, int) and state["epoch"] * steps_per_epoch + state["batch_in_epoch"] != state["step"]:
            raise ResumeError(f"--resume: {checkpoint}: step {state['step']} is not epoch {state['epoch']} x {steps_per_epoch} "
                              f"steps + {state['batch_in_epoch']}: the counters were edited")
    return changed


def save_checkpoint(accelerator, folder: str, state: dict, keep: int, ema=None, recipe_state=None) -> None:
    """accelerate state + our counters (+ the model EMA, + the recipe's state over the run: HPM's
    teacher), written to a temporary folder and renamed into place. A
    failed write removes the temporary folder and raises `CheckpointSaveError` naming the step
    that could not be written and the previous checkpoint, which is intact."""
    root = os.path.join(folder, "checkpoints")
    final = os.path.join(root, f"step_{state['step']:08d}")
    tmp = os.path.join(root, f".tmp-step_{state['step']:08d}")  # one name every rank knows
    previous = latest_checkpoint(folder)
    try:
        # the main process renames the folder into place when the block succeeds (removes it when it fails)
        with atomic_folder(final, temporary=tmp) if accelerator.is_main_process else contextlib.nullcontext(tmp):
            if accelerator.is_main_process:
                pause_if_asked("checkpoint-begin", state["step"])  # test-only crash points: test_hooks.py
            accelerator.wait_for_everyone()
            accelerator.save_state(tmp)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                if ema is not None:
                    ema.save(tmp)
                if recipe_state is not None:
                    recipe_state.save(tmp)
                pause_if_asked("checkpoint-written", state["step"])
                with open(os.path.join(tmp, "state.json"), "w") as handle:
                    json.dump(state, handle)
                pause_if_asked("checkpoint-rename", state["step"])
    except (OSError, RuntimeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).strip().splitlines()[0][:300]
        if isinstance(error, OSError) and error.filename:
            reason += f" ({error.filename})"
        intact = (f"the previous checkpoint at step {int(os.path.basename(previous)[5:])} is intact ({previous})" if previous
                  else "there is no earlier checkpoint")
        raise CheckpointSaveError(f"checkpoint at step {state['step']} could not be written: {reason}; {intact}") from None
    if accelerator.is_main_process:
        pause_if_asked("checkpoint-prune", state["step"])
        old = sorted(d for d in os.listdir(root) if d.startswith("step_"))
        for name in old[:-keep] if keep > 0 else []:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    accelerator.wait_for_everyone()
