"""HPM: parity with the original code (online model, EMA teacher, classifier), the hard-patch masks
bit for bit, conversion of every checkpoint kind, the public surface, the pre-training recipe."""

import argparse
import os

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForPreTraining

import mim_hub
from mim_hub import HPMConfig, HPMForImageClassification, HPMForPreTraining, HPMModel
from mim_hub.conversion import CheckpointError, companion_models, convert_checkpoint
from mim_hub.masking import HardPatchMaskGenerator, hard_patch_count, random_masking

from conftest import assert_close, load_fixture
from reference_hpm import hpm_pretrain, random_hpm_state

TINY = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64)


def _decoder_order(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Original patch order -> the original decoder's [visible ascending | masked ascending]."""
    batch = values.shape[0]
    rest = values.shape[2:]
    return torch.cat([values[~mask].reshape(batch, -1, *rest), values[mask].reshape(batch, -1, *rest)], 1)


# ---- parity with the original code's outputs (golden fixtures) ----

def test_pretrain_fixture_parity_every_output_and_loss_term():
    path, inputs, expected, meta = load_fixture("hpm", "pretrain-full")
    model, _ = convert_checkpoint("hpm", path, meta["bars_overrides"])
    assert isinstance(model, HPMForPreTraining) and model.config.loss_prediction_objective == "relative"
    x, mask = inputs["pixel_values"], inputs["bool_masked_pos"]
    with torch.no_grad():
        out = model(x, bool_masked_pos=mask)
        unmasked = model(x, bool_masked_pos=torch.zeros_like(mask))
    assert_close(out.loss, expected["loss"], "loss")
    assert_close(out.reconstruction_loss, expected["loss_rec"], "loss_rec")
    assert_close(out.loss_prediction_loss, expected["loss_learn"], "loss_learn")
    assert_close(out.logits, expected["pred"], "pred (original order)")
    assert_close(_decoder_order(out.logits, mask), expected["pix_pred"], "pix_pred (decoder order)")
    assert_close(out.predicted_loss, expected["loss_pred_original_order"], "loss_pred")
    assert_close(_decoder_order(out.predicted_loss, mask), expected["loss_pred"], "loss_pred (decoder order)")
    assert torch.equal(out.mask, expected["mask"].float())
    assert_close(out.last_hidden_state, expected["latent"], "latent: cls + visible patches ascending")
    # every patch visible: no loss, the encoder in patch order, the predictor's scores
    assert unmasked.loss is None and unmasked.mask.sum() == 0
    assert_close(unmasked.last_hidden_state, expected["latent_full"], "latent_full")
    assert_close(unmasked.predicted_loss, expected["loss_pred_full"], "loss_pred_full")
    with torch.no_grad():
        assert_close(model.predict_patch_losses(x), expected["loss_pred_full"], "predict_patch_losses")
        assert_close(model.mae(x).last_hidden_state, expected["latent_full"], "base model")
    # the absolute objective (an option) and the random warm-up mask
    absolute = HPMForPreTraining(HPMConfig(**{**model.config.to_dict(), "loss_prediction_objective": "absolute"})).eval()
    absolute.load_state_dict(model.state_dict())
    warmup = expected["warmup_mask"].bool()
    with torch.no_grad():
        assert_close(absolute(x, bool_masked_pos=mask).loss_prediction_loss, expected["loss_learn_absolute"], "loss_learn_absolute")
        early = model(x, bool_masked_pos=warmup)
    assert_close(early.loss, expected["warmup_loss"], "warmup_loss")
    assert_close(early.reconstruction_loss, expected["warmup_loss_rec"], "warmup_loss_rec")
    assert_close(early.loss_prediction_loss, expected["warmup_loss_learn"], "warmup_loss_learn")
    assert_close(_decoder_order(early.logits, warmup), expected["warmup_pix_pred"], "warmup_pix_pred")


def test_ema_teacher_converts_and_its_predictions_choose_the_originals_mask():
    """The teacher (`ema_state_dict`) is converted beside the model; its predicted losses on the
    unmasked image, through the mask source with the original's epoch and numpy seed, give the
    original's mask and ids_restore; the model given that noise returns them (and every output)."""
    path, inputs, expected, meta = load_fixture("hpm", "pretrain-full")
    model, _ = convert_checkpoint("hpm", path, meta["bars_overrides"])
    teacher, _ = companion_models("hpm", path, meta["bars_overrides"])["ema"]
    assert isinstance(teacher, HPMForPreTraining)
    x = inputs["pixel_values"]
    with torch.no_grad():
        scores = teacher.predict_patch_losses(x)
        assert_close(teacher.mae(x).last_hidden_state, expected["ema_latent_full"], "ema_latent_full")
    assert_close(scores, expected["ema_loss_pred_full"], "ema_loss_pred_full")
    assert not torch.allclose(scores, model.predict_patch_losses(x).detach())  # the teacher, not the online model
    generator = HardPatchMaskGenerator(float(inputs["mask_ratio"]), int(inputs["total_epochs"]))
    noise = generator(scores, int(inputs["epoch"]), rng=np.random.RandomState(int(inputs["np_seed"])))
    with torch.no_grad():
        out = model(x, noise=noise, mask_ratio=float(inputs["mask_ratio"]))
    assert torch.equal(out.mask, expected["mask"].float()) and torch.equal(out.ids_restore, expected["ids_restore"])
    assert torch.equal(out.mask.bool(), inputs["bool_masked_pos"])
    assert_close(out.loss, expected["loss"], "loss")
    assert_close(out.logits, expected["pred"], "pred")
    # the same noise and the same mask together: accepted; a mask that disagrees: refused
    with torch.no_grad():
        both = model(x, noise=noise, bool_masked_pos=inputs["bool_masked_pos"])
    assert torch.equal(both.ids_restore, expected["ids_restore"])
    with pytest.raises(ValueError, match="different masks"):
        model(x, noise=noise, bool_masked_pos=expected["warmup_mask"].bool())


def test_masks_reproduce_the_original_bit_for_bit():
    """fixture_masks.py's check for HPM: `generate_mask` from the recorded teacher scores, epoch,
    total epochs and shuffle (numpy seed, or the recorded shuffle as noise), and the warm-up
    (random) branch from the recorded torch seed."""
    _, inputs, expected, _ = load_fixture("hpm", "pretrain-full")
    ratio, total, epoch = float(inputs["mask_ratio"]), int(inputs["total_epochs"]), int(inputs["epoch"])
    generator = HardPatchMaskGenerator(ratio, total)
    scores = expected["ema_loss_pred_full"]
    assert generator.num_hard(64, epoch) == int(expected["num_hard"]) == hard_patch_count(64, ratio, epoch, total)
    assert int(64 * (1 - ratio)) == int(expected["len_keep"])
    # numpy's global RNG after np.random.seed(s) is RandomState(s)
    noise = generator(scores, epoch, rng=np.random.RandomState(int(inputs["np_seed"])))
    assert torch.equal(torch.argsort(noise, dim=1), expected["ids_shuffle"])
    ids_keep, mask, ids_restore = random_masking(noise, ratio)
    assert torch.equal(mask, expected["mask"].float()) and torch.equal(ids_restore, expected["ids_restore"])
    np.random.seed(int(inputs["np_seed"]))  # the module itself, as the original calls it
    assert torch.equal(generator(scores, epoch), noise)
    # the recorded shuffle given as noise (what training draws per sample)
    order = torch.full((2, 64), 1e6)
    for row in range(2):
        order[row, inputs["rest_shuffled"][row]] = torch.arange(50, dtype=torch.float32)
    assert torch.equal(torch.argsort(generator(scores, epoch, noise=order), dim=1), expected["ids_shuffle"])
    # warm-up: num_hard rounds to 0, the original's argsort(torch.randn(B, L))
    warmup_epoch = int(inputs["warmup_epoch"])
    assert generator.num_hard(64, warmup_epoch) == 0
    drawn = generator(scores, warmup_epoch, generator=torch.Generator().manual_seed(int(inputs["warmup_torch_seed"])))
    assert torch.equal(drawn, inputs["warmup_noise"])
    _, mask, ids_restore = random_masking(drawn, ratio)
    assert torch.equal(mask, expected["warmup_mask"].float()) and torch.equal(ids_restore, expected["warmup_ids_restore"])


@pytest.mark.parametrize("length,ratio,total", [(196, 0.75, 800), (64, 0.5, 10), (49, 0.6, 3), (256, 0.9, 1600)])
def test_hard_patches_are_masked_and_their_share_rises_over_training(length, ratio, total):
    generator = HardPatchMaskGenerator(ratio, total)
    keep = int(length * (1 - ratio))
    scores = torch.rand(3, length, generator=torch.Generator().manual_seed(length))
    previous = -1
    for epoch in sorted({0, total // 4, total // 2, total - 1}):
        hard = generator.num_hard(length, epoch)
        assert hard == int((length - keep) * (epoch + 1) / total * 0.5) and hard >= previous
        previous = hard
        noise = generator(scores, epoch, noise=torch.rand(3, length, generator=torch.Generator().manual_seed(epoch)))
        _, mask, _ = random_masking(noise, ratio)
        assert (mask.sum(1) == length - keep).all()
        hardest = torch.argsort(scores, dim=1)[:, length - hard:]
        assert mask.gather(1, hardest).bool().all()  # the hardest are always masked
    assert previous == int((length - keep) * 0.5)  # half the masked set at the last epoch
    with pytest.raises(ValueError, match="keeps no patch"):
        HardPatchMaskGenerator(0.99, 10)(torch.rand(1, 16), 5)
    with pytest.raises(ValueError, match="noise or rng"):
        generator(scores, 0, noise=torch.rand(3, length), rng=np.random.RandomState(0))


def test_finetune_fixture_parity():
    path, inputs, expected, meta = load_fixture("hpm", "finetune-classifier")
    model, processor = convert_checkpoint("hpm", path, meta["bars_overrides"])
    assert isinstance(model, HPMForImageClassification) and model.config.use_mean_pooling and model.config.num_labels == 5
    with torch.no_grad():
        logits = model(inputs["pixel_values"]).logits
        encoded = model.mae(inputs["pixel_values"], output_hidden_states=True)
    assert_close(logits, expected["logits"], "logits")
    assert_close(encoded.pooler_output, expected["features"], "features")
    assert_close(encoded.hidden_states[-1], expected["hidden_states_before_pool"], "blocks output")
    assert processor.crop_size["height"] == 32


def test_reference_matches_fixture():
    """The functional reference used below reproduces the original's numbers too."""
    path, inputs, expected, _ = load_fixture("hpm", "pretrain-full")
    sd = {k[len("module."):]: v for k, v in torch.load(path, weights_only=True)["state_dict"].items()}
    loss, loss_rec, loss_learn, pix_pred, loss_pred, latent = hpm_pretrain(sd, inputs["pixel_values"], inputs["bool_masked_pos"], 4, 4)
    assert_close(loss, expected["loss"]) and assert_close(pix_pred, expected["pix_pred"]) and assert_close(loss_pred, expected["loss_pred"])


# ---- other configurations than the fixtures' ----

@pytest.mark.parametrize(
    "kw,heads,dec_heads,ratio,norm_pix,objective,prefix",
    [
        (dict(dim=48, depth=3, dec_dim=32, dec_depth=2, patch=8, img=32), 3, 2, 0.6, True, "relative", ""),
        (dict(dim=64, depth=1, dec_dim=64, dec_depth=1, patch=4, img=16), 8, 1, 0.5, False, "absolute", "module."),
        (dict(dim=32, depth=2, dec_dim=16, dec_depth=3, patch=2, img=8), 2, 4, 0.9, True, "relative", "module."),
    ],
)
def test_pretrain_any_configuration(tmp_path, kw, heads, dec_heads, ratio, norm_pix, objective, prefix):
    """Other sizes, depths, heads, mask ratios, norm_pix_loss and both objectives, in a multi-GPU
    (`module.`) or single-GPU training checkpoint, against the functional reference."""
    sd = random_hpm_state(**kw, seed=3)
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 5, "state_dict": {prefix + k: v for k, v in sd.items()}, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "model": "mae_vit_x", "ema_state_dict": sd, "loss_scaler": {"scale": 65536.0}}, path)
    overrides = dict(num_attention_heads=heads, decoder_num_attention_heads=dec_heads, mask_ratio=ratio, norm_pix_loss=norm_pix,
                     loss_prediction_objective=objective)
    model, _ = convert_checkpoint("hpm", str(path), overrides)
    length = (kw["img"] // kw["patch"]) ** 2
    img = torch.randn(2, 3, kw["img"], kw["img"])
    noise = torch.rand(2, length)
    _, mask, _ = random_masking(noise, ratio)
    mask = mask.bool()
    with torch.no_grad():
        out = model(img, noise=noise)
    loss, loss_rec, loss_learn, pix_pred, loss_pred, latent = hpm_pretrain(sd, img, mask, heads, dec_heads, norm_pix, objective == "relative")
    assert torch.equal(out.mask.bool(), mask)
    assert_close(out.loss, loss, "loss")
    assert_close(out.reconstruction_loss, loss_rec, "loss_rec")
    assert_close(out.loss_prediction_loss, loss_learn, "loss_learn")
    assert_close(_decoder_order(out.logits, mask), pix_pred, "pix_pred")
    assert_close(_decoder_order(out.predicted_loss, mask), loss_pred, "loss_pred")
    assert_close(out.last_hidden_state, latent, "latent")


def test_every_kind_converts_and_strict_keys_are_enforced(tmp_path):
    sd = random_hpm_state(seed=1)
    encoder = {k: v for k, v in sd.items() if not (k.startswith("decoder") or k == "mask_token")}
    torch.save(encoder, tmp_path / "encoder.pth")  # a bare state dict
    model, _ = convert_checkpoint("hpm", str(tmp_path / "encoder.pth"), {"num_attention_heads": 4})
    assert type(model) is HPMModel and model(torch.randn(1, 3, 32, 32)).last_hidden_state.shape == (1, 65, 64)
    assert companion_models("hpm", str(tmp_path / "encoder.pth"), {}) == {}
    mae_only = {k: v for k, v in sd.items() if "losspred" not in k}
    torch.save({"state_dict": mae_only}, tmp_path / "mae.pth")
    with pytest.raises(CheckpointError, match="no loss predictor"):
        convert_checkpoint("hpm", str(tmp_path / "mae.pth"), {"num_attention_heads": 4})
    torch.save({"state_dict": {**sd, "vis_mask_token": torch.zeros(1, 1, 64)}}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="unexpected keys.*vis_mask_token"):
        convert_checkpoint("hpm", str(tmp_path / "extra.pth"), {"num_attention_heads": 4})
    torch.save({"state_dict": {k: v for k, v in sd.items() if k != "decoder_norm_losspred.bias"}}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="missing keys.*decoder.loss_norm.bias"):
        convert_checkpoint("hpm", str(tmp_path / "missing.pth"), {"num_attention_heads": 4})
    with pytest.raises(ValueError, match="does not have"):
        convert_checkpoint("hpm", str(tmp_path / "encoder.pth"), {"num_attention_heads": 4, "ema": True})


def test_cli_writes_the_model_and_its_teacher_and_refuses_bad_files(tmp_path, capsys):
    from mim_hub.cli import main

    path, inputs, expected, meta = load_fixture("hpm", "pretrain-full")
    out = tmp_path / "converted"
    args = ["convert", "--method", "hpm", "--checkpoint", path, "--output", str(out),
            "--config", '{"num_attention_heads": 4, "decoder_num_attention_heads": 4}']
    assert main(args) == 0
    assert isinstance(AutoConfig.from_pretrained(out), HPMConfig)
    online = AutoModelForPreTraining.from_pretrained(out).eval()
    teacher = AutoModelForPreTraining.from_pretrained(out / "ema").eval()
    assert type(online) is HPMForPreTraining and (out / "ema" / "README.md").is_file() and (out / "ema" / "preprocessor_config.json").is_file()
    with torch.no_grad():
        assert_close(teacher.predict_patch_losses(inputs["pixel_values"]), expected["ema_loss_pred_full"], "ema via the CLI")
        assert_close(online(inputs["pixel_values"], bool_masked_pos=inputs["bool_masked_pos"]).loss, expected["loss"], "loss via the CLI")
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"module.cls_token": torch.zeros(1, 1, 8)}, "ema_state_dict": {}}, bad)
    capsys.readouterr()
    assert main(args[:4] + [str(bad), "--output", str(tmp_path / "nothing")]) == 2
    assert "missing keys" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


