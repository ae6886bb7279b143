"""ColorMAE: what exists (see models/catalogue.py). The releases are in mmpretrain's layout,
one folder per size, epochs and noise colour."""

from ..catalogue import MethodCatalogue, Preset, Release

CATALOGUE = MethodCatalogue(
    method="color_mae", name="ColorMAE", license="other", repo="https://github.com/carlosh93/ColorMAE",  # the repository has no licence file
    paper="ColorMAE: Exploring data-independent masking strategies in Masked AutoEncoders (Hinojosa et al., ECCV 2024), arXiv:2407.13036",
    presets=(
        Preset("colormae-vit-base-patch16-green", dict(noise_color="green", norm_pix_loss=True)),
    ),
    releases=tuple(
        Release(f"ViT_Base/{ep}/{c}/pretrain/epoch_{ep}.safetensors", "ColorMAEForPreTraining",
                {"noise_color": c, "norm_pix_loss": True}, f"ViT-B, {c} noise, {ep} epochs (mmpretrain layout; .pth beside it)")
        for c in ("green", "blue", "purple", "red") for ep in (100, 300, 800, 1600)
    ) + (
        Release("ViT_Base/<ep>/<colour>/inet_classification/epoch_<n>.safetensors", "ColorMAEForImageClassification", {},
                "ImageNet-1k fine-tuned (green 800e: 83.61% top-1)"),
    ),
)
