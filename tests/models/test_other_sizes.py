"""Inputs of other sizes: ColorMAE's masks drawn for the input's grid, SimMIM's Swin padded to
whole windows as transformers' Swin, CRATE's position tables interpolated."""

from __future__ import annotations

import re

import pytest
import torch
from tiny_models import tiny
from transformers import SwinConfig, SwinModel

import mim_hub
from mim_hub.layers.mask_color_noise import ColorNoiseMaskGenerator
from mim_hub.masking import random_masking
from mim_hub.models.color_mae.modeling_color_mae import mask_generator_for


# ColorMAE ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(24, 24), (24, 16), (48, 48)])
def test_color_mae_draws_its_masks_for_the_input_grid(size):
    config, _ = tiny("color_mae")  # 32 px, patch 4: an 8x8 grid, 12x12 patterns
    model = mim_hub.ColorMAEForPreTraining(config).eval()
    pixels = torch.randn(2, 3, *size)
    grid = (size[0] // 4, size[1] // 4)
    with torch.no_grad():
        out = model(pixels, interpolate_pos_encoding=True, generator=torch.Generator().manual_seed(3))
    assert out.mask.shape == (2, grid[0] * grid[1]) and out.logits.shape == (2, grid[0] * grid[1], 4 * 4 * 3)
    assert int(out.mask.sum(1)[0]) == grid[0] * grid[1] - int(grid[0] * grid[1] * (1 - config.mask_ratio))
    # the masks are the colour-noise windows of the input's grid, drawn from the same stream
    noise = mask_generator_for(config, grid)(2, generator=torch.Generator().manual_seed(3))
    assert noise.shape == (2, grid[0] * grid[1])
    assert torch.equal(out.mask, random_masking(noise, config.mask_ratio)[1])


def test_color_mae_keeps_its_own_grid_masks_bit_for_bit():
    config, _ = tiny("color_mae")
    model = mim_hub.ColorMAEForPreTraining(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32), generator=torch.Generator().manual_seed(5))
    own = mask_generator_for(config)
    assert own.grid_size == 8
    expected = random_masking(own(2, generator=torch.Generator().manual_seed(5)), config.mask_ratio)[1]
    assert torch.equal(out.mask, expected)


def test_color_noise_windows_of_a_rectangular_grid():
    patterns = torch.arange(2 * 6 * 7, dtype=torch.float32).reshape(2, 6, 7) + 1
    windows = ColorNoiseMaskGenerator(patterns, (3, 5), 0.5).windows(2, torch.Generator().manual_seed(0))
    assert windows.shape == (2, 3, 5)
    assert torch.allclose(windows.amax(dim=(-2, -1)), torch.ones(2))
    with pytest.raises(ValueError, match="smaller than the 7x5 patch grid"):
        ColorNoiseMaskGenerator(patterns, (7, 5), 0.5)


def test_color_mae_at_a_grid_larger_than_its_patterns(tmp_path, monkeypatch):
    """The model makes patterns of the size the grid needs (tests/test_color_mae.py has the
    details); a generator handed patterns too small for its grid refuses them by name."""
    from mim_hub.masking import ColorNoiseMaskGenerator, generate_noise_patterns

    monkeypatch.setenv("MIM_HUB_CACHE", str(tmp_path))
    config, _ = tiny("color_mae")  # 12x12 patterns
    model = mim_hub.ColorMAEForPreTraining(config)
    assert model(torch.randn(1, 3, 64, 64), interpolate_pos_encoding=True).mask.shape == (1, 256)
    with pytest.raises(ValueError, match="smaller than the 16x16 patch grid"):
        ColorNoiseMaskGenerator(generate_noise_patterns("green", 2, 12), 16, 0.75)


# Swin -----------------------------------------------------------------------------------------
def _to_transformers_swin(state: dict) -> dict:
    """Our SimMIM Swin encoder's weights under transformers' SwinModel names."""
    out = {}
    for key, value in state.items():
        key = key.replace("embeddings.patch_embed.", "embeddings.patch_embeddings.")
        key = key.replace(".norm1.", ".layernorm_before.").replace(".norm2.", ".layernorm_after.")
        key = key.replace(".relative_position_bias.relative_position_bias_table", ".attention.relative_position_bias.relative_position_bias_table")
        key = key.replace(".attn.o_proj.", ".attention.o_proj.")
        if ".attn.qkv_proj." in key:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3)):
                out[key.replace("attn.qkv_proj", f"attention.{name}")] = part
            continue
        out[key] = value
    return out