# ---- the public surface ----

def test_round_trip_auto_classes_and_outputs(tmp_path):
    model = HPMForPreTraining(HPMConfig(**TINY))
    model.save_pretrained(tmp_path / "m")
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path / "m")) is HPMForPreTraining
    base = AutoModel.from_pretrained(tmp_path / "m")
    assert type(base) is HPMModel
    assert type(AutoModelForImageClassification.from_pretrained(tmp_path / "m", num_labels=2)) is HPMForImageClassification
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, :48], mask[1, 16:] = True, True
    encoded = base(x, bool_masked_pos=mask)
    assert encoded.last_hidden_state.shape == (2, 17, 32) and torch.equal(encoded.mask.bool(), mask)
    assert base(x).last_hidden_state.shape == (2, 65, 32) and base(x).mask is None
    out = model(x, bool_masked_pos=mask, output_hidden_states=True, output_attentions=True)
    # the encoder's stack, then the reconstructor's and the loss predictor's in their own fields (each with its input)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert len(out.decoder_hidden_states) == 2 and len(out.decoder_attentions) == 1
    assert len(out.loss_predictor_hidden_states) == 2 and len(out.loss_predictor_attentions) == 1
    out.loss.backward()  # both terms train: every parameter but the fixed tables gets a gradient
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    drawn = model(x)  # no mask given: uniform noise, MAE's ratio
    assert (drawn.mask.sum(1) == 48).all() and drawn.ids_restore.shape == (2, 64)
    for bad, match in [(torch.rand(2, 64), "must be boolean"), (torch.zeros(2, 63, dtype=torch.bool), "batch, num_patches"),
                       (torch.ones(2, 64, dtype=torch.bool), "masks all"), (torch.arange(64).expand(2, 64) < torch.tensor([[3], [4]]), "same number")]:
        with pytest.raises(ValueError, match=match):
            model(x, bool_masked_pos=bad)


