"""SparK: what exists (see models/catalogue.py). The converter's documentation
(conversion/spark.md) has the details of each release."""

from ..catalogue import MethodCatalogue, Preset, Release

_RESNET = {"backbone": "resnet"}
_CONVNEXT = {"backbone": "convnext"}

CATALOGUE = MethodCatalogue(
    method="spark", name="SparK", license="mit", repo="https://github.com/keyu-tian/SparK",
    paper="Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked Modeling (Tian et al., ICLR 2023), "
          "arXiv:2301.03580",
    presets=(
        # the learning protocol of the demo: digits at 32 px (one mask cell per image side would leave
        # nothing to mask: 64 px, a 2 x 2 grid), a small ResNet
        Preset("spark-resnet-tiny-digits", dict(backbone="resnet", image_size=64, depths=[1, 1, 1, 1], hidden_sizes=[32, 64, 128, 128],
                                                embedding_size=16, decoder_hidden_size=64, drop_path_rate=0.0),
               crop_pct=1.0, crop_mode="squash", normalization="dataset"),
        # pretrain/models/__init__.py `pretrain_default_model_kwargs` (drop path) and timm's layouts
        Preset("spark-resnet50", dict(_RESNET, depths=[3, 4, 6, 3], drop_path_rate=0.05)),
        Preset("spark-resnet101", dict(_RESNET, depths=[3, 4, 23, 3], drop_path_rate=0.08)),
        Preset("spark-resnet152", dict(_RESNET, depths=[3, 8, 36, 3], drop_path_rate=0.10)),
        Preset("spark-resnet200", dict(_RESNET, depths=[3, 24, 36, 3], drop_path_rate=0.15)),
        Preset("spark-convnext-small", dict(_CONVNEXT, depths=[3, 3, 27, 3], hidden_sizes=[96, 192, 384, 768], drop_path_rate=0.2)),
        Preset("spark-convnext-base", dict(_CONVNEXT, depths=[3, 3, 27, 3], hidden_sizes=[128, 256, 512, 1024], drop_path_rate=0.3)),
        Preset("spark-convnext-large", dict(_CONVNEXT, depths=[3, 3, 27, 3], hidden_sizes=[192, 384, 768, 1536], drop_path_rate=0.4)),
    ),
    releases=(
        # the encoders users load into timm / the official ConvNeXt (README "Pre-trained weights")
        Release("resnet50_1kpretrained_timm_style.pth", "SparKModel", {}, "ResNet-50 encoder (timm keys), 80.6% fine-tuned"),
        Release("resnet101_1kpretrained_timm_style.pth", "SparKModel", {}, "ResNet-101 encoder (timm keys), 82.2% fine-tuned"),
        Release("resnet152_1kpretrained_timm_style.pth", "SparKModel", {}, "ResNet-152 encoder (timm keys), 82.7% fine-tuned"),
        Release("resnet200_1kpretrained_timm_style.pth", "SparKModel", {}, "ResNet-200 encoder (timm keys), 83.1% fine-tuned"),
        Release("convnextS_1kpretrained_official_style.pth", "SparKModel", {}, "ConvNeXt-S encoder (official keys), 84.1% fine-tuned"),
        Release("convnextB_1kpretrained_official_style.pth", "SparKModel", {}, "ConvNeXt-B encoder (official keys), 84.8% fine-tuned"),
        Release("convnextL_1kpretrained_official_style.pth", "SparKModel", {}, "ConvNeXt-L encoder (official keys), 85.4% fine-tuned"),
        Release("convnextL_384_1kpretrained_official_style.pth", "SparKModel", {"image_size": 384},
                "ConvNeXt-L encoder pre-trained at 384 px, 86.0% fine-tuned"),
        # the whole pre-training model (encoder, densifying layers, decoder): reconstructions
        Release("res50_withdecoder_1kpretrained_spark_style.pth", "SparKForPreTraining", {}, "ResNet-50 with its decoder"),
        Release("res101_withdecoder_1kpretrained_spark_style.pth", "SparKForPreTraining", {}, "ResNet-101 with its decoder"),
        Release("res152_withdecoder_1kpretrained_spark_style.pth", "SparKForPreTraining", {}, "ResNet-152 with its decoder"),
        Release("res200_withdecoder_1kpretrained_spark_style.pth", "SparKForPreTraining", {}, "ResNet-200 with its decoder"),
        Release("cnxS224_withdecoder_1kpretrained_spark_style.pth", "SparKForPreTraining", {}, "ConvNeXt-S with its decoder"),
        Release("cnxL384_withdecoder_1kpretrained_spark_style.pth", "SparKForPreTraining", {"image_size": 384},
                "ConvNeXt-L at 384 px with its decoder"),
    ),
)
