"""How `finetune`'s model flags reach each method's classifier config, or are refused.

Methods spell the same choice differently: the classifier's pooling is `use_mean_pooling` (MAE,
ColorMAE, SimMIM, CAE, MR-MAE) or `pooling` ("cls"/"mean", CRATE-MAE); stochastic depth is
`drop_path_rate`, which CRATE-MAE has not. A flag that cannot reach the model is refused with a
message naming the method, never dropped: a `--pooling mean` that a config ignores fine-tunes on
the cls token while the kNN and linear probe use mean-pooled features.
"""

from __future__ import annotations

DEFAULT_POOLING = "mean"
DEFAULT_DROP_PATH = 0.1


def _fields(config_class) -> set[str]:
    return set(getattr(config_class, "__dataclass_fields__", {}))


def classifier_config_overrides(method: str, config_class, *, pooling: str | None, drop_path: float | None) -> dict:
    """The config keyword arguments that carry `pooling` and `drop_path` into `method`'s
    classifier. None means the method's fine-tuning default: mean pooling where the method can
    choose, stochastic depth 0.1 where it has stochastic depth. An explicit value the method
    cannot take raises ValueError."""
    fields, overrides = _fields(config_class), {}
    if pooling is not None and pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    if "use_mean_pooling" in fields:
        overrides["use_mean_pooling"] = (pooling or DEFAULT_POOLING) == "mean"
    elif "pooling" in fields:
        overrides["pooling"] = pooling or DEFAULT_POOLING
    elif pooling is not None:
        raise ValueError(f"{method} classifiers have one fixed pooling (no pooling field in {config_class.__name__}): "
                         f"--pooling {pooling} cannot apply; leave it out")
    if "drop_path_rate" in fields:
        overrides["drop_path_rate"] = DEFAULT_DROP_PATH if drop_path is None else drop_path
    elif drop_path:  # 0 is what the model does anyway
        raise ValueError(f"{method} models have no stochastic depth (no drop_path_rate in {config_class.__name__}): "
                         f"--drop-path {drop_path} cannot apply; leave it out or give 0")
    return overrides


def check_pooling_applies(model, pooling: str | None) -> str:
    """The pooling the loaded classifier uses; `pooling="cls"` on an encoder without a cls token
    (Swin, MR-MAE without `use_cls_token`) is refused (its "token 0" would be a patch)."""
    prefix = getattr(model.base_model, "num_prefix_tokens", None)
    if pooling == "cls" and prefix == 0:
        raise ValueError(f"{type(model).__name__} has no cls token: --pooling cls cannot apply; use --pooling mean")
    config = model.config
    if hasattr(config, "use_mean_pooling") and prefix != 0:
        return "mean" if config.use_mean_pooling else "cls"
    if isinstance(getattr(config, "pooling", None), str):
        return config.pooling
    return "mean" if prefix == 0 else "the model's own"


def selection_and_evaluation(trainer, validation_data, eval_data) -> dict:
    """The metrics of a finished fine-tune: `validation_accuracy` of the kept model (the best
    epoch on the validation split, when there is one) and `eval_accuracy` on the evaluation split,
    which is looked at once, here, and never chooses anything."""
    metrics = {}
    if validation_data is not None:
        metrics.update(trainer.evaluate(eval_dataset=validation_data, metric_key_prefix="validation"))
    if eval_data is not None:
        metrics.update(trainer.evaluate(eval_dataset=eval_data, metric_key_prefix="eval"))
    return metrics


def write_settings(output_dir: str, settings: dict) -> str:
    """`finetune_settings.json` in `output_dir`: the settings a fine-tune actually used (the
    effective lr after batch scaling, the pooling, the validation split), beside the model."""
    import json
    import os

    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "finetune_settings.json")
    with open(path, "w") as handle:
        json.dump(settings, handle, indent=1, default=str)
    return path
