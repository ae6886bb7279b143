"""Named fine-tuning recipes (values and sources), flag overrides, lr scaling, model EMA, and the
MAE recipe end to end on digits with every augmentation and EMA on."""

import argparse
import json
import re

import numpy as np
import pytest
import torch
from conftest import save_tiny_mae
from safetensors.torch import load_file

from mim_hub.cli import main as cli
from mim_hub.commands.finetune import add_arguments, resolve_settings
from mim_hub.training.ema import EMA_FILE, EmaCallback, ModelEma
from mim_hub.training.finetune_recipes import LINEAR_PROBE_MAE, RECIPES, get_recipe, learning_rate, recipes_table


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--model", "m", "--output-dir", "o", *argv])


def test_the_issue_recipes_exist_with_their_values():
    required = {"mae-vit-base", "mae-vit-large", "mae-vit-huge", "simmim-swin-base-224", "simmim-vit-base", "cae-base", "convmae-base", "crate-base"}
    assert required <= set(RECIPES)
    b = get_recipe("mae-vit-base")
    assert {k: b.get(k) for k in ("effective_batch", "base_lr", "layer_decay", "weight_decay", "drop_path", "rand_augment", "reprob",
                                  "remode", "mixup", "cutmix", "mixup_switch_prob", "label_smoothing", "epochs", "warmup_epochs")} == {
        "effective_batch": 1024, "base_lr": 5e-4, "layer_decay": 0.65, "weight_decay": 0.05, "drop_path": 0.1,
        "rand_augment": "rand-m9-mstd0.5-inc1", "reprob": 0.25, "remode": "pixel", "mixup": 0.8, "cutmix": 1.0,
        "mixup_switch_prob": 0.5, "label_smoothing": 0.1, "epochs": 100, "warmup_epochs": 5}
    for name, drop_path in (("mae-vit-large", 0.2), ("mae-vit-huge", 0.3)):
        r = get_recipe(name)
        assert (r.get("epochs"), r.get("layer_decay"), r.get("drop_path"), r.get("base_lr"), r.get("effective_batch")) == (50, 0.75, drop_path, 1e-3, 1024)
    swin = get_recipe("simmim-swin-base-224")
    assert (swin.get("image_size"), swin.get("window_size"), swin.get("layer_decay"), swin.get("lr_rule")) == (224, 7, 0.9, "blr/512")
    cae = get_recipe("cae-base")
    assert (cae.get("base_lr"), cae.get("lr_rule"), cae.get("effective_batch")) == (8e-3, "absolute", 4096)
    assert LINEAR_PROBE_MAE["reported_vit_base"].value == 68.0 and "FINETUNE.md" in LINEAR_PROBE_MAE["reported_vit_base"].source
    assert LINEAR_PROBE_MAE["effective_batch"].value == 16384 and LINEAR_PROBE_MAE["weight_decay"].value == 0.0


def _numbers(text):
    return [float(x) for x in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]


def test_every_value_has_a_source_and_quoted_numbers_match():
    for recipe in RECIPES.values():
        assert recipe.release and recipe.rows()
        for key, value, source, verified in recipe.rows():
            assert source.strip(), f"{recipe.name}.{key} has no source"
            quoted = re.findall(r'"([^"]*)"', source) or re.findall(r"'([^']*)'", source)
            if verified and isinstance(value, (int, float)) and not isinstance(value, bool) and quoted and key != "effective_batch":
                # the quoted line of the original sets this very number (a value set by a default quotes none)
                numbers = [n for q in quoted for n in _numbers(q)]
                assert not numbers or any(value == pytest.approx(n) for n in numbers), (recipe.name, key, value, source)
        product = recipe.values["effective_batch"].source
        if recipe.values["effective_batch"].verified and "x" in product:
            factors = [n for n in _numbers(product.split(":", 1)[1].split(" (")[0]) if n > 1]
            assert np.prod(factors) == recipe.get("effective_batch"), (recipe.name, product)  # nodes x GPUs x batch (x accumulation)


def test_lr_rules():
    assert learning_rate("blr/256", 5e-4, 1024) == pytest.approx(2e-3)
    assert learning_rate("blr/512", 1.25e-3, 2048) == pytest.approx(5e-3)
    assert learning_rate("absolute", 8e-3, 64) == 8e-3
    with pytest.raises(ValueError):
        learning_rate("sqrt", 1.0, 1)


def test_flags_override_recipe_values_and_accumulation_reaches_the_effective_batch():
    settings = resolve_settings(parse("--recipe", "mae-vit-base"))
    assert settings["batch_size"] == 32 and settings["grad_accum"] == 32  # 32 x 32 x 1 process = 1024
    assert settings["mixup"] == 0.8 and settings["rand_augment"] == "rand-m9-mstd0.5-inc1" and settings["recipe"] == "mae-vit-base"
    settings = resolve_settings(parse("--recipe", "mae-vit-base", "--batch-size", "128", "--layer-decay", "0.5", "--mixup", "0",
                                      "--no-model-ema", "--rand-augment", "none"))
    assert settings["grad_accum"] == 8 and settings["layer_decay"] == 0.5 and settings["mixup"] == 0.0 and settings["model_ema"] is False
    assert settings["rand_augment"] == "none" and settings["cutmix"] == 1.0
    assert resolve_settings(parse("--recipe", "mae-vit-base", "--grad-accum", "2"))["grad_accum"] == 2
    plain = resolve_settings(parse())  # no recipe: the old defaults
    assert (plain["epochs"], plain["batch_size"], plain["base_lr"], plain["mixup"], plain["rand_augment"], plain["grad_accum"]) == (10, 64, 5e-4, 0.0, None, 1)


