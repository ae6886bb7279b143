"""HPM: what exists (see models/catalogue.py). The two released checkpoints are on Google Drive
(links in the original README's results table); conversion/hpm.md has their layout."""

from ..catalogue import MethodCatalogue, Preset, Release

CATALOGUE = MethodCatalogue(
    method="hpm", name="HPM", license="apache-2.0", repo="https://github.com/Haochen-Wang409/HPM",
    paper="Hard Patches Mining for Masked Image Modeling (Wang et al., CVPR 2023), arXiv:2304.05919",
    presets=(
        # scripts/pretrain_base.sh: mae_vit_base_patch16_dec512d8b, mask ratio 0.75, no --norm_pix_loss
        Preset("hpm-vit-base-patch16"),
        Preset("hpm-vit-large-patch16", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)),
    ),
    releases=(
        Release("HPM ViT-B/16 800 epochs (Google Drive 1443UA5e6EvGAdnUkGd3ayMGipkRwhU4u)", "HPMForPreTraining", {},
                "main_pretrain.py checkpoint: state_dict (+ ema_state_dict); fine-tuned 84.2% top-1, ADE20K 48.5 mIoU"),
        Release("HPM ViT-L/16 800 epochs (Google Drive 1DLzvdUt1wO5ZEUV12AVOtWyXLUIUR85o)", "HPMForPreTraining", {},
                "main_pretrain.py checkpoint: state_dict (+ ema_state_dict); fine-tuned 85.8% top-1, ADE20K 54.6 mIoU"),
        Release("<main_finetune.py output>.pth", "HPMForImageClassification", {},
                "what HPM's fine-tuning writes ({'state_dict': ...}); no fine-tuned weights are released"),
    ),
)
