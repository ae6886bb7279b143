"""SimMIM: what exists (see models/catalogue.py). The releases are microsoft/SimMIM's README's:
every size, the heads (one column per head in the relative tables), the window and
`encoder_stride` are read from the files, so none needs `--config`."""

from ..catalogue import MethodCatalogue, Preset, Release

CATALOGUE = MethodCatalogue(
    method="simmim", name="SimMIM", license="mit", repo="https://github.com/microsoft/SimMIM",
    paper="SimMIM: A Simple Framework for Masked Image Modeling (Xie et al., CVPR 2022), arXiv:2111.09886",
    presets=(
        Preset("simmim-swin-base-192", dict(backbone="swin")),
        Preset("simmim-swin-large-192", dict(backbone="swin", embed_dim=192, num_heads=[6, 12, 24, 48], window_size=12)),
        Preset("simmim-vit-base-patch16", dict(backbone="vit")),
    ),
    releases=(
        Release("simmim_pretrain__swin_base__img192_window6__100ep.pth", "SimMIMForPreTraining", {}, "Swin-B, 192px, window 6, 100 epochs"),
        Release("simmim_pretrain__swin_base__img192_window6__800ep.pth", "SimMIMForPreTraining", {}, "Swin-B, 192px, window 6, 800 epochs"),
        Release("simmim_pretrain__swin_large__img192_window12__800ep.pth", "SimMIMForPreTraining", {}, "Swin-L, 192px, window 12, 800 epochs"),
        Release("simmim_pretrain__vit_base__img224__800ep.pth", "SimMIMForPreTraining", {}, "ViT-B/16, 224px, shared relative bias, 800 epochs"),
        Release("simmim_finetune__swin_base__img192_window6__100ep.pth", "SimMIMForImageClassification", {}, "ImageNet-1k 82.8% top-1"),
        Release("simmim_finetune__swin_base__img224_window7__100ep.pth", "SimMIMForImageClassification", {}, "ImageNet-1k 83.5% top-1"),
        Release("simmim_finetune__swin_base__img224_window7__800ep.pth", "SimMIMForImageClassification", {}, "ImageNet-1k 84.0% top-1"),
        Release("simmim_finetune__swin_large__img224_window14__800ep.pth", "SimMIMForImageClassification", {}, "ImageNet-1k 85.4% top-1"),
        Release("simmim_finetune__vit_base__img224__800ep.pth", "SimMIMForImageClassification", {}, "ImageNet-1k 83.8% top-1"),
    ),
)