def test_reconstruction_pipeline(tmp_path):
    from mim_hub.reconstruction import reconstruct

    model = HPMForPreTraining(HPMConfig(**TINY, norm_pix_loss=True)).eval()
    result = reconstruct(model, torch.randn(2, 3, 32, 32), seed=[1, 2])
    assert result.reconstruction.shape == (2, 3, 32, 32) and (result.mask.sum(1) == 48).all() and torch.isfinite(result.loss).all()


# ---- the pre-training recipe: hard-patch masks from the EMA teacher ----

def test_recipe_draws_hard_patch_masks_from_the_teacher():
    from mim_hub.training.recipes import build_recipe

    torch.manual_seed(0)
    model = HPMForPreTraining(HPMConfig(**TINY))
    recipe = build_recipe("hpm", model, argparse.Namespace())
    rng = np.random.default_rng(0)
    samples = [{"pixel_values": torch.randn(3, 32, 32), **recipe.sample_inputs(rng)} for _ in range(4)]
    batch = recipe.collate(samples)
    state = recipe.training_state(model, total_epochs=100)
    late = state.model_inputs(recipe.model_inputs(batch), epoch=99)
    assert set(late) == {"pixel_values", "noise"}
    with torch.no_grad():
        scores = state.teacher.predict_patch_losses(batch["pixel_values"])
    _, mask, _ = random_masking(late["noise"], 0.75)
    hardest = torch.argsort(scores, dim=1)[:, 64 - 24:]  # (64 - 16) * 0.5 at the last epoch
    assert mask.gather(1, hardest).bool().all() and (mask.sum(1) == 48).all()
    early = state.model_inputs(recipe.model_inputs(batch), epoch=0)
    assert torch.equal(early["noise"], batch["noise"])  # no hard patch yet: the sample's own random masking
    assert torch.isfinite(model(**late).loss)
    # the teacher follows the model after each step, with HPM's decay schedule
    assert state.decay(0) == 0.999 and state.decay(50) == pytest.approx(0.99945) and state.decay(150) == 0.9999
    before = state.teacher.decoder.loss_pred.weight.clone()
    with torch.no_grad():
        model.decoder.loss_pred.weight.add_(1.0)
    state.step_end(model, epoch=0)
    assert torch.allclose(state.teacher.decoder.loss_pred.weight, before + 1e-3 * 1.0, atol=1e-6)


