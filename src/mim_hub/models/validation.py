"""Config checks shared by every method: a config that cannot work is refused at construction,
with a message naming the fields.

Every field of every config is checked for type and range by one table per config,
`FIELD_RULES` (field name -> rule), and one validator, `MIMConfig.__setattr__`: a field is checked
whenever it is set, so a config built with `Config(...)`, read from config.json, changed by
`--config` or by `from_pretrained(..., field=value)` is checked the same way. The checks between
fields (divisibility, grid sizes) stay in each config's `__post_init__`."""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass

from transformers import PreTrainedConfig

from ..utils.values import within


@dataclass(frozen=True)
class Rule:
    """What one config field may hold.

    kind: "int", "float", "bool", "str", "choice", "size" (a positive int or a (height, width)
    pair), "ints" / "floats" / "strs" (a list or tuple of them), "channels" (a number, or a list
    or tuple of numbers: a per-channel value such as a normalisation's mean). low / high: inclusive bounds of
    numbers (of every item for lists); low_open / high_open make them exclusive. choices: the
    allowed values of "choice". optional: None is allowed too."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    optional: bool = False

    def describe(self) -> str:
        if self.kind == "choice":
            text = f"one of {list(self.choices)}"
        elif self.kind == "size":
            text = "a positive int or a [height, width] pair of them"
        else:
            noun = {"int": "an int", "float": "a number", "bool": "a bool (true or false)", "str": "a string",
                    "ints": "a list of ints", "floats": "a list of numbers", "strs": "a list of strings",
                    "channels": "a number or a list of numbers"}[self.kind]
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            text = noun + (f" {' and '.join(bounds)}" if bounds else "")
            if self.kind in ("ints", "floats", "channels") and bounds:
                text = noun + f" (each {' and '.join(bounds)})"
        return text + (" or null" if self.optional else "")

    def _number_ok(self, value, integer: bool) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
            return False
        return within(value, self.low, self.high, low_open=self.low_open, high_open=self.high_open)

    def accepts(self, value) -> bool:
        if value is None:
            return self.optional
        kind = self.kind
        if kind in ("int", "float"):
            return self._number_ok(value, kind == "int")
        if kind == "bool":
            return isinstance(value, bool)
        if kind == "str":
            return isinstance(value, str)
        if kind == "choice":
            return isinstance(value, (str, int, float)) and not isinstance(value, bool) and value in self.choices
        if kind == "size":
            sides = list(value) if isinstance(value, (list, tuple)) else [value]
            return 1 <= len(sides) <= 2 and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in sides)
        if kind == "channels":
            return all(self._number_ok(v, False) for v in (value if isinstance(value, (list, tuple)) else [value]))
        if kind in ("ints", "floats", "strs"):
            if not isinstance(value, (list, tuple)):
                return False
            if kind == "strs":
                return all(isinstance(v, str) for v in value)
            return all(self._number_ok(v, kind == "ints") for v in value)
        raise AssertionError(f"unknown rule kind {kind!r}")


def Int(low: int | None = None, high: int | None = None, optional: bool = False) -> Rule:
    return Rule("int", low, high, optional=optional)


def Float(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False,
          optional: bool = False) -> Rule:
    return Rule("float", low, high, low_open, high_open, optional=optional)


def Choice(*choices, optional: bool = False) -> Rule:
    return Rule("choice", choices=tuple(choices), optional=optional)


BOOL = Rule("bool")
SIZE = Rule("size")
POSITIVE = Int(1)
COUNT = Int(0)  # layers, depths: zero is allowed
EPS = Float(0, low_open=True)  # LayerNorm eps: > 0 (a negative eps gives NaN)
PROBABILITY = Float(0, 1, high_open=True)  # dropout, drop path, mask ratio
NON_NEGATIVE = Float(0)


def _activations() -> tuple[str, ...]:
    from transformers.activations import ACT2FN

    return tuple(sorted(ACT2FN))


ACTIVATION = Choice(*_activations())


def check_field(config_class: type, name: str, value) -> None:
    """Raise a ValueError naming `name` when `value` breaks the config's rule for it."""
    rule = getattr(config_class, "FIELD_RULES", {}).get(name)
    if rule is not None and not rule.accepts(value):
        raise ValueError(f"{config_class.__name__}: {name} must be {rule.describe()}, got {value!r} ({type(value).__name__})")


class MIMConfig(PreTrainedConfig):
    """The base of every mim_hub config: each field listed in the class's `FIELD_RULES` is
    checked whenever it is set, and config.json files that are not a JSON object of fields, or
    whose fields break a rule, are refused with a ValueError naming the file."""

    # field -> Rule, for every field of the config (a test checks that none is missing); not annotated:
    # a class attribute, not a config field
    FIELD_RULES = {}

    def __setattr__(self, name, value):
        check_field(type(self), name, value)
        super().__setattr__(name, value)

    @classmethod
    def _dict_from_json_file(cls, json_file):
        config_dict = super()._dict_from_json_file(json_file)
        if not isinstance(config_dict, dict):
            raise ValueError(f"{json_file}: a config must be a JSON object of fields, got a JSON {type(config_dict).__name__}")
        return config_dict

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except ValueError as error:
            where = os.fspath(pretrained_model_name_or_path)
            if str(error).startswith(where):
                raise
            if os.path.isdir(where):
                where = os.path.join(where, "config.json")
            raise ValueError(f"{where}: {error}") from None


def check_divisible(config, numerator: str, denominator: str) -> None:
    top, bottom = getattr(config, numerator), getattr(config, denominator)
    if bottom <= 0 or top % bottom:
        raise ValueError(
            f"{type(config).__name__}: {numerator} ({top}) must be divisible by {denominator} ({bottom})"
        )


def check_image_size(config, field: str = "image_size", patch_field: str = "patch_size") -> list[int]:
    """`image_size` is a positive int or a (height, width) pair, and every side is a whole number
    of patches; returns the sides as a list."""
    name, value, patch = type(config).__name__, getattr(config, field), getattr(config, patch_field)
    sides = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(sides) not in (1, 2) or any(isinstance(side, bool) or not isinstance(side, int) or side <= 0 for side in sides):
        raise ValueError(f"{name}: {field} must be a positive int or (height, width), got {value}")
    if any(side % patch for side in sides):
        raise ValueError(f"{name}: {field} {value} is not divisible by {patch_field} {patch}")
    return sides
