"""from_pretrained at another image or window size: position tables resized as the originals'
fine-tuning scripts do, fixed tables recomputed, anything else that does not fit an error."""

import os
import sys

import pytest
import torch

from mim_hub import MAEConfig, MAEForImageClassification, MAEForPreTraining, SimMIMConfig, SimMIMForImageClassification, SimMIMForPreTraining
from mim_hub.layers import get_2d_sincos_pos_embed, interpolate_pos_embed
from mim_hub.layers.relative_position import resize_relative_position_table
from mim_hub.auto import method_classes
from mim_hub.models.geometry import adapt_geometry

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from tiny_models import TINY as TINY_MODELS  # noqa: E402
from tiny_models import method_of, tiny  # noqa: E402

TINY_SWIN = dict(backbone="swin", image_size=32, patch_size=2, mask_patch_size=8, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4)
TINY_VIT = dict(backbone="vit", image_size=32, patch_size=4, mask_patch_size=8, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=64, use_relative_position_bias=True, use_shared_relative_position_bias=False)
TINY_MAE = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32)


def _randomise(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_()
    return model


def test_swin_pretrained_at_window_4_fine_tunes_at_another_image_and_window_size(tmp_path):
    """SimMIM's recipe in small: pre-trained at one image/window size, fine-tuned at another."""
    pretrained = _randomise(SimMIMForPreTraining(SimMIMConfig(**TINY_SWIN)))
    pretrained.save_pretrained(tmp_path / "pt")
    model = SimMIMForImageClassification.from_pretrained(tmp_path / "pt", image_size=48, window_size=6, num_labels=3)
    assert (model.config.image_size, model.config.window_size, model.config.num_labels) == (48, 6, 3)
    old_blocks = [b for stage in pretrained.simmim.encoder.layers for b in stage.blocks]
    new_blocks = [b for stage in model.simmim.encoder.layers for b in stage.blocks]
    for old, new in zip(old_blocks, new_blocks, strict=True):
        old_table = old.relative_position_bias.relative_position_bias_table.detach()
        expected = resize_relative_position_table(old_table, old.window_size, new.window_size, cls_token=False)
        assert new.window_size != old.window_size
        assert torch.equal(new.relative_position_bias.relative_position_bias_table.detach(), expected)
        assert torch.equal(new.attn.qkv_proj.weight, old.attn.qkv_proj.weight)  # everything else carried over
    assert not model.training
    assert model(torch.randn(2, 3, 48, 48)).logits.shape == (2, 3)
    # a config object of the new geometry works the same way
    config = SimMIMConfig(**{**TINY_SWIN, "image_size": 48, "window_size": 6}, num_labels=3)
    same = SimMIMForImageClassification.from_pretrained(tmp_path / "pt", config=config)
    for (key, a), b in zip(model.state_dict().items(), same.state_dict().values(), strict=True):
        assert key.startswith("head.") or torch.equal(a, b), key  # the new head is initialised afresh
    # the same geometry changes nothing
    plain = SimMIMForPreTraining.from_pretrained(tmp_path / "pt", image_size=32)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), pretrained.state_dict().values(), strict=True))


def test_vit_tables_and_learned_positions_follow_the_patch_grid(tmp_path):
    torch.manual_seed(0)
    pretrained = _randomise(SimMIMForPreTraining(SimMIMConfig(**TINY_VIT, use_absolute_position_embeddings=True)))
    pretrained.save_pretrained(tmp_path / "pt")
    model, info = SimMIMForImageClassification.from_pretrained(tmp_path / "pt", image_size=48, num_labels=2, output_loading_info=True)
    assert "missing_keys" in info
    old, new = pretrained.simmim, model.simmim
    assert torch.equal(new.embeddings.pos_embed.detach(), interpolate_pos_embed(old.embeddings.pos_embed.detach(), (12, 12), old_grid=(8, 8)))
    for a, b in zip(old.encoder.layers, new.encoder.layers, strict=True):
        table = a.relative_position_bias.relative_position_bias_table.detach()
        assert torch.equal(b.relative_position_bias.relative_position_bias_table.detach(), resize_relative_position_table(table, 8, 12))
    assert model(torch.randn(1, 3, 48, 48)).logits.shape == (1, 2)


