"""CRATE-MAE and the CRATE classifiers: what exists (see models/catalogue.py)."""

from ..catalogue import MethodCatalogue, Preset, Release

CATALOGUE = MethodCatalogue(
    method="crate_mae", name="CRATE-MAE", license="mit", repo="https://github.com/Ma-Lab-Berkeley/CRATE",
    paper="Masked Completion via Structured Diffusion with White-Box Transformers (Pai et al., ICLR 2024), arXiv:2404.02446",
    presets=(
        Preset("crate-mae-base"),
        Preset("crate-small", dict(variant="crate", hidden_size=576, num_attention_heads=12, attention_head_size=48, ista_lambda=0.1)),
    ),
    releases=(
        Release("CRATE-MAE-Base checkpoint (MAE codebase)", "CrateMAEForPreTraining", {"ista_lambda": 0.5}, "768 wide, 12+12 layers, 12 heads"),
        Release("crate_tiny/checkpoint.pth.tar", "CrateMAEForImageClassification", {}, "CRATE-T classifier, 384 wide, 6 heads"),
        Release("crate_small/checkpoint.pth.tar", "CrateMAEForImageClassification", {}, "CRATE-S classifier, 576 wide, 12 heads of 48"),
        Release("crate_base/checkpoint.pth.tar", "CrateMAEForImageClassification", {}, "CRATE-B classifier, 768 wide, 12 heads"),
        Release("crate_large/checkpoint.pth.tar", "CrateMAEForImageClassification", {}, "CRATE-L classifier, 1024 wide, 16 heads"),
    ),
)
