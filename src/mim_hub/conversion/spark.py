"""Original SparK checkpoints (keyu-tian/SparK) -> mim_hub SparK models.

Kinds, told apart by their keys:
- pre-training with decoder (`*_withdecoder_1kpretrained_spark_style.pth`: `{"module": ...,
  "args", "input_size", "arch", "epoch", "optimizer", ...}` or the bare module dict):
  `sparse_encoder.sp_cnn.*`, `densify_*`, `mask_tokens.*`, `dense_decoder.*` ->
  `SparKForPreTraining`. The module's non-tensor `config` entry is read for the mask ratio and the
  input size (then dropped, with the optimizer), and the unused `imn_m` / `imn_s` / `norm_black`
  buffers are dropped (`norm_black` [1, 3, H, W] tells the input size too);
- encoder only (`resnet*_1kpretrained_timm_style.pth`, `convnext*_1kpretrained_official_style.pth`:
  a bare state dict of the CNN) -> `SparKModel`. The official ConvNeXt's fine-tuning `norm` is not
  in these files: it starts as the identity LayerNorm, as the official code initialises it;
- a fine-tuned classifier of the same CNNs (timm ResNet `fc.*`; official ConvNeXt `norm.*` +
  `head.*`) -> `SparKForImageClassification`.

The backbone (timm ResNet: `conv1`, `layer1..4`; official ConvNeXt: `downsample_layers`,
`stages`), every stage's depth and width, the block type, the decoder width and the densifying
norm are read from tensor shapes. What shapes cannot tell (`image_size` of an encoder file,
`mask_ratio`, `drop_path_rate`) comes from `--config`, else the checkpoint's own config, else
the released defaults.
"""

from __future__ import annotations

import torch

from ..models.spark import SparKConfig, SparKForImageClassification, SparKForPreTraining, SparKImageProcessor, SparKModel
from .common import apply_overrides, build_and_load, count_indexed, require_keys
from .loading import CheckpointError, find_state_dict, load_checkpoint

ENCODER_PREFIX = "sparse_encoder.sp_cnn."
# buffers of the original pre-training module that no forward uses
UNUSED_BUFFERS = ("imn_m", "imn_s", "norm_black")
# original pre-training module prefix -> ours
PRETRAINING_RENAMES = (
    (ENCODER_PREFIX, "spark.encoder."), ("dense_decoder.dec.", "decoder.blocks."), ("dense_decoder.proj.", "decoder.proj."),
    ("densify_norms.", "densify.norms."), ("densify_projs.", "densify.projs."), ("mask_tokens.", "densify.mask_tokens."),
)


def infer_cnn_config(state: dict[str, torch.Tensor], source: str) -> dict:
    """The CNN's config fields from its tensor shapes (keys as timm's ResNet or the official ConvNeXt)."""
    if "conv1.weight" in state:
        stem = state["conv1.weight"]
        depths = [count_indexed(state, f"layer{stage}.") for stage in range(1, 5)]
        if 0 in depths or count_indexed(state, "layer5.") or len(state["conv1.weight"].shape) != 4 or stem.shape[-1] != 7:
            raise CheckpointError(f"{source}: not a timm ResNet with a 7x7 stem and four stages (layer1..layer4: {depths})")
        bottleneck = "layer1.0.conv3.weight" in state
        last_conv = "conv3" if bottleneck else "conv2"
        require_keys(state, [f"layer{stage}.0.{last_conv}.weight" for stage in range(1, 5)], source, "timm ResNet")
        return dict(backbone="resnet", num_channels=stem.shape[1], embedding_size=stem.shape[0], depths=depths,
                    layer_type="bottleneck" if bottleneck else "basic",
                    hidden_sizes=[state[f"layer{stage}.0.{last_conv}.weight"].shape[0] for stage in range(1, 5)])
    if "downsample_layers.0.0.weight" in state:
        stem = state["downsample_layers.0.0.weight"]
        depths = [count_indexed(state, f"stages.{stage}.") for stage in range(4)]
        if 0 in depths or count_indexed(state, "stages.") != 4 or count_indexed(state, "downsample_layers.") != 4:
            raise CheckpointError(f"{source}: not an official ConvNeXt with four stages (stages.0..3 depths {depths})")
        return dict(backbone="convnext", num_channels=stem.shape[1], depths=depths,
                    hidden_sizes=[state[f"stages.{stage}.0.dwconv.weight"].shape[0] for stage in range(4)],
                    layer_scale_init_value=1e-6 if "stages.0.0.gamma" in state else 0.0)
    raise CheckpointError(f"{source}: not a SparK checkpoint: neither a timm ResNet ('conv1.*', 'layer1.*') nor an official ConvNeXt "
                          f"('downsample_layers.*', 'stages.*') nor SparK's pre-training module ('{ENCODER_PREFIX}*'); found {sorted(state)[:5]}")