@pytest.mark.parametrize("image_size", [36, 40])
def test_swin_pads_a_stage_that_is_not_a_whole_number_of_windows_as_transformers(image_size):
    # 36 px / patch 2: stages of 18 and 9 tokens a side; 40 px: 20 and 10; window 4 (shifted every second block)
    config = mim_hub.SimMIMConfig(backbone="swin", image_size=image_size, patch_size=2, mask_patch_size=4, embed_dim=16,
                                  depths=[2, 2], num_heads=[2, 4], window_size=4)
    torch.manual_seed(0)
    ours = mim_hub.SimMIMModel(config).eval()
    for name, p in ours.named_parameters():  # (non-trivial norms and position tables)
        if re.search(r"norm|relative_position_bias_table", name):
            torch.nn.init.normal_(p, mean=1.0 if name.endswith("weight") and "table" not in name else 0.0, std=0.1)
    reference = SwinModel(SwinConfig(image_size=image_size, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                     window_size=4, layer_norm_eps=config.layer_norm_eps), add_pooling_layer=False).eval()
    missing, unexpected = reference.load_state_dict(_to_transformers_swin(ours.state_dict()), strict=False)
    assert not unexpected and all("relative_position_index" in k for k in missing)
    pixels = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        expected = reference(pixels).last_hidden_state
        actual = ours(pixels).last_hidden_state
    assert actual.shape == expected.shape == (2, (image_size // 4) ** 2, 32)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_swin_pretraining_and_classifier_at_a_size_that_is_not_a_whole_number_of_windows():
    config = mim_hub.SimMIMConfig(backbone="swin", image_size=40, patch_size=2, mask_patch_size=8, embed_dim=16, depths=[1, 1],
                                  num_heads=[2, 4], window_size=4, num_labels=3)
    pre = mim_hub.SimMIMForPreTraining(config)
    out = pre(torch.randn(2, 3, 40, 40))
    assert out.reconstruction.shape == (2, 3, 40, 40) and torch.isfinite(out.loss)
    out.loss.backward()
    logits = mim_hub.SimMIMForImageClassification(config)(torch.randn(2, 3, 40, 40)).logits
    assert logits.shape == (2, 3)


def test_swin_at_another_size_with_an_odd_stage_before_patch_merging():
    config, extra = tiny("simmim_swin")  # 32 px, patch 2, two stages
    model = mim_hub.SimMIMForPreTraining(config).eval()
    # 36 px: 18 patches a side, 9 after merging; 34 px: 17 a side, padded to 18 before merging
    for side in (36, 34):
        with torch.no_grad():
            out = model(torch.randn(2, 3, side, side), interpolate_pos_encoding=True)
        assert out.reconstruction.shape == (2, 3, side, side) and torch.isfinite(out.loss)


# CRATE ----------------------------------------------------------------------------------------
def _crate_classifier():
    return mim_hub.CrateMAEConfig(variant="crate", image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, num_labels=3)


@pytest.mark.parametrize("variant", ["crate", "crate_mae"])
def test_crate_classifier_interpolates_its_position_table(variant):
    config = _crate_classifier() if variant == "crate" else tiny("crate_mae")[0]
    torch.manual_seed(0)
    model = mim_hub.CrateMAEForImageClassification(config).eval()
    torch.nn.init.normal_(model.crate.embeddings.pos_embed, std=0.5)
    pixels = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        out = model(pixels, interpolate_pos_encoding=True, output_hidden_states=True)
    assert out.logits.shape == (2, 3)
    assert out.hidden_states[0].shape == (2, 1 + 6 * 5, 32)
    # the table is the bicubic resampling of the 4x4 one, as MAE's and ViT's
    table = model.crate.embeddings.pos_embed
    grid = table[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(grid, size=(6, 5), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 30, 32)
    expected_pos = torch.cat([table[:, :1], resized], dim=1)
    tokens = model.crate.embeddings.patch_embed(pixels, interpolate_pos_encoding=True)
    expected = torch.cat([model.crate.embeddings.cls_token.expand(2, -1, -1), tokens], dim=1) + expected_pos
    torch.testing.assert_close(out.hidden_states[0], expected)
    # at the model's own size the flag changes nothing
    same = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(same, interpolate_pos_encoding=True).logits, model(same).logits)
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        model(pixels)


def test_crate_mae_pretraining_at_another_size():
    config, _ = tiny("crate_mae")
    model = mim_hub.CrateMAEForPreTraining(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 48, 48), interpolate_pos_encoding=True)
    assert out.logits.shape == (2, 36, 8 * 8 * 3) and out.mask.shape == (2, 36) and torch.isfinite(out.loss)
