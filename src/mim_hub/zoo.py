"""The catalogue: per method, the presets (paper configurations) and the original released
checkpoints with what each converts to. `mim-hub zoo` prints it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .hub.cards import METHOD_INFO


@dataclass(frozen=True)
class Release:
    """One checkpoint file the authors released."""

    file: str
    converts_to: str
    config: dict = field(default_factory=dict)  # the --config it needs beyond what shapes tell
    note: str = ""


# method -> releases; each method's converter documentation (conversion/<method>.md) has the details.
RELEASES: dict[str, list[Release]] = {
    "mae": [
        Release("mae_pretrain_vit_base.pth", "MAEModel", {}, "ViT-B/16 encoder, 12 heads"),
        Release("mae_pretrain_vit_large.pth", "MAEModel", {}, "ViT-L/16 encoder, 16 heads"),
        Release("mae_pretrain_vit_huge.pth", "MAEModel", {}, "ViT-H/14 encoder, 16 heads"),
        Release("mae_visualize_vit_base.pth", "MAEForPreTraining", {}, "encoder + decoder, pixel targets"),
        Release("mae_visualize_vit_large.pth", "MAEForPreTraining", {}, "encoder + decoder, pixel targets"),
        Release("mae_visualize_vit_large_ganloss.pth", "MAEForPreTraining", {}, "encoder + decoder trained with an extra GAN loss"),
        Release("mae_finetuned_vit_base.pth", "MAEForImageClassification", {}, "ImageNet-1k 83.6% top-1"),
        Release("mae_finetuned_vit_large.pth", "MAEForImageClassification", {}, "ImageNet-1k 85.9% top-1"),
        Release("mae_finetuned_vit_huge.pth", "MAEForImageClassification", {}, "ImageNet-1k 86.9% top-1"),
    ],
    "color_mae": [
        Release(f"ViT_Base/{ep}/{c}/pretrain/epoch_{ep}.safetensors", "ColorMAEForPreTraining",
                {"noise_color": c, "norm_pix_loss": True}, f"ViT-B, {c} noise, {ep} epochs (mmpretrain layout; .pth beside it)")
        for c in ("green", "blue", "purple", "red") for ep in (100, 300, 800, 1600)
    ] + [
        Release("ViT_Base/<ep>/<colour>/inet_classification/epoch_<n>.safetensors", "ColorMAEForImageClassification", {},
                "ImageNet-1k fine-tuned (green 800e: 83.61% top-1)"),
    ],
    "crate_mae": [
        Release("CRATE-MAE-Base checkpoint (MAE codebase)", "CrateMAEForPreTraining", {"ista_lambda": 0.5}, "768 wide, 12+12 layers, 12 heads"),
        Release("crate_tiny/checkpoint.pth.tar", "CrateMAEForImageClassification", {}, "CRATE-T classifier, 384 wide, 6 heads"),
        Release("crate_small/checkpoint.pth.tar", "CrateMAEForImageClassification", {}, "CRATE-S classifier, 576 wide, 12 heads of 48"),
        Release("crate_base/checkpoint.pth.tar", "CrateMAEForImageClassification", {}, "CRATE-B classifier, 768 wide, 12 heads"),
        Release("crate_large/checkpoint.pth.tar", "CrateMAEForImageClassification", {}, "CRATE-L classifier, 1024 wide, 16 heads"),
    ],
    "cae": [
        Release(f"CAE-base {ep} epochs (Google Drive, training checkpoint with args)", "CAEForPreTraining", {},
                "ViT-B encoder, 4-layer regressor, 4-layer decoder, 8192 DALL-E tokens") for ep in (300, 800, 1600)
    ] + [
        Release("CAE-large 1600 epochs (Google Drive, training checkpoint with args)", "CAEForPreTraining", {},
                "ViT-L encoder, projection 1024 -> 768 into the regressor"),
        Release("checkpoint-best.pth of run_class_finetuning.py", "CAEForImageClassification", {},
                "fine-tuned classifier (relative position bias, mean pooling)"),
    ],
    "mr_mae": [
        Release("ConvMAE-Base pretrained checkpoint", "MRMAEModel", {}, "hybrid conv/ViT encoder (MR-MCMAE's backbone), 12 heads"),
        Release("ConvMAE-B fine-tuned weight", "MRMAEForImageClassification", {}, "ImageNet-1k 85.0% top-1"),
        Release("ConvMAE-v2 Small / Base / Large / Huge", "MRMAEModel", {}, "encoder with cls token and fusion layers (MR-MCMAE)"),
        Release("output_dir/checkpoint-N.pth of ConvMAE's main_pretrain.py", "MRMAEForPreTraining",
                {"norm_pix_loss": True}, "pre-training with decoder; add mimic teachers with set_teachers"),
    ],
}

def register_releases(method: str, releases: list[Release]) -> None:
    """Add a method's releases to the catalogue."""
    RELEASES.setdefault(method, []).extend(r for r in releases if r not in RELEASES.get(method, []))


def presets_by_method() -> dict[str, dict[str, dict]]:
    """The named configurations of `--model PRESET` (training/presets.py), grouped by method."""
    from .training.presets import PRESETS

    grouped: dict[str, dict[str, dict]] = {}
    for name, (method, fields) in PRESETS.items():
        grouped.setdefault(method, {})[name] = fields
    return grouped


def catalogue() -> list[dict]:
    import mim_hub  # noqa: F401  (methods register their releases on import)

    rows, presets, recipes = [], presets_by_method(), recipes_catalogue()
    for method, info in METHOD_INFO.items():
        rows.append({
            "method": method, "name": info["name"], "paper": info["paper"], "repo": info["repo"], "license": info["license"],
            "presets": presets.get(method, {}), "releases": [asdict(r) for r in RELEASES.get(method, [])],
            "finetune_recipes": [r for r in recipes if r["method"] == method],
        })
    return rows


def recipes_catalogue() -> list[dict]:
    """The fine-tuning recipes of `mim-hub finetune --recipe` with each value's source."""
    from .training.finetune_recipes import RECIPES

    return [{"recipe": r.name, "method": r.method, "release": r.release, "note": r.note,
             "values": [{"setting": k, "value": v, "source": src, "verified": ok} for k, v, src, ok in r.rows()]}
            for r in RECIPES.values()]


def print_zoo(fmt: str = "table") -> None:
    from .training.finetune_recipes import recipes_table

    rows = catalogue()
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    if fmt == "markdown":
        print("| method | original file | converts to | notes | licence |\n|---|---|---|---|---|")
        for row in rows:
            for r in row["releases"]:
                print(f"| {row['name']} | `{r['file']}` | `{r['converts_to']}` | {r['note']} | {row['license']} |")
        print("\nFine-tuning recipes (`mim-hub finetune --recipe NAME`):\n")
        print(recipes_table("markdown"))
        return
    for row in rows:
        print(f"{row['name']} ({row['method']}), licence {row['license']}: {row['repo']}")
        print(f"  paper: {row['paper']}")
        for name, cfg in row["presets"].items():
            print(f"  preset {name}: {cfg}")
        for r in row["releases"]:
            extra = f" --config '{json.dumps(r['config'])}'" if r["config"] else ""
            print(f"  {r['file']:45s} -> {r['converts_to']:30s} {r['note']}{extra}")
    print("\nfine-tuning recipes (mim-hub finetune --recipe NAME; every flag overrides a value):")
    print(recipes_table("table"))
