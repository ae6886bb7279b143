"""MAE: parity with the original code, conversion of every checkpoint kind, the public surface."""

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoModelForPreTraining

import mim_hub
from mim_hub import MAEConfig, MAEForImageClassification, MAEForPreTraining, MAEImageProcessor, MAEModel
from mim_hub.conversion import CheckpointError, convert, convert_checkpoint
from mim_hub.conversion.heads import GuessedHeadsWarning

from conftest import assert_close, load_fixture
from reference_mae import mae_classifier, mae_pretrain, random_original_state

TINY = dict(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=4, decoder_intermediate_size=64)


# ---- parity with the original code's outputs (golden fixtures) ----

def test_pretrain_fixture_parity():
    path, inputs, expected, meta = load_fixture("mae", "pretrain-full")
    model, _ = convert_checkpoint("mae", path, meta["bars_overrides"])
    assert isinstance(model, MAEForPreTraining) and model.config.norm_pix_loss
    with torch.no_grad():
        out = model(inputs["pixel_values"], noise=inputs["noise"])
    assert_close(out.loss, expected["loss"], "loss")
    assert_close(out.logits, expected["pred"], "pred")
    assert torch.equal(out.mask, expected["mask"].float())
    assert torch.equal(out.ids_restore, expected["ids_restore"])
    assert_close(out.last_hidden_state, expected["latent"], "latent")


def test_finetune_fixture_parity():
    path, inputs, expected, meta = load_fixture("mae", "finetune-classifier")
    model, _ = convert_checkpoint("mae", path, meta["bars_overrides"])
    assert isinstance(model, MAEForImageClassification) and model.config.use_mean_pooling
    with torch.no_grad():
        logits = model(inputs["pixel_values"]).logits
        encoded = model.mae(inputs["pixel_values"], output_hidden_states=True)
    assert_close(logits, expected["logits"], "logits")
    assert_close(encoded.pooler_output, expected["features"], "features")
    assert_close(encoded.hidden_states[-1], expected["hidden_states_before_pool"], "blocks output")


def test_reference_matches_fixture():
    """The functional reference used below reproduces the original's numbers too."""
    path, inputs, expected, meta = load_fixture("mae", "pretrain-full")
    sd = torch.load(path, weights_only=True)["model"]
    loss, pred, mask, latent = mae_pretrain(sd, inputs["pixel_values"], inputs["noise"], 0.75, 4, 4, True)
    assert_close(loss, expected["loss"]) and assert_close(pred, expected["pred"])


# ---- other configurations than the fixtures' ----

@pytest.mark.parametrize(
    "kw,heads,dec_heads,ratio,norm_pix",
    [
        (dict(dim=48, depth=3, dec_dim=32, dec_depth=2, patch=8, img=32), 3, 2, 0.6, False),
        (dict(dim=64, depth=1, dec_dim=64, dec_depth=1, patch=4, img=16, mlp=2), 8, 1, 0.9, True),
        (dict(dim=32, depth=2, dec_dim=16, dec_depth=1, patch=2, img=8, chans=1), 2, 4, 0.5, True),
    ],
)
def test_pretrain_any_configuration(tmp_path, kw, heads, dec_heads, ratio, norm_pix):
    sd = random_original_state(**kw, seed=3)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd, "epoch": 3}, path)
    model, _ = convert_checkpoint("mae", str(path), dict(num_attention_heads=heads, decoder_num_attention_heads=dec_heads, mask_ratio=ratio, norm_pix_loss=norm_pix))
    img = torch.randn(2, kw.get("chans", 3), kw["img"], kw["img"])
    noise = torch.rand(2, (kw["img"] // kw["patch"]) ** 2)
    with torch.no_grad():
        out = model(img, noise=noise)
    loss, pred, mask, latent = mae_pretrain(sd, img, noise, ratio, heads, dec_heads, norm_pix)
    assert_close(out.loss, loss, "loss")
    assert_close(out.logits, pred, "pred")
    assert torch.equal(out.mask, mask)
    assert_close(out.last_hidden_state, latent, "latent")


@pytest.mark.parametrize("global_pool", [True, False])
def test_classifier_any_configuration(tmp_path, global_pool):
    sd = random_original_state(dim=96, depth=2, num_classes=7, global_pool=global_pool, patch=8, img=32, seed=5)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd}, path)
    model, _ = convert_checkpoint("mae", str(path), {"num_attention_heads": 6})
    assert model.config.use_mean_pooling is global_pool and model.config.num_labels == 7
    img = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert_close(model(img).logits, mae_classifier(sd, img, 6), "logits")