def test_mae_fixed_tables_are_recomputed_and_learned_ones_interpolated(tmp_path):
    pretrained = _randomise(MAEForPreTraining(MAEConfig(**TINY_MAE)))
    pretrained.save_pretrained(tmp_path / "pt")
    # pre-training model: both sin-cos tables are fixed, so they are the new grid's own
    bigger = MAEForPreTraining.from_pretrained(tmp_path / "pt", image_size=48)
    assert torch.equal(bigger.mae.embeddings.pos_embed[0], get_2d_sincos_pos_embed(32, 12, cls_token=True))
    assert torch.equal(bigger.decoder.decoder_pos_embed[0], get_2d_sincos_pos_embed(16, 12, cls_token=True))
    assert not bigger.mae.embeddings.pos_embed.requires_grad
    out = bigger(torch.randn(2, 3, 48, 48))
    assert out.logits.shape == (2, 144, 48) and torch.isfinite(out.loss)
    # fine-tuning: the table is trained, so the checkpoint's values are interpolated (MAE's interpolate_pos_embed)
    pretrained_classifier = _randomise(MAEForImageClassification(MAEConfig(**TINY_MAE, num_labels=4)))
    pretrained_classifier.save_pretrained(tmp_path / "ft")
    classifier = MAEForImageClassification.from_pretrained(tmp_path / "ft", image_size=48)
    expected = interpolate_pos_embed(pretrained_classifier.mae.embeddings.pos_embed.detach(), (12, 12), old_grid=(8, 8))
    assert torch.equal(classifier.mae.embeddings.pos_embed.detach(), expected) and classifier.mae.embeddings.pos_embed.requires_grad
    assert torch.equal(classifier.head.weight, pretrained_classifier.head.weight)


def test_a_tensor_no_rule_covers_is_an_error_naming_it():
    small = SimMIMForPreTraining(SimMIMConfig(**TINY_SWIN))
    state = small.state_dict()
    state["simmim.embeddings.patch_embed.projection.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(ValueError, match=r"patch_embed\.projection\.weight has shape \(16, 3, 3, 3\).*not a position table"):
        adapt_geometry(state, small, source="x")


def test_processors_follow_a_new_image_size(tmp_path):
    from mim_hub import MAEImageProcessor

    resized = MAEImageProcessor().with_image_size(256)  # 256 -> 224 becomes 293 -> 256, as MAE's crop ratio
    assert resized.size.shortest_edge == 293 and (resized.crop_size.height, resized.crop_size.width) == (256, 256)
    plain = MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).with_image_size(48)
    assert plain(torch.zeros(3, 20, 30).numpy(), return_tensors="np").pixel_values.shape == (1, 3, 48, 48)
    plain.save_pretrained(tmp_path)
    assert type(plain).from_pretrained(tmp_path).size.height == 48


@pytest.mark.slow
def test_finetune_at_another_image_and_window_size(tmp_path):
    """`mim-hub finetune --image-size 48 --window-size 6` on a Swin pre-trained at 32 px / window 4."""
    from mim_hub import SimMIMImageProcessor
    from mim_hub.data import load_digits_dataset
    from mim_hub.training.finetune import finetune

    pretrained = _randomise(SimMIMForPreTraining(SimMIMConfig(**TINY_SWIN)))
    pretrained.save_pretrained(tmp_path / "pt")
    SimMIMImageProcessor.for_image_size(32).save_pretrained(tmp_path / "pt")
    train, test = load_digits_dataset("train").subset(range(16)), load_digits_dataset("test").subset(range(8))
    trainer, metrics = finetune(str(tmp_path / "pt"), train, test, output_dir=str(tmp_path / "ft"), epochs=1, batch_size=8,
                                image_size=48, window_size=6, log_to_console=False)
    assert 0 <= metrics["eval_accuracy"] <= 1
    tuned = SimMIMForImageClassification.from_pretrained(tmp_path / "ft")
    assert (tuned.config.image_size, tuned.config.window_size) == (48, 6)
    assert SimMIMImageProcessor.from_pretrained(tmp_path / "ft").crop_size.height == 48
    with pytest.raises(ValueError, match="no attention window"):
        pretrained_mae = MAEForPreTraining(MAEConfig(**TINY_MAE))
        pretrained_mae.save_pretrained(tmp_path / "mae")
        finetune(str(tmp_path / "mae"), train, test, output_dir=str(tmp_path / "ft2"), window_size=6, log_to_console=False)