def test_pretrain_command_resumes_to_the_uninterrupted_model_and_teacher(tmp_path):
    """`mim-hub pretrain --method hpm`: hard-patch masks from the teacher from the first step (a
    run shorter than an epoch is at the schedule's end), the teacher in every checkpoint, and a
    resumed run ends with the same model and teacher as the uninterrupted one."""
    import shutil

    from safetensors.torch import load_file

    from mim_hub.cli import main

    folder = tmp_path / "tiny"
    torch.manual_seed(0)
    HPMForPreTraining(HPMConfig(**{**TINY, "patch_size": 8, "num_hidden_layers": 1})).save_pretrained(folder)

    def pretrain(out, *extra, status=0):
        assert main(["pretrain", "--model", str(folder), "--output-dir", str(out), "--dataset", "digits", "--batch-size", "16",
                     "--max-steps", "4", "--save-every", "2", "--keep-checkpoints", "5", "--lr", "1e-3", "--num-workers", "0", *extra]) == status

    full = tmp_path / "full"
    pretrain(full)
    checkpoint = full / "checkpoints" / "step_00000002"
    assert (checkpoint / "hpm_teacher.safetensors").exists()
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoint, resumed / "checkpoints" / checkpoint.name)
    pretrain(resumed, "--resume")
    for name in ("model.safetensors", "ema/model.safetensors"):
        expected, got = load_file(str(full / name)), load_file(str(resumed / name))
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), (name, key)
    teacher, model = load_file(str(full / "ema" / "model.safetensors")), load_file(str(full / "model.safetensors"))
    assert any(not torch.equal(teacher[k], model[k]) for k in model)  # the teacher lags behind the model
    assert type(AutoModelForPreTraining.from_pretrained(full / "ema")) is HPMForPreTraining
    pretrain(tmp_path / "ema-twice", "--model-ema", status=2)  # HPM keeps its own EMA (a clear error, exit code 2)
    assert not (tmp_path / "ema-twice" / "model.safetensors").exists()


