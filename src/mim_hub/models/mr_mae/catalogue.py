"""MR-MAE (ConvMAE's repository): what exists (see models/catalogue.py)."""

from ..catalogue import MethodCatalogue, Preset, Release

CATALOGUE = MethodCatalogue(
    method="mr_mae", name="MR-MAE", license="mit", repo="https://github.com/Alpha-VL/ConvMAE",
    paper="Mimic before Reconstruct: Enhancing Masked Autoencoders with Feature Mimicking (Gao et al., 2023), arXiv:2303.05475",
    presets=(
        Preset("mr-mcmae-base", dict(norm_pix_loss=True)),
        Preset("mr-mae-vit-base-patch16", dict(backbone="vit", num_hidden_layers=12, norm_pix_loss=True)),
    ),
    releases=(
        Release("ConvMAE-Base pretrained checkpoint", "MRMAEModel", {}, "hybrid conv/ViT encoder (MR-MCMAE's backbone), 12 heads"),
        Release("ConvMAE-B fine-tuned weight", "MRMAEForImageClassification", {}, "ImageNet-1k 85.0% top-1"),
        Release("ConvMAE-v2 Small / Base / Large / Huge", "MRMAEModel", {}, "encoder with cls token and fusion layers (MR-MCMAE)"),
        Release("output_dir/checkpoint-N.pth of ConvMAE's main_pretrain.py", "MRMAEForPreTraining",
                {"norm_pix_loss": True}, "pre-training with decoder; add mimic teachers with set_teachers"),
    ),
)
