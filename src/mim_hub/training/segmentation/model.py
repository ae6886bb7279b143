"""The segmentation model: transformers' `UperNetForSemanticSegmentation` on a mim_hub backbone
(the stages it feeds are those the backbone's config reports), its layer-wise lr decay, mmseg's
poly schedule, and the image processor that makes whole-image inputs."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoImageProcessor, UperNetConfig, UperNetForSemanticSegmentation

from ...data.segmentation import IGNORE_INDEX
from ..optim import layer_decay_groups


def segmentation_stages(config) -> tuple[list[str], bool]:
    """(out_features, add_fpn) of the recipe for a method config: what its backbone reports
    (`segmentation_stages`, models/backbone_config.py)."""
    return config.segmentation_stages()


def build_upernet(model_dir: str, num_labels: int, *, label_names: list[str] | None = None, channels: int = 512,
                  auxiliary_channels: int = 256, from_scratch: bool = False, drop_path: float | None = None,
                  auxiliary_loss_weight: float = 0.4):
    """UperNet on the backbone of the saved model at `model_dir` (its encoder weights, unless
    `from_scratch`: the same network, randomly initialised)."""
    config = AutoConfig.from_pretrained(model_dir)
    if drop_path is not None and hasattr(config, "drop_path_rate"):
        config.drop_path_rate = drop_path
    out_features, add_fpn = segmentation_stages(config)
    config.add_fpn = add_fpn
    config.out_features = out_features
    names = label_names or [str(i) for i in range(num_labels)]
    upernet_config = UperNetConfig(
        backbone_config=config, num_labels=num_labels, hidden_size=channels, auxiliary_channels=auxiliary_channels,
        auxiliary_in_channels=None, use_auxiliary_head=len(out_features) >= 3, auxiliary_loss_weight=auxiliary_loss_weight,
        loss_ignore_index=IGNORE_INDEX, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )
    model = UperNetForSemanticSegmentation(upernet_config)
    if not from_scratch:
        backbone_class = type(model.backbone)
        pretrained = backbone_class.from_pretrained(model_dir, config=config)
        state = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("neck.")}
        missing, unexpected = model.backbone.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("neck.")]
        if missing or unexpected:
            raise ValueError(f"{model_dir}: backbone weights do not fit (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model


def param_groups_segmentation(model, weight_decay: float, layer_decay: float) -> list[dict]:
    """Layer-wise lr decay through the backbone (its own `layer_id` / `num_layers_for_decay`,
    the pyramid neck at the full lr) and the full lr for the decode heads; no weight decay on
    biases, norms, tokens and position tables."""
    backbone = model.backbone
    num_layers = backbone.num_layers_for_decay()

    def layer_of(name: str) -> int:
        if name.startswith("backbone.") and not name.startswith("backbone.neck."):
            return backbone.layer_id(name[len("backbone."):])
        return num_layers

    return layer_decay_groups(model.named_parameters(), layer_of, num_layers, {f"backbone.{n}" for n in backbone.no_weight_decay()},
                              weight_decay, layer_decay)


def poly_with_warmup(optimizer, warmup_steps: int, total_steps: int, power: float = 1.0, min_lr_ratio: float = 0.0):
    """mmseg's schedule: linear warm-up, then (1 - progress) ** power; `lr_scale` per group."""
    scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda s, k=k: factor(s) * k for k in scales])


def segmentation_processor(model_dir: str, size: int):
    """The saved model's image processor, making `size` x `size` inputs without a crop (so that
    predictions map back onto the whole image)."""
    processor = AutoImageProcessor.from_pretrained(model_dir)
    processor.do_center_crop = False
    processor.size = {"height": size, "width": size}
    return processor


def input_size(config) -> int:
    size = config.image_size
    return int(size if isinstance(size, int) else size[0])
