"""Pre-training recipes are fresh, immutable objects built per model and run: a second run in the
same process (a notebook, this test suite) sees nothing of the first, whatever their order."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch

from mim_hub import CAEConfig, CAEForPreTraining, ColorMAEConfig, ColorMAEForPreTraining, MRMAEConfig, MRMAEForPreTraining
from mim_hub.training.recipes import PretrainRecipe, build_recipe, configure_model, get_recipe

VIT = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
CAE_TINY = dict(VIT, decoder_hidden_size=32, regressor_num_layers=1, decoder_num_layers=1, regressor_num_attention_heads=2,
                vocab_size=64, num_masking_patches=24, min_mask_patches_per_block=4)
COLOR_TINY = dict(VIT, decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64,
                  noise_pattern_count=4, noise_pattern_size=32)
MR_TINY = dict(image_size=32, patch_size=8, conv_hidden_sizes=[8, 12], conv_depths=[1, 1], conv_patch_sizes=[2, 2],
               hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, decoder_hidden_size=16,
               decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32)


def batches(recipe, count: int = 2, size: int = 3) -> list[dict]:
    """The first `count` batches the recipe makes from fixed pixels and seeds (model inputs)."""
    out = []
    for b in range(count):
        pixels = torch.from_numpy(np.random.default_rng(100 + b).standard_normal((size, 3, 32, 32), dtype=np.float32))
        samples = [{"pixel_values": pixels[i], **recipe.sample_inputs(np.random.default_rng([b, i]))} for i in range(size)]
        out.append(recipe.model_inputs(recipe.collate(samples)))
    return out


def assert_same(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


RUNS = {
    "cae": (CAEForPreTraining, CAEConfig, CAE_TINY,
            argparse.Namespace(tokenizer=None, num_mask_patches=20), argparse.Namespace(tokenizer=None, num_mask_patches=30)),
    "color_mae": (ColorMAEForPreTraining, ColorMAEConfig, COLOR_TINY,
                  argparse.Namespace(noise_color="blue", noise_patterns=None), argparse.Namespace(noise_color="red", noise_patterns=None)),
}


@pytest.mark.parametrize("method", sorted(RUNS))
def test_two_runs_in_one_process_do_not_see_each_other(method):
    model_class, config_class, tiny, args_a, args_b = RUNS[method]
    normalisation_a, normalisation_b = ((0.5,) * 3, (0.25,) * 3), ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))

    def recipe(args, normalisation):
        model = model_class(config_class(**tiny))
        configure_model(method, model, args, mean=normalisation[0], std=normalisation[1])
        return build_recipe(method, model, args, mean=normalisation[0], std=normalisation[1])

    alone_a = batches(recipe(args_a, normalisation_a))
    alone_b = batches(recipe(args_b, normalisation_b))
    assert any(not torch.equal(x[k], y[k]) for x, y in zip(alone_a, alone_b) for k in x if k != "pixel_values")  # the settings matter
    # interleaved: both recipes built before either is used, then used in both orders
    a, b = recipe(args_a, normalisation_a), recipe(args_b, normalisation_b)
    assert_same(batches(b), alone_b)
    assert_same(batches(a), alone_a)
    b_again = recipe(args_b, normalisation_b)
    assert_same(batches(a), alone_a)
    assert_same(batches(b_again), alone_b)


def test_a_recipe_is_immutable_and_its_methods_change_nothing():
    config = CAEConfig(**CAE_TINY)
    before = config.to_dict()
    recipe = get_recipe("cae")(config, mean=(0.5,) * 3, std=(0.25,) * 3)
    recipe.train_transform(min_crop_scale=0.3)
    batches(recipe)
    assert config.to_dict() == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.mean = (0.0,) * 3
    assert get_recipe("crate_mae") is PretrainRecipe and get_recipe("cae") is not get_recipe("simmim")


def test_mr_mae_records_each_runs_normalisation_in_its_own_model():
    first, second = MRMAEForPreTraining(MRMAEConfig(**MR_TINY)), MRMAEForPreTraining(MRMAEConfig(**MR_TINY))
    configure_model("mr_mae", first, None, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    recipe = build_recipe("mr_mae", first, None, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    configure_model("mr_mae", second, None, mean=(0.5,) * 3, std=(0.25,) * 3)
    build_recipe("mr_mae", second, None, mean=(0.5,) * 3, std=(0.25,) * 3)
    recipe.train_transform()  # (once mutated the config it was handed)
    assert first.config.image_mean == [0.1, 0.2, 0.3] and first.config.image_std == [0.4, 0.5, 0.6]
    assert second.config.image_mean == [0.5] * 3 and second.config.image_std == [0.25] * 3


def test_cae_recipe_labels_are_the_models_own_tokenizer_labels():
    """The recipe computes CAE's targets exactly as the model did from a tokenizer it was handed."""
    model = CAEForPreTraining(CAEConfig(**CAE_TINY)).eval()
    recipe = build_recipe("cae", model, argparse.Namespace(tokenizer=None, num_mask_patches=None), mean=(0.5,) * 3, std=(0.25,) * 3)
    batch = recipe.collate([{"pixel_values": torch.randn(3, 32, 32), **recipe.sample_inputs(np.random.default_rng(i))} for i in range(2)])
    with torch.no_grad():
        from_recipe = model(**recipe.model_inputs(batch))
        model.set_tokenizer(recipe.tokenizer)
        from_model = model(**batch)
    assert torch.equal(from_recipe.loss, from_model.loss) and torch.equal(from_recipe.mlm_acc, from_model.mlm_acc)


@pytest.mark.slow
def test_pretrain_runs_in_one_process_match_whatever_their_order(tmp_path):
    """Two ColorMAE pre-training runs of different noise colours, one after the other in this
    process, log the losses each logs when it runs first."""
    from mim_hub.cli import main

    model = ColorMAEForPreTraining(ColorMAEConfig(**COLOR_TINY))
    model.save_pretrained(tmp_path / "m")
    from mim_hub import ColorMAEImageProcessor

    ColorMAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(tmp_path / "m")

    def run(color: str, name: str) -> list[float]:
        assert main(["pretrain", "--model", str(tmp_path / "m"), "--output-dir", str(tmp_path / name), "--dataset", "digits",
                     "--max-steps", "2", "--batch-size", "8", "--save-every", "0", "--log-every", "1", "--num-workers", "0",
                     "--noise-color", color]) == 0
        return [json.loads(line)["loss"] for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]

    blue_first, red_second = run("blue", "blue1"), run("red", "red2")
    red_first, blue_second = run("red", "red1"), run("blue", "blue2")
    assert blue_first == blue_second and red_first == red_second and blue_first != red_first
