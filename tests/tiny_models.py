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


# method -> () -> (config, extra pre-training inputs for a batch of 2 images of 32x32)
def _crate_mae():
    config = mim_hub.CrateMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    decoder_num_hidden_layers=1, decoder_num_attention_heads=2, num_labels=3)
    return config, {"noise": torch.rand(2, 16)}


TINY = {"mae": _mae, "color_mae": _color_mae, "crate_mae": _crate_mae}


def tiny(method: str):
    return TINY[method]()
