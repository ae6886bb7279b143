"""SparK: BERT-style masked modeling for convnets (keyu-tian/SparK, `pretrain/spark.py`,
`encoder.py`, `decoder.py`).

The image is masked on the encoder's 1/32 grid and encoded *sparsely*: the encoder is the plain
CNN run on the masked image with every conv/pool output re-masked and its norms restricted to
the visible positions (`sparse.py`). Each of the four stage maps is then *densified*: normed
(visible positions only), its masked positions filled with that scale's mask token, projected
to the decoder's width at that scale. A light UNet decoder upsamples from 1/32 to the image,
adding each densified map at its scale, and regresses per-patch-normalised pixels; the loss is
the mean squared error on the masked 32x32 patches.

The encoder is chosen once, at construction, by `config.backbone` (`ENCODERS`): timm's ResNet
(`modeling_spark_resnet.py`) or the official ConvNeXt (`modeling_spark_convnext.py`). Without a
mask they are plain CNNs, so `SparKModel` is the fine-tuning network and `SparKBackbone` the
detection/segmentation one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention
from transformers.utils import ModelOutput

from ... import initialization as init
from ...layers import patchify, unpatchify
from ..encoder import TransformersKwargs, Unpack, can_return_tuple, requested_outputs
from ..features import EncoderFeaturesMixin, FeatureStage
from ..modeling_common import ImageClassifierForwardMixin, MIMPreTrainedModel, classification_head
from .configuration_spark import DOWNSAMPLE_RATIO, SparKConfig
from .modeling_spark_convnext import ConvNeXtBlock, SparKConvNeXtEncoder
from .modeling_spark_resnet import SparKResNetEncoder
from .sparse import MaskedBatchNorm2d, MaskedConv2d, MaskedLayerNorm, VisibleMask

# config.backbone -> the encoder: the one place the architecture is chosen
ENCODERS = {"resnet": SparKResNetEncoder, "convnext": SparKConvNeXtEncoder}


@dataclass
class SparKModelOutput(BaseModelOutputWithPoolingAndNoAttention):
    """Base model output, as transformers' `ConvNextModel` / `ResNetModel`.

    last_hidden_state: [B, C, h, w] the last stage's map (stride 32). pooler_output: [B, C] the
    feature the original classifier receives (global average; ConvNeXt: then its LayerNorm).
    hidden_states: the stem's output, then each stage's map (when asked for). mask: [B, L] 1 =
    masked on the 1/32 grid, when the call masked the image (its maps are then the sparse
    encoder's: zero at masked positions).
    """

    mask: torch.FloatTensor | None = None


@dataclass
class SparKPreTrainingOutput(ModelOutput):
    """SparK pre-training output.

    loss: mean squared error on the masked patches of the per-patch-normalised image.
    reconstruction: [B, C, H, W] the decoder's output (per-patch-normalised pixel space; `logits`
    is the same tensor, for code that expects that name). mask: [B, L] 1 = masked, on the 1/32 grid
    (row-major). last_hidden_state: the sparse encoder's last map. hidden_states: the sparse
    encoder's stem and stage maps (when asked for).
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def visible_cells(noise: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """SparK's mask from its uniform draw `noise` [B, L]: the `round(L * (1 - mask_ratio))` cells
    of lowest noise are visible (`SparK.mask`). Returns bool [B, L], True = visible."""
    length = noise.shape[1]
    keep = round(length * (1 - mask_ratio))
    order = noise.argsort(dim=1)[:, :keep]
    return torch.zeros(noise.shape, dtype=torch.bool, device=noise.device).scatter_(1, order, True)


def spark_loss(pixel_values: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """SparK's loss: patches of 32x32 pixels normalised by their own mean and (unbiased variance
    + 1e-6) ** 0.5, the mean squared error of each patch, averaged over the masked ones (`mask`
    [B, L], 1 = masked); of the batch, or of each image with `per_image` ([B])."""
    target = patchify(pixel_values.to(reconstruction.dtype), DOWNSAMPLE_RATIO)
    mean = target.mean(dim=-1, keepdim=True)
    std = (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
    error = (patchify(reconstruction, DOWNSAMPLE_RATIO) - (target - mean) / std).square().mean(dim=-1)
    mask = mask.to(error.dtype)
    if per_image:
        return (error * mask).sum(1) / (mask.sum(1) + 1e-8)
    return (error * mask).sum() / (mask.sum() + 1e-8)


class SparKPreTrainedModel(MIMPreTrainedModel):
    config_class = SparKConfig
    base_model_prefix = "spark"
    _input_embed_layer = None  # a CNN has no patch embedding
    _no_split_modules = ["EncoderStage", "SparKDensify", "SparKDecoder"]
    # the hidden states (the stem's output, then every stage's map) are the encoder's own
    # outputs, collected by the forward as transformers' ConvNextModel / ResNetModel do
    _can_record_outputs = {}
    # no attention anywhere
    _supports_sdpa = _supports_flex_attn = _supports_flash_attn = _supports_attention_backend = False

    def _encoder_class(self):
        return ENCODERS[self.config.backbone]

    def num_layers_for_decay(self) -> int:
        """The original fine-tuning's lr-decay depth (N + 1: the head's layer id)."""
        return self._encoder_class().num_layers_for_decay(self.config)

    def layer_id(self, name: str) -> int:
        """The original's lr-decay layer (`get_layer_id_and_scale_exp` of downstream_imagenet):
        the encoder's parameters by stage and block, everything after it (head, decoder) last."""
        marker = f"{self.base_model_prefix}.encoder."
        if name.startswith("encoder."):
            name = marker + name
        if marker not in name:
            return self.num_layers_for_decay()
        return self._encoder_class().layer_id(name.split(marker, 1)[1], self.config)

    def get_input_embeddings(self):
        """The first convolution (the stem)."""
        encoder = getattr(self, self.base_model_prefix, self).encoder
        return encoder.conv1 if hasattr(encoder, "conv1") else encoder.downsample_layers[0][0]

    @torch.no_grad()
    def _init_weights(self, module):
        """The originals' init: timm's ResNet (kaiming-normal fan-out convs, unit BatchNorm, zero
        last BatchNorm of each residual branch), ConvNeXt and SparK's decoder (truncated-normal
        0.02 convs and Linears, zero biases, unit LayerNorm, layer scale at its initial value),
        mask tokens truncated-normal within +-0.02."""
        std = self.config.initializer_range
        if isinstance(module, MaskedConv2d) and module.init_mode == "kaiming":
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            init.trunc_normal_(module.weight, std=std)
        elif isinstance(module, nn.ConvTranspose2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)) and module.bias is not None:
            init.zeros_(module.bias)
        if isinstance(module, nn.BatchNorm2d):
            (init.zeros_ if getattr(module, "zero_init", False) else init.ones_)(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ConvNeXtBlock) and module.gamma is not None:
            init.constant_(module.gamma, float(self.config.layer_scale_init_value))
        elif isinstance(module, nn.ParameterList):  # SparKDensify's mask tokens (transformers visits the list, which holds them,
            for token in module:  # and passes over SparKDensify itself, a module with no parameters of its own)
                init.trunc_normal_(token, std=0.02, a=-0.02, b=0.02)


def _check_pixels(pixel_values: torch.Tensor, config: SparKConfig) -> tuple[int, int]:
    """The 1/32 grid of `pixel_values` ([B, C, H, W], sides multiples of 32)."""
    if pixel_values.dim() != 4 or pixel_values.shape[1] != config.num_channels:
        raise ValueError(f"pixel_values must be [batch, {config.num_channels}, height, width], got {tuple(pixel_values.shape)}")
    height, width = pixel_values.shape[-2:]
    if height % DOWNSAMPLE_RATIO or width % DOWNSAMPLE_RATIO:
        raise ValueError(f"SparK needs image sides that are multiples of {DOWNSAMPLE_RATIO}, got {height}x{width}")
    return height // DOWNSAMPLE_RATIO, width // DOWNSAMPLE_RATIO


def _visible_from_masked(bool_masked_pos: torch.Tensor, batch: int, grid: tuple[int, int]) -> torch.Tensor:
    """bool [B, 1, h, w], True = visible, from `bool_masked_pos` ([B, L] or [B, h, w], True = masked)."""
    length = grid[0] * grid[1]
    if bool_masked_pos.shape[0] != batch or bool_masked_pos[0].numel() != length:
        raise ValueError(f"bool_masked_pos must be [batch, cells] = [{batch}, {length}] or [{batch}, {grid[0]}, {grid[1]}] "
                         f"(the 1/{DOWNSAMPLE_RATIO} grid), got {tuple(bool_masked_pos.shape)}")
    return ~bool_masked_pos.reshape(batch, 1, grid[0], grid[1]).bool()


class SparKModel(EncoderFeaturesMixin, SparKPreTrainedModel):
    """SparK's encoder (ResNet or ConvNeXt, by `config.backbone`) as a plain CNN.

    Called without a mask it is the dense network the released encoders are loaded into (timm's
    ResNet, the official ConvNeXt): `last_hidden_state` is the last stage's map [B, C, H/32,
    W/32], `hidden_states` the stem's output and the four stages' maps (as transformers'
    `ConvNextModel` / `ResNetModel`), `pooler_output` the global average (ConvNeXt: then the
    fine-tuning LayerNorm, the official `norm`). With `bool_masked_pos` ([B, L] or [B, h, w] on the
    1/32 grid, True = masked) it is the sparse pre-training encoder: masked cells are zeroed in the
    input and stay zero through every layer, norms see only the visible positions, and the pooled
    feature averages the visible positions.
    """

    num_prefix_tokens = 0
    supports_interpolation = False  # (no position table: any multiple of 32 works as it is)
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^head\.", r"^densify\."]

    def __init__(self, config: SparKConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.encoder = self._encoder_class()(config)
        # the official ConvNeXt's fine-tuning `norm` on the pooled feature (timm's ResNet pools only)
        has_norm = add_pooling_layer and self.encoder.pooled_norm
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if has_norm else None
        self.post_init()

    @property
    def num_features(self) -> int:
        return self.config.hidden_size

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SparKModelOutput:
        visible = None
        if bool_masked_pos is not None:
            visible = _visible_from_masked(bool_masked_pos, pixel_values.shape[0], _check_pixels(pixel_values, self.config))
        maps = self.encode(pixel_values, visible)
        mask = None if visible is None else VisibleMask(visible)
        return SparKModelOutput(
            last_hidden_state=maps[-1], pooler_output=self._pool(maps[-1], mask),
            hidden_states=tuple(maps) if requested_outputs(self.config, kwargs)["output_hidden_states"] else None,
            mask=None if visible is None else (~visible).flatten(1).to(maps[-1].dtype),
        )

    def encode(self, pixel_values: torch.Tensor, visible: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The stem's output and the four stages' maps; sparse (zero at masked positions, norms on
        the visible ones) when `visible` ([B, 1, h, w] bool on the 1/32 grid, True = visible) is given."""
        _check_pixels(pixel_values, self.config)
        mask = VisibleMask(visible) if visible is not None else None
        pixel_values = pixel_values.to(self.get_input_embeddings().weight.dtype)  # (a model loaded in bf16 / fp16)
        # masked input (cells of 32x32 pixels), then the encoder
        return self.encoder(pixel_values if mask is None else mask.apply(pixel_values), mask)

    def _pool(self, last: torch.Tensor, mask: VisibleMask | None = None) -> torch.Tensor:
        """Global average of the last map (of its visible positions under a mask), then `fc_norm`."""
        if mask is None:
            pooled = last.mean(dim=(-2, -1))
        else:
            weight = mask.like(last).to(last.dtype)
            pooled = (last * weight).sum(dim=(-2, -1)) / weight.sum(dim=(-2, -1)).clamp(min=1)
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled

    def mean_patch_feature(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """The average of the last map over its positions (the probes' frozen feature)."""
        return last_hidden_state.mean(dim=(-2, -1))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The pooled feature of `forward_features`' map [B, C, h, w]."""
        return self._pool(features)

    def _feature_stages(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs):
        """The stem's output and the four stages' maps, as `FeatureStage`s (no prefix tokens)."""
        output = self(pixel_values, **{**kwargs, "output_hidden_states": True})
        stages = [FeatureStage(h.flatten(2).transpose(1, 2), tuple(h.shape[-2:]), 0) for h in output.hidden_states]
        return stages, output

    def _final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """A CNN has no final norm on its maps (ConvNeXt's norm is on the pooled feature)."""
        return tokens


class SparKDensify(nn.Module):
    """The densifying layers (`SparK.densify_norms/projs`, `mask_tokens`), smallest map first:
    per scale i, the encoder map is normed on its visible positions (`densify_norm`), its masked
    positions take `mask_tokens[i]`, and `projs[i]` brings it to the decoder's width at that scale
    (`decoder_hidden_size / 2**i`; 1x1 conv at 1/32, or nothing where the widths already match;
    3x3 convs above)."""

    def __init__(self, config: SparKConfig):
        super().__init__()
        self.norms, self.projs, self.mask_tokens = nn.ModuleList(), nn.ModuleList(), nn.ParameterList()
        width = config.decoder_hidden_size
        for index, channels in enumerate(reversed(config.hidden_sizes)):
            self.mask_tokens.append(nn.Parameter(torch.zeros(1, channels, 1, 1)))
            norm = {"bn": lambda: MaskedBatchNorm2d(channels), "ln": lambda: MaskedLayerNorm(channels, eps=1e-6),
                    "none": nn.Identity}[config.densify_norm]()
            self.norms.append(norm)
            if index == 0 and channels == width:
                self.projs.append(nn.Identity())
            else:
                kernel = 1 if index == 0 else 3
                self.projs.append(nn.Conv2d(channels, width, kernel_size=kernel, padding=kernel // 2, bias=True))
            width //= 2

    def forward(self, features: list[torch.Tensor], mask: VisibleMask) -> list[torch.Tensor]:
        densified = []
        for index, feature in enumerate(reversed(features)):
            norm = self.norms[index]
            feature = norm(feature, mask) if not isinstance(norm, nn.Identity) else feature
            # masked positions take this scale's mask token
            feature = torch.where(mask.like(feature), feature, self.mask_tokens[index].to(feature.dtype))
            if isinstance(self.projs[index], nn.Identity):  # straight into the decoder: with canonical strides (torch.compile
                feature = feature.clone(memory_format=torch.contiguous_format)  # trips over a permuted 1x1 map's)
            densified.append(self.projs[index](feature))
        return densified


class SparKUNetBlock(nn.Module):
    """2x upsampling (4x4/2 transposed conv), then 3x3 conv, BatchNorm, ReLU6, 3x3 conv, BatchNorm."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up_sample = nn.ConvTranspose2d(cin, cin, kernel_size=4, stride=2, padding=1, bias=True)
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cin, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
            nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up_sample(x))


class SparKDecoder(nn.Module):
    """SparK's light UNet decoder (`LightDecoder`): five 2x blocks from 1/32 to the full image,
    width halving from `decoder_hidden_size`, each of the first four scales adding its densified
    map before its block; a 1x1 conv to the image's channels."""

    def __init__(self, config: SparKConfig):
        super().__init__()
        widths = [config.decoder_hidden_size // 2**i for i in range(6)]
        self.blocks = nn.ModuleList([SparKUNetBlock(cin, cout) for cin, cout in zip(widths[:-1], widths[1:])])
        self.proj = nn.Conv2d(widths[-1], config.num_channels, kernel_size=1, bias=True)

    def forward(self, densified: list[torch.Tensor]) -> torch.Tensor:
        x = 0
        for index, block in enumerate(self.blocks):
            if index < len(densified):
                x = x + densified[index]
            x = block(x)
        return self.proj(x)


class SparKForPreTraining(SparKPreTrainedModel):
    """SparK pre-training: sparse encoder, densifying, light decoder, loss on the masked patches.

    The mask is on the 1/32 grid (L = H/32 * W/32 cells). Give `noise` [B, L] (the `torch.rand`
    draw of the original's `SparK.mask`: the `round(L * (1 - mask_ratio))` lowest cells stay
    visible) or `bool_masked_pos` ([B, L] or [B, h, w], True = masked); given both, they must
    agree. Without either the model draws `noise` with `torch.rand` on the CPU, as the original.
    Returns `loss`, `reconstruction` [B, C, H, W] (per-patch-normalised pixels) and `mask`
    [B, L] (1 = masked). `reconstruction_of` / `unnormalize` turn it back into pixels.
    """

    def __init__(self, config: SparKConfig):
        super().__init__(config)
        self.spark = SparKModel(config, add_pooling_layer=False)
        self.densify = SparKDensify(config)
        self.decoder = SparKDecoder(config)
        self.post_init()

    def visible_cells(self, pixel_values: torch.Tensor, noise: torch.Tensor | None = None,
                      bool_masked_pos: torch.Tensor | None = None, mask_ratio: float | None = None) -> torch.Tensor:
        """bool [B, 1, h, w], True = visible, from `noise` or `bool_masked_pos` (or a fresh draw)."""
        batch, grid = pixel_values.shape[0], _check_pixels(pixel_values, self.config)
        length = grid[0] * grid[1]
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        from_noise = None
        if noise is not None or bool_masked_pos is None:
            if noise is None:
                noise = torch.rand(batch, length)  # the original draws on the CPU's default generator
            if tuple(noise.shape) != (batch, length):
                raise ValueError(f"noise must be [batch, cells] = [{batch}, {length}] (the 1/{DOWNSAMPLE_RATIO} grid), got {tuple(noise.shape)}")
            from_noise = visible_cells(noise, ratio).to(pixel_values.device).view(batch, 1, *grid)
        if bool_masked_pos is None:
            return from_noise
        visible = _visible_from_masked(bool_masked_pos.to(pixel_values.device), batch, grid)
        if from_noise is not None and not torch.equal(visible, from_noise):
            raise ValueError("noise and bool_masked_pos describe different masks: give one of them")
        return visible

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SparKPreTrainingOutput:
        visible = self.visible_cells(pixel_values, noise, bool_masked_pos, mask_ratio)
        # sparse encoding of the visible cells: stem and four stage maps, zero at masked positions
        maps = self.spark.encode(pixel_values, visible)
        # densify: norm, mask tokens, projection to the decoder's widths (smallest map first)
        densified = self.densify(maps[1:], VisibleMask(visible))
        # decode the whole image
        reconstruction = self.decoder(densified)
        # loss on the masked patches only
        mask = (~visible).flatten(1).to(reconstruction.dtype)
        loss = spark_loss(pixel_values, reconstruction.float(), mask)
        return SparKPreTrainingOutput(
            loss=loss, reconstruction=reconstruction, logits=reconstruction, mask=mask, last_hidden_state=maps[-1],
            hidden_states=tuple(maps) if requested_outputs(self.config, kwargs)["output_hidden_states"] else None,
        )

    def reconstruction_of(self, pixel_values: torch.Tensor, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        """What `mim_hub.reconstruction.reconstruct` draws: (the prediction per 32x32 patch
        [B, L, 32*32*C], per-patch normalised; the loss of each image [B] on its masked patches)."""
        reconstruction = outputs.reconstruction.float()
        return patchify(reconstruction, DOWNSAMPLE_RATIO), spark_loss(pixel_values, reconstruction, outputs.mask.float(), per_image=True)

    def unnormalize(self, pixel_values: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """The reconstruction in the input's pixel space: each 32x32 patch de-normalised with the
        input patch's mean and std (what the original's `vis=True` pastes into the masked cells)."""
        target = patchify(pixel_values.to(reconstruction.dtype), DOWNSAMPLE_RATIO)
        mean, std = target.mean(dim=-1, keepdim=True), (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
        grid = (pixel_values.shape[-2] // DOWNSAMPLE_RATIO, pixel_values.shape[-1] // DOWNSAMPLE_RATIO)
        return unpatchify(patchify(reconstruction, DOWNSAMPLE_RATIO) * std + mean, DOWNSAMPLE_RATIO, self.config.num_channels, grid)


class SparKForImageClassification(ImageClassifierForwardMixin, SparKPreTrainedModel):
    """SparK's fine-tuning model: the dense CNN's pooled feature (global average; ConvNeXt: then
    its LayerNorm) into a linear head (timm ResNet's `fc`, the official ConvNeXt's `head`)."""

    # a classifier started from a pre-training checkpoint leaves its decoder out
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^densify\."]

    def __init__(self, config: SparKConfig):
        super().__init__(config)
        self.spark = SparKModel(config)
        self.head = classification_head(config)
        self.post_init()


__all__ = ["SparKPreTrainedModel", "SparKModel", "SparKForPreTraining", "SparKForImageClassification", "SparKDensify", "SparKDecoder",
           "spark_loss", "visible_cells"]