def test_encoder_only_checkpoint_with_args_namespace(tmp_path):
    """`mae_pretrain_vit_*.pth`-style encoder, saved with the pickled argparse.Namespace of training."""
    sd = random_original_state(dim=64, depth=2, seed=1)
    path = tmp_path / "ckpt.pth"
    args = argparse.Namespace(model="mae_vit_base_patch16", norm_pix_loss=True, mask_ratio=0.6, input_size=32)
    torch.save({"model": sd, "args": args, "epoch": 1}, path)
    model, processor = convert_checkpoint("mae", str(path), {"num_attention_heads": 4})
    assert type(model) is MAEModel
    assert model.config.norm_pix_loss is True and model.config.mask_ratio == 0.6
    out = model(torch.randn(1, 3, 32, 32))
    assert out.last_hidden_state.shape == (1, 65, 64)
    assert processor.crop_size["height"] == 32


def test_default_heads_are_the_released_ones(tmp_path):
    sd = random_original_state(dim=1024, depth=1, mlp=1, img=16, patch=16, seed=0)
    path = tmp_path / "l.pth"
    torch.save({"model": sd}, path)
    model, _ = convert_checkpoint("mae", str(path), {})
    assert model.config.num_attention_heads == 16  # ViT-L
    sd = random_original_state(dim=128, depth=1, mlp=1, img=16, patch=16, seed=0)
    torch.save({"model": sd}, path)
    with pytest.warns(GuessedHeadsWarning, match=r"guessed 2 .*--config '\{\"num_attention_heads\": N\}'"):
        assert convert_checkpoint("mae", str(path), {})[0].config.num_attention_heads == 2  # 128 // 64, said out loud


# ---- command line ----

@pytest.mark.slow
def test_cli_convert_then_auto_load(tmp_path):
    path, inputs, expected, meta = load_fixture("mae", "pretrain-full")
    out = tmp_path / "converted"
    cmd = [sys.executable, "-m", "mim_hub", "convert", "--method", "mae", "--checkpoint", path, "--output", str(out),
           "--config", '{"num_attention_heads": 4, "decoder_num_attention_heads": 4, "norm_pix_loss": true}']
    subprocess.run(cmd, check=True, capture_output=True)
    assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert AutoConfig.from_pretrained(out).architectures == ["MAEForPreTraining"]
    model = AutoModelForPreTraining.from_pretrained(out).eval()
    with torch.no_grad():
        assert_close(model(inputs["pixel_values"], noise=inputs["noise"]).loss, expected["loss"])
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "facebookresearch/mae" in card
    assert isinstance(AutoImageProcessor.from_pretrained(out), MAEImageProcessor)


def test_cli_refuses_bad_checkpoint_and_writes_nothing(tmp_path):
    sd = random_original_state(dim=64, depth=1, seed=0)
    sd["blocks.0.extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "mim_hub", "convert", "--method", "mae", "--checkpoint", str(path), "--output", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "unexpected keys" in proc.stderr and "blocks.0.extra.weight" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and os.listdir(tmp_path) == ["bad.pth"]


# ---- errors ----

def test_missing_keys_are_named(tmp_path):
    sd = random_original_state(dim=64, depth=2, num_classes=3, seed=0)
    del sd["blocks.1.mlp.fc2.bias"]
    path = tmp_path / "c.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match=r"missing keys.*encoder\.layers\.1\.mlp\.fc2\.bias"):
        convert_checkpoint("mae", str(path), {"num_attention_heads": 4})


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/mim_hub_pwned_mae_test",))


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = "/tmp/mim_hub_pwned_mae_test"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth"
    torch.save({"model": random_original_state(dim=32, depth=1), "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load.*system"):
        convert(method="mae", checkpoint=str(path), output=str(tmp_path / "out"))
    assert not os.path.exists(marker)
    assert not (tmp_path / "out").exists()


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth"):
        convert_checkpoint("mae", str(path), {})


def test_bad_inputs_get_clear_errors():
    model = MAEModel(MAEConfig(**TINY)).eval()
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        model(torch.randn(1, 3, 30, 30), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="noise"):
        model(torch.randn(1, 3, 32, 32), noise=torch.rand(1, 10))


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(image_size=30), "patch_size"),
        (dict(hidden_size=66, num_attention_heads=4), "num_attention_heads"),
        (dict(mask_ratio=1.0), "mask_ratio"),
        (dict(decoder_hidden_size=30, decoder_num_attention_heads=4), "decoder_num_attention_heads"),
    ],
)
def test_config_refuses_impossible_combinations(bad, match):
    with pytest.raises(ValueError, match=match):
        MAEConfig(**{**TINY, **bad})


