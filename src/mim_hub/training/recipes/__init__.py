"""Per-method pre-training recipes.

A recipe tells the trainer what only the method knows: its augmentation, what each sample
carries besides the image (MAE's `noise`, SimMIM's and CAE's `bool_masked_pos`, ...), the
targets computed on the training device (CAE's token `labels`), its optimiser defaults, and what
the run's method options (its own command-line flags, listed in `commands/method_options.py`)
change in the model or the recipe.

A recipe is a fresh, immutable object built for one model and one run:

    configure_model("cae", model, options, mean=mean, std=std)  # the run's options, in the model
    recipe = build_recipe("cae", model, options, mean=mean, std=std, device=device)
    transform = recipe.train_transform(min_crop_scale=0.08)     # image -> views
    sample = recipe.sample_inputs(rng)                          # per-sample draws (masks)
    batch = recipe.model_inputs(recipe.collate(samples))        # on the device: + targets
    loss = model(**batch).loss

Building the run's model applies its options to it, as an explicit step (`configure_model`:
CAE's `--num-mask-patches`, ColorMAE's `--noise-color`, MR-MAE's teachers and the run's
normalisation); `build_recipe` then builds the recipe from the model's config and changes
nothing in the model. Nothing a recipe holds changes afterwards, so two runs in one process (a
notebook, the test suite) never see each other's settings, whatever their order. `options` is
the run's method options as attributes (`settings.MethodOptions`, or None for the defaults).

Adding a method: write `mim_hub/training/recipes/<method>.py` defining `RECIPE`, a subclass of
`PretrainRecipe` overriding what differs (`configure_model`, `recipe_options`, `train_transform`,
`sample_inputs`, `collate`, `model_inputs`; derived objects such as mask generators are built in
`__post_init__`). `get_recipe(method)` imports it; methods without one use MAE's recipe, which
fits every model whose pre-training forward takes `pixel_values` and `noise`. Flags of the
method's own: an entry in `commands/method_options.py` (the parser reads that table, not the
recipes, so that `mim-hub pretrain --help` imports no model).
"""

from __future__ import annotations

import importlib

from .base import IMAGENET_MEAN, IMAGENET_STD, PretrainRecipe


def get_recipe(method: str) -> type[PretrainRecipe]:
    """The recipe class of `method` (`PretrainRecipe`, MAE's, for methods without their own)."""
    try:
        module = importlib.import_module(f"{__name__}.{method}")
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith(f"{__name__}.{method}"):
            raise
        return PretrainRecipe
    return module.RECIPE


def configure_model(method: str, model, options=None, *, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
    """Apply the run's method `options` and its input normalisation `mean` / `std` to `model`
    (the method's `configure_model`): a step of building the run's model."""
    get_recipe(method).configure_model(model, options, mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


def build_recipe(method: str, model, options=None, *, mean=IMAGENET_MEAN, std=IMAGENET_STD, device=None) -> PretrainRecipe:
    """`method`'s recipe for `model` (configured, see `configure_model`) and the run's `options`,
    whose inputs are normalised with `mean` / `std`; what it computes on the training device
    (CAE's tokenizer) is placed on `device`. Changes nothing in the model."""
    return get_recipe(method).for_model(model, options, mean=mean, std=std, device=device)


__all__ = ["PretrainRecipe", "build_recipe", "configure_model", "get_recipe"]
