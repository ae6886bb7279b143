"""Named model configurations for `--model PRESET` (the papers' sizes, and the tiny protocol
model used by the demo)."""

from __future__ import annotations

from ..auto import method_classes

PRESETS = {
    # the learning protocol of the demo: digits at 32 px (issue 3)
    "mae-tiny-digits": ("mae", dict(image_size=32, patch_size=4, hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                                    intermediate_size=768, decoder_hidden_size=128, decoder_num_hidden_layers=2,
                                    decoder_num_attention_heads=4, decoder_intermediate_size=512, mask_ratio=0.75, norm_pix_loss=True)),
    "mae-vit-base-patch16": ("mae", dict(norm_pix_loss=True)),
    "mae-vit-large-patch16": ("mae", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, norm_pix_loss=True)),
    "mae-vit-huge-patch14": ("mae", dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120, patch_size=14, norm_pix_loss=True)),
    "colormae-vit-base-patch16-green": ("color_mae", dict(noise_color="green", norm_pix_loss=True)),
    "crate-mae-base": ("crate_mae", dict()),
    "simmim-swin-base-192": ("simmim", dict(backbone="swin")),
    "simmim-swin-large-192": ("simmim", dict(backbone="swin", embed_dim=192, num_heads=[6, 12, 24, 48], window_size=12)),
    "simmim-vit-base-patch16": ("simmim", dict(backbone="vit")),
    "cae-base": ("cae", dict()),
    "cae-large": ("cae", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)),
    "mr-mcmae-base": ("mr_mae", dict(norm_pix_loss=True)),
    "mr-mae-vit-base-patch16": ("mr_mae", dict(backbone="vit", num_hidden_layers=12, norm_pix_loss=True)),
    "crate-small": ("crate_mae", dict(variant="crate", hidden_size=576, num_attention_heads=12, attention_head_size=48, ista_lambda=0.1)),
}


def register_preset(name: str, method: str, fields: dict) -> None:
    """Add a named configuration (each method's package may add its own)."""
    PRESETS[name] = (method, fields)


def preset_config(name: str, **overrides):
    """(method, config) of a preset, with `overrides` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)} (or pass a saved model folder)")
    method, fields = PRESETS[name]
    return method, method_classes(method)["config"](**{**fields, **overrides})
