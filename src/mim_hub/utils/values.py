"""Every numeric option checked where it enters: `check_values(settings, command)` refuses, with a
`ValueError` naming the option, its value and the range it must be in (the CLI prints it and
exits 2), a value that would otherwise train on garbage: a learning rate of `inf` (NaN weights
saved), a mask ratio of 0 (a 0/0 loss), 0 or negative steps, epochs or batch sizes (a whole epoch
trained, or untrained weights saved as trained), a 0 interval (a ZeroDivisionError mid-run), a
ratio outside [0, 1], or more worker processes than the machine has CPUs.

`settings` is anything with attributes (an `argparse.Namespace`, a settings dataclass) or a
dict; options it does not have, or that are None (meaning "the default"), are not checked. The
rules are by option name (`RULES`), the same in every command, with the few exceptions a command
gives its options (`COMMAND_RULES`).
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """A number's allowed range: `low`/`high` bounds (None: unbounded), each open or closed;
    `integer` for counts; `allowed` values accepted whatever the range (sentinels such as -1)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    allowed: tuple = ()
    why: str = ""

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {_number(self.high)}"
        else:
            text = "finite"
        text = ("an integer " if self.integer else "a finite number ") + text
        if self.allowed:
            text += " (or " + " or ".join(str(a) for a in self.allowed) + ")"
        return text

    def accepts(self, value) -> bool:
        if value in self.allowed:
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not float(value).is_integer():
            return False
        return within(value, self.low, self.high, low_open=self.low_open, high_open=self.high_open)


def within(value: float, low: float | None, high: float | None, *, low_open: bool = False, high_open: bool = False) -> bool:
    """Whether `value` is finite and between `low` and `high` (None: unbounded), each bound open
    (excluded) or closed. Integers are finite (huge ones too: no float conversion)."""
    if not isinstance(value, numbers.Integral) and not math.isfinite(value):
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or (value < high if high_open else value <= high)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


POSITIVE = Rule(low=0, low_open=True)
POSITIVE_INT = Rule(low=1, integer=True)
NON_NEGATIVE = Rule(low=0)
NON_NEGATIVE_INT = Rule(low=0, integer=True)
FRACTION = Rule(low=0, high=1)


def cpu_count() -> int:
    """CPUs of the machine (what worker counts are bounded by)."""
    return os.cpu_count() or 1


# option name -> rule; counts of workers are bounded separately (by the CPUs, see `check_values`)
RULES: dict[str, Rule] = {
    # learning rates and schedules
    "lr": POSITIVE, "base_lr": POSITIVE, "pretrain_lr": POSITIVE, "min_lr": NON_NEGATIVE,
    "min_lr_ratio": FRACTION, "weight_decay": NON_NEGATIVE, "weight_decay_end": NON_NEGATIVE, "clip_grad": POSITIVE, "layer_decay": Rule(low=0, high=1, low_open=True),
    "warmup_steps": NON_NEGATIVE_INT, "warmup_ratio": FRACTION, "warmup_epochs": NON_NEGATIVE,
    "model_ema_decay": Rule(low=0, high=1, low_open=True, high_open=True),
    # how long, how big, how often
    "epochs": POSITIVE, "finetune_epochs": POSITIVE, "max_steps": POSITIVE_INT, "pretrain_steps": POSITIVE_INT,
    "linear_epochs": POSITIVE_INT, "batch_size": POSITIVE_INT, "pretrain_batch_size": POSITIVE_INT,
    "probe_batch_size": POSITIVE_INT, "probe_effective_batch": POSITIVE_INT, "grad_accum": POSITIVE_INT,
    "log_every": POSITIVE_INT, "save_every": NON_NEGATIVE_INT, "keep_checkpoints": POSITIVE_INT,
    "shuffle_buffer": POSITIVE_INT, "shard_size": POSITIVE_INT, "k": POSITIVE_INT, "seed": NON_NEGATIVE_INT,
    "index": NON_NEGATIVE_INT, "pictures": NON_NEGATIVE_INT,
    # images and augmentation
    "mask_ratio": Rule(low=0, high=1, low_open=True, high_open=True, why="a ratio of 0 masks nothing: the loss is 0/0"),
    "crop_min_scale": Rule(low=0, high=1, low_open=True), "max_side": NON_NEGATIVE_INT, "quality": Rule(low=1, high=100, integer=True),
    "image_size": POSITIVE_INT, "window_size": POSITIVE_INT, "num_mask_patches": POSITIVE_INT,
    "max_image_pixels": POSITIVE_INT, "decoder_channels": POSITIVE_INT, "eval_crop_size": POSITIVE_INT, "eval_stride": POSITIVE_INT,
    "label_smoothing": Rule(low=0, high=1, high_open=True), "drop_path": Rule(low=0, high=1, high_open=True),
    "reprob": FRACTION, "mixup": NON_NEGATIVE, "cutmix": NON_NEGATIVE, "mixup_prob": FRACTION, "mixup_switch_prob": FRACTION,
    "jitter": NON_NEGATIVE, "temperature": POSITIVE, "mimic_weight": NON_NEGATIVE,
}
# command -> {option: rule} where a command's option means something else
COMMAND_RULES: dict[str, dict[str, Rule]] = {
    "finetune": {"max_steps": Rule(low=1, integer=True, allowed=(-1,))},  # segmentation: -1 = by --epochs
}
WORKER_OPTIONS = ("num_workers",)


def _items(settings):
    if isinstance(settings, dict):
        return settings.items()
    return vars(settings).items() if hasattr(settings, "__dict__") else ()


def check_values(settings, command: str = "") -> None:
    """Raise `ValueError` naming the first option of `settings` outside its range (see `RULES`)."""
    rules = {**RULES, **COMMAND_RULES.get(command, {})}
    for name, value in _items(settings):
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if name in WORKER_OPTIONS:
            cpus = cpu_count()
            if not Rule(low=0, high=cpus, integer=True).accepts(value):
                raise ValueError(f"{flag} {value}: must be an integer in [0, {cpus}] (this machine has {cpus} CPUs; "
                                 "more worker processes than CPUs only compete for them)")
            continue
        rule = rules.get(name)
        if rule is None or (isinstance(value, str) and name not in rules):
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:  # a repeatable option: each value
            if not rule.accepts(item):
                why = f": {rule.why}" if rule.why else ""
                raise ValueError(f"{flag} {item}: must be {rule.describe()}{why}")


def check_finite_loss(value: float, step: int) -> None:
    """Stop a run whose loss is NaN or infinite (what follows would save garbage as trained)."""
    if not math.isfinite(value):
        raise ValueError(f"the loss is {value} at step {step}: training diverged (a learning rate too high, or inputs with "
                         "no finite values); nothing more is trained or saved")


def check_finite_model(model, what: str, state_dict: dict | None = None) -> None:
    """Refuse to save a model (or its gathered `state_dict`) with NaN or infinite weights, naming the first few."""
    import torch

    tensors = state_dict.items() if state_dict is not None else model.named_parameters()
    broken = [name for name, p in tensors if torch.is_tensor(p) and p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if broken:
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        raise ValueError(f"{what}: the weights {', '.join(broken[:3])}{more} hold NaN or infinite values (training diverged); "
                         "the model is not saved")
