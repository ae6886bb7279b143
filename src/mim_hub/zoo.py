"""`mim-hub zoo`: every method's catalogue (models/<method>/catalogue.py: the presets, the
original released checkpoints and what each converts to) and the fine-tuning recipes, printed."""

from __future__ import annotations

import json
from dataclasses import asdict

from .models.catalogue import Release, catalogues

__all__ = ["Release", "catalogue", "print_zoo", "recipes_catalogue"]


def catalogue() -> list[dict]:
    """Every method's catalogue (models/<method>/catalogue.py) with its fine-tuning recipes, as rows."""
    recipes = recipes_catalogue()
    return [{
        "method": entry.method, **entry.info(),
        "presets": {preset.name: preset.config for preset in entry.presets}, "releases": [asdict(r) for r in entry.releases],
        "finetune_recipes": [r for r in recipes if r["method"] == entry.method],
    } for entry in catalogues()]


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
