"""A SparK encoder as transformers' own `ConvNextModel` / `ResNetModel`, so a SparK-pre-trained
backbone drops into UperNet, Mask2Former or DETR through transformers' standard backbone configs
(`ConvNextConfig` / `ResNetConfig` as `backbone_config`, `ConvNextBackbone` / `ResNetBackbone`).

    from mim_hub import SparKModel
    from mim_hub.models.spark.export_transformers import to_transformers
    hf = to_transformers(SparKModel.from_pretrained("converted/resnet50"))   # a ResNetModel
    hf.save_pretrained("resnet50-spark-hf")   # loads with transformers alone, no mim_hub
    # UperNetConfig(backbone_config=ResNetConfig.from_pretrained(...)) ... or
    # ResNetBackbone.from_pretrained("resnet50-spark-hf", out_features=["stage1", ..., "stage4"])

From the command line: `python -m mim_hub.models.spark.export_transformers SPARK_FOLDER OUTPUT`.

The networks are the same (timm's ResNet is transformers' with `downsample_in_bottleneck=False`
and the stride on the 3x3 conv; the official ConvNeXt is transformers' ConvNext): only the keys
are renamed, and the outputs are equal (tests/models/test_spark.py).
"""

from __future__ import annotations

import re

import torch
from transformers import ConvNextConfig, ConvNextModel, ResNetConfig, ResNetModel

from .configuration_spark import SparKConfig


def _resnet_config(config: SparKConfig) -> ResNetConfig:
    return ResNetConfig(num_channels=config.num_channels, embedding_size=config.embedding_size, hidden_sizes=list(config.hidden_sizes),
                        depths=list(config.depths), layer_type=config.layer_type, hidden_act="relu", downsample_in_first_stage=False,
                        downsample_in_bottleneck=False, drop_path_rate=config.drop_path_rate)


def _convnext_config(config: SparKConfig) -> ConvNextConfig:
    return ConvNextConfig(num_channels=config.num_channels, patch_size=4, num_stages=len(config.depths), hidden_sizes=list(config.hidden_sizes),
                          depths=list(config.depths), hidden_act="gelu", layer_norm_eps=config.layer_norm_eps,
                          layer_scale_init_value=config.layer_scale_init_value, drop_path_rate=config.drop_path_rate,
                          image_size=config.image_hw[0])


def _resnet_key(key: str) -> str | None:
    """timm ResNet key (our encoder's) -> transformers' ResNetModel key."""
    stem = {"conv1.": "embedder.embedder.convolution.", "bn1.": "embedder.embedder.normalization."}
    for old, new in stem.items():
        if key.startswith(old):
            return new + key[len(old):]
    match = re.match(r"layer(\d)\.(\d+)\.(.*)", key)
    if not match:
        return None
    stage, block, rest = int(match.group(1)) - 1, match.group(2), match.group(3)
    prefix = f"encoder.stages.{stage}.layers.{block}."
    part = re.match(r"(conv|bn)(\d)\.(.*)", rest)
    if part:
        return f"{prefix}layer.{int(part.group(2)) - 1}.{'convolution' if part.group(1) == 'conv' else 'normalization'}.{part.group(3)}"
    part = re.match(r"downsample\.([01])\.(.*)", rest)
    if part:
        return f"{prefix}shortcut.{'convolution' if part.group(1) == '0' else 'normalization'}.{part.group(2)}"
    return None


def _convnext_key(key: str) -> str | None:
    """Official ConvNeXt key (our encoder's; `fc_norm` is the pooled norm) -> transformers' ConvNextModel key."""
    if key.startswith("downsample_layers.0."):
        rest = key[len("downsample_layers.0."):]
        return ("embeddings.patch_embeddings." if rest.startswith("0.") else "embeddings.layernorm.") + rest[2:]
    match = re.match(r"downsample_layers\.(\d)\.(.*)", key)
    if match:
        return f"encoder.stages.{match.group(1)}.downsampling_layer.{match.group(2)}"
    match = re.match(r"stages\.(\d)\.(\d+)\.(.*)", key)
    if match:
        rest = match.group(3).replace("norm.", "layernorm.", 1) if match.group(3).startswith("norm.") else match.group(3)
        rest = "layer_scale_parameter" if rest == "gamma" else rest
        return f"encoder.stages.{match.group(1)}.layers.{match.group(2)}.{rest}"
    if key.startswith("fc_norm."):
        return "layernorm." + key[len("fc_norm."):]
    return None


EXPORTS = {"resnet": (_resnet_config, ResNetModel, _resnet_key), "convnext": (_convnext_config, ConvNextModel, _convnext_key)}


@torch.no_grad()
def to_transformers(model) -> ResNetModel | ConvNextModel:
    """transformers' `ResNetModel` / `ConvNextModel` holding the encoder of `model` (any SparK
    model: base, pre-training, classifier or backbone), in eval mode. Every transformers key is
    filled from ours (ConvNeXt's pooled `layernorm` from `fc_norm`, the identity where `model` has
    none), and every encoder tensor is used."""
    base = getattr(model, "spark", model)
    config = base.config
    make_config, model_class, rename = EXPORTS[config.backbone]
    exported = model_class(make_config(config)).eval()
    theirs = exported.state_dict()
    state = {}
    for key, value in base.state_dict().items():
        ours = key[len("encoder."):] if key.startswith("encoder.") else key
        name = rename(ours)
        if name is None or name not in theirs or theirs[name].shape != value.shape:
            raise ValueError(f"{type(model).__name__}: no transformers {model_class.__name__} key of the shape of '{key}' ({name})")
        state[name] = value
    left = sorted(set(theirs) - set(state))
    if left == ["layernorm.bias", "layernorm.weight"]:  # a SparK ConvNeXt without its pooled norm: the official init
        state.update({"layernorm.weight": torch.ones_like(theirs["layernorm.weight"]), "layernorm.bias": torch.zeros_like(theirs["layernorm.bias"])})
    elif left:
        raise ValueError(f"{model_class.__name__} keys with no SparK value: {left[:10]}")
    exported.load_state_dict(state, strict=True)
    return exported.to(next(base.parameters()).dtype)


__all__ = ["to_transformers"]


def main(argv: list[str] | None = None) -> int:
    """`python -m mim_hub.models.spark.export_transformers SAVED_SPARK_FOLDER OUTPUT_FOLDER`: the
    folder of transformers' `ResNetModel` / `ConvNextModel` (config.json, model.safetensors and
    the processor), loadable with transformers alone."""
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser(prog="python -m mim_hub.models.spark.export_transformers", description=main.__doc__)
    parser.add_argument("model", help="a saved SparK model folder (any of its classes)")
    parser.add_argument("output", help="where transformers' model is written (must not exist)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.model):
        print(f"error: {args.model} is not a saved model folder", file=sys.stderr)
        return 2
    if os.path.exists(args.output):
        print(f"error: {args.output} exists", file=sys.stderr)
        return 2
    import mim_hub  # noqa: F401  (registers SparK with the Auto classes)
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    from ...utils.atomic import atomic_folder

    config = AutoConfig.from_pretrained(args.model)
    if config.model_type != "spark":
        print(f"error: {args.model} holds a {config.model_type} model, not SparK", file=sys.stderr)
        return 2
    exported = to_transformers(AutoModel.from_pretrained(args.model))
    with atomic_folder(os.path.abspath(args.output)) as folder:
        exported.save_pretrained(folder)
        if os.path.isfile(os.path.join(args.model, "preprocessor_config.json")):
            AutoImageProcessor.from_pretrained(args.model).save_pretrained(folder)
    print(f"wrote transformers' {type(exported).__name__} to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