def _densify_norm(state: dict[str, torch.Tensor]) -> str:
    if "densify_norms.0.running_mean" in state:
        return "bn"
    return "ln" if "densify_norms.0.weight" in state else "none"


def _pretraining(state: dict[str, torch.Tensor], module_config: dict, source: str) -> tuple[dict, callable]:
    encoder = {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    fields = infer_cnn_config(encoder, source)
    require_keys(state, ["dense_decoder.dec.0.up_sample.weight", "dense_decoder.proj.weight", "mask_tokens.0"], source, "SparK pre-training")
    fields.update(decoder_hidden_size=state["dense_decoder.dec.0.up_sample.weight"].shape[0], densify_norm=_densify_norm(state))
    if count_indexed(state, "dense_decoder.dec.") != 5:
        raise CheckpointError(f"{source}: SparK's decoder has 5 upsampling blocks, this one {count_indexed(state, 'dense_decoder.dec.')}")
    if "norm_black" in state:  # [1, 3, H, W]: the pre-training input size
        fields["image_size"] = list(state["norm_black"].shape[-2:]) if state["norm_black"].shape[-2] != state["norm_black"].shape[-1] \
            else int(state["norm_black"].shape[-1])
    elif isinstance(module_config.get("sparse_encoder.input_size"), int):
        fields["image_size"] = module_config["sparse_encoder.input_size"]
    if isinstance(module_config.get("mask_ratio"), float):
        fields["mask_ratio"] = module_config["mask_ratio"]

    def rename(key: str) -> str | None:
        for old, new in PRETRAINING_RENAMES:
            if key.startswith(old):
                return new + key[len(old):]
        return None

    return fields, rename


def convert_state(state: dict[str, torch.Tensor], overrides: dict, source: str, module_config: dict | None = None):
    """A SparK model from an original state dict (any kind above), loaded strictly."""
    state = {k: v for k, v in state.items() if k not in UNUSED_BUFFERS}
    if any(k.startswith(ENCODER_PREFIX) for k in state):
        fields, rename = _pretraining(state, module_config or {}, source)
        model_class = SparKForPreTraining
    else:
        fields = infer_cnn_config(state, source)
        convnext = fields["backbone"] == "convnext"
        head = "head.weight" if convnext else "fc.weight"
        if head in state:
            fields["num_labels"] = state[head].shape[0]
            model_class, prefix = SparKForImageClassification, "spark."
        else:
            model_class, prefix = SparKModel, ""
            if convnext and "norm.weight" not in state:  # the fine-tuning norm: the official init (identity)
                width = fields["hidden_sizes"][-1]
                state = {**state, "norm.weight": torch.ones(width), "norm.bias": torch.zeros(width)}

        def rename(key: str) -> str | None:
            if key.startswith(("head.", "fc.")) and model_class is SparKForImageClassification:
                return "head." + key.split(".", 1)[1]
            if key.startswith("norm.") and convnext:
                return prefix + "fc_norm." + key[len("norm."):]
            return prefix + "encoder." + key

    config = apply_overrides(SparKConfig(**fields), overrides)
    return build_and_load(model_class, config, state, rename, source)


def _module_config(checkpoint) -> dict:
    """The original module's `config` entry (`SparK.get_config()`), where the file has one."""
    if not isinstance(checkpoint, dict):
        return {}
    module = checkpoint.get("module", checkpoint)
    value = module.get("config") if isinstance(module, dict) else None
    return dict(value) if isinstance(value, dict) else {}


def convert_checkpoint(path: str, overrides: dict):
    checkpoint = load_checkpoint(path)
    state = find_state_dict(checkpoint, path, keys=("module", "model", "state_dict"))
    model = convert_state(state, overrides, path, _module_config(checkpoint))
    return model, SparKImageProcessor.for_image_size(model.config.image_hw[0])