# ---- the public surface ----

def test_no_mask_encodes_every_patch_in_order():
    """Unlike transformers' ViTMAE, no shuffling without a mask: equal to ascending noise at ratio 0."""
    model = MAEForPreTraining(MAEConfig(**TINY)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model.mae(x).last_hidden_state
        ordered = model.mae(x, noise=torch.arange(64.0).expand(2, -1), mask_ratio=0.0).last_hidden_state
        per_image = model.mae(x[:1]).last_hidden_state
    assert plain.shape == (2, 65, 64)
    assert_close(plain, ordered)
    assert_close(per_image, plain[:1])  # deterministic, batch-independent


def test_round_trip_and_auto_classes(tmp_path):
    config = MAEConfig(**TINY, norm_pix_loss=True)
    model = MAEForPreTraining(config).eval()
    model.save_pretrained(tmp_path)
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MAEConfig)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(x, noise=noise).logits, loaded(x, noise=noise).logits)
        encoder = AutoModel.from_pretrained(tmp_path).eval()
        assert_close(encoder(x).last_hidden_state, model.mae(x).last_hidden_state)
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=4, use_mean_pooling=True)
    assert isinstance(classifier, MAEForImageClassification)
    assert_close(classifier.mae.embeddings.patch_embed.projection.weight, model.mae.embeddings.patch_embed.projection.weight)
    out = classifier(x, labels=torch.tensor([0, 3]))
    assert out.logits.shape == (2, 4) and out.loss.requires_grad


def test_position_tables_are_built_at_construction():
    """transformers 5.23's ViTMAEForPreTraining leaves them at zero; ours must not."""
    model = MAEForPreTraining(MAEConfig(**TINY))
    from mim_hub.layers import get_2d_sincos_pos_embed

    assert torch.equal(model.mae.embeddings.pos_embed[0], get_2d_sincos_pos_embed(64, 8, cls_token=True))
    assert torch.equal(model.decoder.decoder_pos_embed[0], get_2d_sincos_pos_embed(32, 8, cls_token=True))
    assert not model.mae.embeddings.pos_embed.requires_grad


def test_interpolate_pos_encoding():
    model = MAEModel(MAEConfig(**TINY)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 48, 64), interpolate_pos_encoding=True)
        same = model(torch.randn(1, 3, 32, 32), interpolate_pos_encoding=True)
    assert out.last_hidden_state.shape == (1, 1 + 12 * 16, 64)
    assert same.last_hidden_state.shape == (1, 65, 64)
    pretrain = MAEForPreTraining(MAEConfig(**TINY)).eval()
    with torch.no_grad():
        rec = pretrain(torch.randn(1, 3, 48, 48), interpolate_pos_encoding=True)
    assert rec.logits.shape == (1, 144, 48)
    assert pretrain.unpatchify(rec.logits).shape == (1, 3, 48, 48)


def test_patchify_unpatchify_and_norm_pix_target():
    model = MAEForPreTraining(MAEConfig(**TINY))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.unpatchify(model.patchify(x)), x)
    assert model.patchify(x)[0, 0, :3].tolist() == x[0, :, 0, 0].tolist()  # channel fastest


