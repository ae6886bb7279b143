"""`commands/method_options.py`: each method's own pretrain flags, as data the recipes read by name."""

import argparse
import dataclasses

import pytest

from mim_hub.commands.method_options import METHOD_FLAGS, NOISE_COLORS, add_method_arguments
from mim_hub.layers.mask_color_noise import COLORS
from mim_hub.models.catalogue import METHODS
from mim_hub.training.recipes import configure_model
from mim_hub.training.settings import PretrainSettings


def test_the_noise_colours_are_the_mask_sources():
    assert NOISE_COLORS == COLORS


def test_every_method_of_the_table_exists_and_no_flag_is_a_core_flag():
    assert set(METHOD_FLAGS) <= set(METHODS)
    core = {f.name for f in dataclasses.fields(PretrainSettings)}
    dests = [flag.name.removeprefix("--").replace("-", "_") for flags in METHOD_FLAGS.values() for flag in flags]
    assert len(dests) == len(set(dests)) and not set(dests) & core


def test_the_flags_parse_into_options_the_recipe_applies():
    parser = argparse.ArgumentParser()
    add_method_arguments(parser, METHODS)
    options = parser.parse_args(["--noise-color", "purple", "--num-mask-patches", "20"])
    assert options.noise_color == "purple" and options.num_mask_patches == 20 and options.teacher is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--noise-color", "grey"])

    class Model:  # what configure_model touches: the config
        config = argparse.Namespace(noise_color="green", num_masking_patches=98)

    configure_model("color_mae", Model, options)
    configure_model("cae", Model, options)
    assert Model.config.noise_color == "purple" and Model.config.num_masking_patches == 20


@pytest.mark.parametrize("method", METHODS)
def test_no_recipe_declares_flags_of_its_own(method):
    """A method's flags are a row of METHOD_FLAGS: the parser never imports a recipe, so flags a
    recipe added itself (the former `add_arguments`) would never be offered."""
    from mim_hub.training.recipes import get_recipe

    assert not hasattr(get_recipe(method), "add_arguments"), f"{method}: move its flags to commands/method_options.py"
