"""Tiny configurations of every method's models, for tests that run on all of them."""

from __future__ import annotations

import torch

import mim_hub


def _mae():
    config = mim_hub.MAEConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                               decoder_num_attention_heads=2, decoder_intermediate_size=64, num_labels=3)
    return config, {"noise": torch.rand(2, 64)}


def _color_mae():
    config = mim_hub.ColorMAEConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                    decoder_num_attention_heads=2, decoder_intermediate_size=64, num_labels=3,
                                    noise_pattern_count=2, noise_pattern_size=12)
    return config, {"noise": torch.rand(2, 64)}


def _hpm():
    config = mim_hub.HPMConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                               decoder_num_attention_heads=2, decoder_intermediate_size=64, num_labels=3)
    return config, {"noise": torch.rand(2, 64)}


# method -> () -> (config, extra pre-training inputs for a batch of 2 images of 32x32)
def _crate_mae():
    config = mim_hub.CrateMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    decoder_num_hidden_layers=1, decoder_num_attention_heads=2, num_labels=3)
    return config, {"noise": torch.rand(2, 16)}


def _cae():
    config = mim_hub.CAEConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, decoder_hidden_size=32, regressor_num_hidden_layers=1,
                               regressor_num_attention_heads=2, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                               decoder_intermediate_size=64, vocab_size=64, num_masking_patches=24, num_labels=3)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[:, torch.randperm(64)[:24]] = True
    return config, {"bool_masked_pos": mask, "labels": torch.randint(0, 64, (48,))}


def _mr_mae():
    config = mim_hub.MRMAEConfig(image_size=32, patch_size=8, conv_hidden_sizes=[8, 12], conv_depths=[1, 1], conv_patch_sizes=[2, 2],
                                 conv_intermediate_sizes=[16, 24], hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=32, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                 decoder_num_attention_heads=2, decoder_intermediate_size=32, num_labels=3)
    return config, {"noise": torch.rand(2, 16)}


def _simmim():
    config = mim_hub.SimMIMConfig(backbone="vit", image_size=32, patch_size=4, mask_patch_size=8, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, num_labels=3)
    return config, {"bool_masked_pos": torch.rand(2, 64, generator=torch.Generator().manual_seed(0)) < 0.5}


def _simmim_swin():
    config = mim_hub.SimMIMConfig(backbone="swin", image_size=32, patch_size=2, mask_patch_size=8, embed_dim=16, depths=[1, 1],
                                  num_heads=[2, 4], window_size=4, num_labels=3)
    return config, {"bool_masked_pos": torch.rand(2, 256, generator=torch.Generator().manual_seed(0)) < 0.5}


def _spark():
    # a 32-pixel image is one cell of SparK's 1/32 mask grid: nothing can be masked at 32 px, so the
    # pre-training inputs here mask nothing (bool_masked_pos all False); tests/models/test_spark.py masks at 64 px
    config = mim_hub.SparKConfig(backbone="convnext", image_size=32, depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 16, 32],
                                 decoder_hidden_size=32, mask_ratio=0.25, num_labels=3)
    return config, {"bool_masked_pos": torch.zeros(2, 1, dtype=torch.bool)}


TINY = {"mae": _mae, "simmim": _simmim, "simmim_swin": _simmim_swin, "color_mae": _color_mae, "crate_mae": _crate_mae, "cae": _cae, "mr_mae": _mr_mae, "hpm": _hpm}


# convnets, whose outputs are maps and which have no attention: not (yet) in the ViT-shaped tests
# that run over TINY (see issue 32's common model tests)
TINY_CNN = {"spark": _spark}


def tiny(method: str):
    return {**TINY, **TINY_CNN}[method]()


def method_of(key: str) -> str:
    """The method package of a TINY key (several keys may configure one method)."""
    return key.split("_swin")[0]


def other_stacks(model) -> dict:
    """A pre-training model's block stacks outside its encoder, by output field prefix: the model's
    `recorded_stacks` (field -> submodule path, e.g. HPM's reconstructor and loss predictor), else
    its `decoder` and CAE's `regressor` (None where the model has none)."""
    paths = getattr(model, "recorded_stacks", None) or {"decoder": "decoder", "regressor": "regressor"}
    return {name: model.get_submodule(path) if hasattr(model, path.split(".")[0]) else None for name, path in paths.items()}