def test_a_run_continuing_a_converted_folder_starts_its_teacher_from_its_ema(tmp_path):
    """`mim-hub convert` writes an original checkpoint's teacher to `ema/`; pre-training that
    folder continues with it (and without one, the teacher starts as a copy of the model)."""
    from mim_hub.training.recipes import build_recipe

    torch.manual_seed(0)
    HPMForPreTraining(HPMConfig(**TINY)).save_pretrained(tmp_path / "m")
    teacher = HPMForPreTraining(HPMConfig(**TINY))
    teacher.save_pretrained(tmp_path / "m" / "ema")
    model = HPMForPreTraining.from_pretrained(tmp_path / "m")
    state = build_recipe("hpm", model, None).training_state(model, total_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(state.teacher.state_dict().values(), teacher.state_dict().values()))
    assert not torch.equal(state.teacher.decoder.loss_pred.weight, model.decoder.loss_pred.weight)
    fresh = HPMForPreTraining(HPMConfig(**TINY))
    state = build_recipe("hpm", fresh, None).training_state(fresh, total_epochs=1)
    assert torch.equal(state.teacher.decoder.loss_pred.weight, fresh.decoder.loss_pred.weight)


@pytest.mark.parametrize("model_class", [HPMModel, HPMForPreTraining])
def test_every_class_takes_a_mask_and_noise_that_agree_and_refuses_ones_that_do_not(model_class):
    torch.manual_seed(0)
    model = model_class(HPMConfig(**TINY)).eval()
    pixels, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    agreeing = random_masking(noise, model.config.mask_ratio)[1].bool()
    with torch.no_grad():
        alone, both = model(pixels, bool_masked_pos=agreeing), model(pixels, bool_masked_pos=agreeing, noise=noise)
    assert torch.equal(alone.last_hidden_state if model_class is HPMModel else alone.logits,
                       both.last_hidden_state if model_class is HPMModel else both.logits)
    with pytest.raises(ValueError, match="bool_masked_pos and noise give different masks"):
        model(pixels, bool_masked_pos=agreeing.roll(1, dims=1), noise=noise)
