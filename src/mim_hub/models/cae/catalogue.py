"""CAE: what exists (see models/catalogue.py). The releases are training checkpoints with their
arguments, which give every shape."""

from ..catalogue import MethodCatalogue, Preset, Release

CATALOGUE = MethodCatalogue(
    method="cae", name="CAE", license="apache-2.0", repo="https://github.com/Atten4Vis/CAE",
    paper="Context Autoencoder for Self-Supervised Representation Learning (Chen et al., IJCV 2023), arXiv:2202.03026",
    presets=(
        Preset("cae-base"),
        Preset("cae-large", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)),
    ),
    releases=tuple(
        Release(f"CAE-base {ep} epochs (Google Drive, training checkpoint with args)", "CAEForPreTraining", {},
                "ViT-B encoder, 4-layer regressor, 4-layer decoder, 8192 DALL-E tokens") for ep in (300, 800, 1600)
    ) + (
        Release("CAE-large 1600 epochs (Google Drive, training checkpoint with args)", "CAEForPreTraining", {},
                "ViT-L encoder, projection 1024 -> 768 into the regressor"),
        Release("checkpoint-best.pth of run_class_finetuning.py", "CAEForImageClassification", {},
                "fine-tuned classifier (relative position bias, mean pooling)"),
    ),
)