def test_attention_outputs_and_eager_equals_sdpa():
    model = MAEModel(MAEConfig(**TINY)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast = model(x)
        slow = model(x, output_attentions=True, output_hidden_states=True)
    assert_close(fast.last_hidden_state, slow.last_hidden_state)
    assert len(slow.attentions) == 2 and slow.attentions[0].shape == (2, 4, 65, 65)
    assert len(slow.hidden_states) == 3
    assert_close(slow.attentions[0].sum(-1), torch.ones(2, 4, 65))


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = MAEForPreTraining(MAEConfig(**TINY)).train()
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    model(x, noise=noise).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(x, noise=noise).loss.backward()
    for name, grad in reference.items():
        assert_close(dict(model.named_parameters())[name].grad, grad, name)
    assert "mae.encoder.layers.0.attn.qkv_proj.weight" in reference


def test_no_weight_decay_and_layer_ids():
    model = MAEForImageClassification(MAEConfig(**TINY, num_labels=3, use_mean_pooling=True))
    no_decay = model.no_weight_decay()
    assert "mae.embeddings.pos_embed" in no_decay and "mae.embeddings.cls_token" in no_decay
    assert "mae.encoder.layers.0.attn.qkv_proj.weight" not in no_decay
    assert model.layer_id("mae.embeddings.patch_embed.projection.weight") == 0
    assert model.layer_id("mae.encoder.layers.1.mlp.fc1.weight") == 2
    assert model.layer_id("head.weight") == model.num_layers_for_decay() == 3


def test_image_processor_matches_mae_eval_transform():
    processor = MAEImageProcessor()
    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (300, 400, 3), dtype=np.uint8))
    pixels = processor(image, return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 224, 224)
    # reference: resize shorter side to 256 bicubic, centre crop 224, ImageNet normalisation
    resized = image.resize((341, 256), Image.BICUBIC)
    left, top = (341 - 224) // 2, (256 - 224) // 2
    crop = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1)).float()
    assert (pixels[0] - expected).abs().max() < 0.05  # PIL vs numpy resampling rounding
    gray = Image.fromarray(np.zeros((64, 64), dtype=np.uint8), mode="L")
    assert MAEImageProcessor.for_image_size(32)(gray, return_tensors="pt").pixel_values.shape == (1, 3, 32, 32)


def test_public_names():
    for name in ("MAEConfig", "MAEModel", "MAEForPreTraining", "MAEForImageClassification", "MAEImageProcessor"):
        assert hasattr(mim_hub, name)
    from mim_hub.masking import random_masking

    ids_keep, mask, ids_restore = random_masking(torch.tensor([[0.5, 0.1, 0.9, 0.3]]), 0.5)
    assert ids_keep.tolist() == [[1, 3]] and mask.tolist() == [[1, 0, 1, 0]]


def test_fast_processing_path_equals_the_generic_one():
    from transformers.image_processing_backends import PilBackend

    class Generic(MAEImageProcessor):
        def _preprocess(self, *args, **kwargs):
            return PilBackend._preprocess(self, *args, **kwargs)

    rng = np.random.RandomState(1)
    for shape in [(300, 400, 3), (257, 256, 3), (90, 500, 3), (64, 64)]:
        image = Image.fromarray(rng.randint(0, 255, shape, dtype=np.uint8))
        for processor in (MAEImageProcessor(), MAEImageProcessor.for_image_size(32)):
            fast = processor(image, return_tensors="np").pixel_values
            generic = Generic(**processor.to_dict())(image, return_tensors="np").pixel_values
            assert fast.dtype == generic.dtype == np.float32
            np.testing.assert_array_equal(fast, generic)


def test_fixed_sincos_tables_stay_frozen_after_from_pretrained(tmp_path):
    """Loading replaces parameter objects; the fixed tables must not come back trainable."""
    model = MAEForPreTraining(MAEConfig(**TINY))
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"mae.embeddings.pos_embed", "decoder.decoder_pos_embed"}
    model.save_pretrained(tmp_path)
    loaded = MAEForPreTraining.from_pretrained(tmp_path)
    assert {name for name, p in loaded.named_parameters() if not p.requires_grad} == frozen


def test_random_masking_equals_mae_s_two_sorts_and_gather():
    """One argsort + a scatter + a comparison give MAE's ids_keep, mask and ids_restore exactly."""
    from mim_hub.layers import random_masking

    for batch, length, ratio in ((1, 4, 0.5), (3, 16, 0.75), (64, 196, 0.75), (2, 49, 0.0)):
        noise = torch.rand(batch, length)
        keep = int(length * (1 - ratio))
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        mask = torch.ones(batch, length)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, restore)
        ids_keep, ours_mask, ids_restore = random_masking(noise, ratio)
        assert torch.equal(ids_keep, shuffle[:, :keep]) and torch.equal(ids_restore, restore) and torch.equal(ours_mask, mask)
        assert ours_mask.dtype == torch.float32 and ids_restore.dtype == torch.int64