def test_unknown_recipe_is_refused_with_the_list(capsys):
    assert cli(["finetune", "--model", "nowhere", "--output-dir", "o", "--recipe", "mae-vit-tiny"]) == 2
    err = capsys.readouterr().err
    assert "unknown fine-tuning recipe 'mae-vit-tiny'" in err and "mae-vit-base" in err and "simmim-swin-base-224" in err


def test_zoo_prints_the_recipes(capsys):
    assert cli(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "recipe mae-vit-base" in out and "'--blr 5e-4'" in out and "LAYER_DECAY: 0.9" in out and "68.0" in out
    assert cli(["zoo", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    mae = next(r for r in rows if r["method"] == "mae")
    assert {r["recipe"] for r in mae["finetune_recipes"]} == {"mae-vit-base", "mae-vit-large", "mae-vit-huge"}
    assert "| mae-vit-base | mae | base_lr |" in recipes_table("markdown")


def test_model_ema_follows_timm_model_ema_v2():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = ModelEma(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))  # running stats move, counter goes to 1
    ema.update(model)
    now = model.state_dict()
    for key, value in ema.module.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.9 * start[key] + 0.1 * now[key]), key
        else:
            assert torch.equal(value, now[key])
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def _train(model, steps, ema, callback=None, start=0, folder=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(start, steps):
        x = torch.randn(4, 3, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
        ema.update(model)
    return optimizer


def test_ema_resumed_from_a_checkpoint_equals_the_uninterrupted_one(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    ema = ModelEma(model, decay=0.8)
    _train(model, 6, ema)
    uninterrupted = ema.state_dict()

    # interrupted after 3 steps: the Trainer saves checkpoint-3 and the callback writes the EMA into it
    model2 = torch.nn.Linear(3, 2)
    model2.load_state_dict(initial)
    ema2 = ModelEma(model2, decay=0.8)
    _train(model2, 3, ema2)
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    state = argparse.Namespace(global_step=3, is_world_process_zero=True)
    EmaCallback(ema2).on_save(argparse.Namespace(output_dir=str(tmp_path)), state, None)
    assert (folder / EMA_FILE).exists()
    weights = {k: v.clone() for k, v in model2.state_dict().items()}

    # resumed: a fresh process builds the EMA from the resumed weights; the callback reads the saved one back
    model3 = torch.nn.Linear(3, 2)
    model3.load_state_dict(weights)
    ema3 = ModelEma(model3, decay=0.8)
    EmaCallback(ema3, resume_from=str(folder)).on_train_begin(None, state, None)
    _train(model3, 6, ema3, start=3)
    for key, value in uninterrupted.items():
        assert torch.equal(ema3.state_dict()[key], value), key
    with pytest.raises(FileNotFoundError):
        ModelEma(model3).load(str(tmp_path))


def test_mae_recipe_end_to_end_on_digits_with_every_augmentation_and_ema(tmp_path, capsys):
    folder = save_tiny_mae(tmp_path / "tiny", num_hidden_layers=2, norm_pix_loss=True)
    out = tmp_path / "ft"
    # the ViT-B recipe on the tiny model: everything from the recipe but the length, the batch and the EMA switch
    assert cli(["finetune", "--recipe", "mae-vit-base", "--model", str(folder), "--output-dir", str(out), "--dataset", "digits",
                "--epochs", "1", "--batch-size", "64", "--grad-accum", "1", "--model-ema", "--model-ema-decay", "0.9"]) == 0
    printed = capsys.readouterr().out
    assert "eval accuracy:" in printed and "eval accuracy (EMA):" in printed
    card = (out / "README.md").read_text()
    assert "--recipe mae-vit-base" in card and "RandAugment rand-m9-mstd0.5-inc1" in card and "MixUp 0.8" in card and "CutMix 1.0" in card
    assert "random erasing 0.25" in card
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints and (checkpoints[-1] / EMA_FILE).exists()
    ema_model = out / "ema"
    assert (ema_model / "config.json").exists()
    saved = load_file(str(ema_model / "model.safetensors"))
    final = load_file(str(out / "model.safetensors"))
    assert saved.keys() == final.keys() and any(not torch.equal(saved[k], final[k]) for k in saved)
    assert torch.equal(load_file(str(checkpoints[-1] / EMA_FILE))["head.weight"], saved["head.weight"])


@pytest.mark.slow
def test_crate_recipe_fine_tunes_a_model_without_drop_path(tmp_path):
    from mim_hub import CrateMAEConfig, CrateMAEForPreTraining, CrateMAEImageProcessor
    from mim_hub.data import load_digits_dataset
    from mim_hub.training.finetune import finetune

    folder = tmp_path / "crate"
    torch.manual_seed(0)
    CrateMAEForPreTraining(CrateMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                          decoder_num_hidden_layers=1, decoder_num_attention_heads=2)).save_pretrained(folder)
    CrateMAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(folder)
    train, test = load_digits_dataset("train").subset(range(64)), load_digits_dataset("test").subset(range(32))
    _, metrics = finetune(str(folder), train, test, output_dir=str(tmp_path / "ft"), epochs=1, batch_size=32, log_to_console=False)
    assert 0 <= metrics["eval_accuracy"] <= 1