@pytest.mark.parametrize("key", sorted(TINY_MODELS))
def test_every_method_loads_at_twice_the_image_size(key, tmp_path):
    config, inputs = tiny(key)
    extra = {"noise_pattern_size": 16} if key == "color_mae" else {}  # ColorMAE's masks must cover the larger grid
    for kind in ("pretraining", "classification"):
        cls = method_classes(method_of(key))[kind]
        torch.manual_seed(0)
        cls(config).save_pretrained(tmp_path / kind)
        model = cls.from_pretrained(tmp_path / kind, image_size=2 * config.image_size, **extra)
        assert model.config.image_size == 2 * config.image_size
        side = 2 * config.image_size
        x = torch.randn(1, 3, side, side)
        if kind == "classification":
            assert model(x).logits.shape == (1, config.num_labels)
        else:
            masked = {"bool_masked_pos": torch.rand(1, (side // config.patch_size) ** 2) < 0.5} if "bool_masked_pos" in inputs else {}
            out = model(x, **masked)  # (CAE computes its loss only given target tokens)
            assert all(torch.isfinite(v).all() for v in out.values() if torch.is_tensor(v) and v.is_floating_point())


@pytest.mark.parametrize("key", sorted(TINY_MODELS))
def test_load_at_geometry_computes_what_the_weights_do_not_hold(key, tmp_path):
    """Built on the meta device, the model at the new geometry computes its fixed tables and
    buffers (sin-cos tables, relative position indices, zero k biases) exactly as a model built
    at that geometry does; everything trainable comes from the checkpoint."""
    config, _ = tiny(key)
    extra = {"noise_pattern_size": 16} if key == "color_mae" else {}
    side = 2 * config.image_size
    for kind in ("pretraining", "classification"):
        cls = method_classes(method_of(key))[kind]
        torch.manual_seed(0)
        saved = _randomise(cls(config))
        saved.save_pretrained(tmp_path / kind)
        model = cls.load_at_geometry(tmp_path / kind, image_size=side, **extra)
        reference = cls(type(config).from_dict({**config.to_dict(), "image_size": side, **extra}))
        fixed = {n for n, p in reference.named_parameters() if not p.requires_grad} | {n for n, _ in reference.named_buffers()}
        state, expected = model.state_dict(keep_vars=True), reference.state_dict(keep_vars=True)
        for name in fixed:
            actual = state[name] if name in state else model.get_buffer(name)
            wanted = expected[name] if name in expected else reference.get_buffer(name)
            assert actual.device.type == "cpu" and torch.equal(actual, wanted), (kind, name)
        for name, parameter in model.named_parameters():
            assert parameter.requires_grad == (name not in fixed), name
        old = saved.state_dict()
        moved = [n for n, p in model.named_parameters() if n in old and p.shape == old[n].shape and n not in fixed]
        assert moved and all(torch.equal(state[n], old[n]) for n in moved)


def test_load_at_geometry_refuses_a_field_the_model_does_not_have(tmp_path):
    MAEForPreTraining(MAEConfig(**TINY_MAE)).save_pretrained(tmp_path / "mae")
    with pytest.raises(ValueError, match="has no window_size"):
        MAEForPreTraining.load_at_geometry(tmp_path / "mae", window_size=6)
