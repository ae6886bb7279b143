"""MAE: what exists (see models/catalogue.py). The converter's documentation
(conversion/mae.md) has the details of each release."""

from ..catalogue import MethodCatalogue, Preset, Release

CATALOGUE = MethodCatalogue(
    method="mae", name="MAE", license="cc-by-nc-4.0", repo="https://github.com/facebookresearch/mae",
    paper="Masked Autoencoders Are Scalable Vision Learners (He et al., CVPR 2022), arXiv:2111.06377",
    presets=(
        # the learning protocol of the demo: digits at 32 px (issue 3), images resized whole (8 x 8
        # digits have no border to crop) and normalised with their own statistics
        Preset("mae-tiny-digits", dict(image_size=32, patch_size=4, hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                                       intermediate_size=768, decoder_hidden_size=128, decoder_num_hidden_layers=2,
                                       decoder_num_attention_heads=4, decoder_intermediate_size=512, mask_ratio=0.75,
                                       norm_pix_loss=True),
               crop_pct=1.0, crop_mode="squash", normalization="dataset"),
        Preset("mae-vit-base-patch16", dict(norm_pix_loss=True)),
        Preset("mae-vit-large-patch16", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                                             norm_pix_loss=True)),
        Preset("mae-vit-huge-patch14", dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120,
                                            patch_size=14, norm_pix_loss=True)),
    ),
    releases=(
        Release("mae_pretrain_vit_base.pth", "MAEModel", {}, "ViT-B/16 encoder, 12 heads"),
        Release("mae_pretrain_vit_large.pth", "MAEModel", {}, "ViT-L/16 encoder, 16 heads"),
        Release("mae_pretrain_vit_huge.pth", "MAEModel", {}, "ViT-H/14 encoder, 16 heads"),
        Release("mae_visualize_vit_base.pth", "MAEForPreTraining", {}, "encoder + decoder, pixel targets"),
        Release("mae_visualize_vit_large.pth", "MAEForPreTraining", {}, "encoder + decoder, pixel targets"),
        Release("mae_visualize_vit_large_ganloss.pth", "MAEForPreTraining", {}, "encoder + decoder trained with an extra GAN loss"),
        Release("mae_finetuned_vit_base.pth", "MAEForImageClassification", {}, "ImageNet-1k 83.6% top-1"),
        Release("mae_finetuned_vit_large.pth", "MAEForImageClassification", {}, "ImageNet-1k 85.9% top-1"),
        Release("mae_finetuned_vit_huge.pth", "MAEForImageClassification", {}, "ImageNet-1k 86.9% top-1"),
    ),
)
