"""The value checks every command's options go through (utils/values.py)."""

import pytest

from mim_hub.utils.values import check_values


def test_each_value_of_a_repeatable_option_is_checked():
    check_values({"mimic_weight": [1.0, 0.5]}, "pretrain")  # one weight per teacher: each in range
    with pytest.raises(ValueError, match=r"--mimic-weight -1.0: must be a finite number >= 0"):
        check_values({"mimic_weight": [1.0, -1.0]}, "pretrain")


@pytest.mark.parametrize("name,value", [("base_lr", 0.0), ("lr", float("inf")), ("mask_ratio", 0.0), ("batch_size", 0),
                                        ("epochs", -1), ("grad_accum", 0)])
def test_values_out_of_range_are_refused_naming_the_option(name, value):
    with pytest.raises(ValueError, match="--" + name.replace("_", "-")):
        check_values({name: value}, "pretrain")
