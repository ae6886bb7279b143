"""Model cards: one template per method under `model_cards/`, filled and given YAML metadata
that huggingface_hub's `ModelCard` validates."""

from __future__ import annotations

import importlib.resources
import json
import os
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..models.catalogue import catalogues

# Facts the cards state about each method (name, paper, repo, license): its catalogue's.
METHOD_INFO: dict[str, dict[str, str]] = {entry.method: entry.info() for entry in catalogues()}

_GENERIC_TEMPLATE = """# {{ model_id }}

A {{ method_name }} model ({{ architecture }}) in [mim_hub](https://github.com/mim-hub/mim_hub).

- Paper: {{ paper }}
- Original code: {{ repo }}

## How to use

```python
import mim_hub  # registers the model with the Auto classes
from transformers import AutoImageProcessor, AutoModel

processor = AutoImageProcessor.from_pretrained("{{ model_id }}")
model = AutoModel.from_pretrained("{{ model_id }}")
```

## Provenance

{{ provenance }}

## Configuration

```json
{{ config_json }}
```
"""


def _template(method: str) -> str:
    try:
        return importlib.resources.files("mim_hub.model_cards").joinpath(f"{method}.md").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        return _GENERIC_TEMPLATE


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{{ " + key + " }}", str(value)).replace("{{" + key + "}}", str(value))
    return template


_PIPELINE_TAGS = {
    "ForImageClassification": "image-classification",
    "ForPreTraining": "image-feature-extraction",
    "ForMaskedImageModeling": "image-feature-extraction",
}


def render_model_card(
    model,
    *,
    method: str,
    provenance: str,
    model_id: str | None = None,
    datasets: list[str] | None = None,
    metrics: list[dict[str, Any]] | None = None,
    base_model: str | None = None,
) -> ModelCard:
    """A `ModelCard` for `model`: the method's template filled in, with YAML metadata
    (`library_name`, `license`, `tags`, `datasets`, `pipeline_tag`, `base_model`, and
    `model-index` when `metrics` are given as dicts with `task`, `dataset`, `name`, `type`, `value`)."""
    info = METHOD_INFO.get(method, {"name": method, "paper": "", "repo": "", "license": "other"})
    architecture = type(model).__name__
    pipeline_tag = next((tag for suffix, tag in _PIPELINE_TAGS.items() if architecture.endswith(suffix)), "image-feature-extraction")
    model_id = model_id or f"mim-hub/{method}-{architecture.lower()}"
    eval_results = None
    if metrics:
        from huggingface_hub import EvalResult

        eval_results = [
            EvalResult(
                task_type=m.get("task", pipeline_tag), dataset_type=m["dataset"], dataset_name=m.get("dataset_name", m["dataset"]),
                metric_type=m["type"], metric_value=m["value"], metric_name=m.get("name"),
            )
            for m in metrics
        ]
    data = ModelCardData(
        library_name="transformers",
        license=info["license"],
        tags=["mim_hub", method, "masked-image-modeling", "vision"],
        datasets=datasets or None,
        pipeline_tag=pipeline_tag,
        base_model=base_model,
        model_name=model_id,
        eval_results=eval_results,
    )
    config_json = json.dumps({k: v for k, v in model.config.to_dict().items() if k not in ("id2label", "label2id")}, indent=2, sort_keys=True, default=str)
    body = _fill(
        _template(method),
        {
            "model_id": model_id, "method_name": info["name"], "architecture": architecture, "paper": info["paper"],
            "repo": info["repo"], "license": info["license"], "provenance": provenance, "config_json": config_json,
            "num_parameters": f"{sum(p.numel() for p in model.parameters()):,}",
        },
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_model_card(output_dir: str, model, *, method: str, provenance: str, **kwargs) -> str:
    """Render the card (see `render_model_card`) and write it to `output_dir/README.md`."""
    card = render_model_card(model, method=method, provenance=provenance, **kwargs)
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path
