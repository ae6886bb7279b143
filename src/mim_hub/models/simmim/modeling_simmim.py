"""SimMIM: mask tokens replace masked patches, the whole image is encoded, and a one-layer
decoder (1x1 conv + PixelShuffle) regresses raw pixels with an L1 loss on the masked ones
(microsoft/SimMIM, `models/simmim.py`).

The encoder is chosen once, when the model is built, by `config.backbone`: BEiT's ViT
(`modeling_simmim_vit.py`) or Swin (`modeling_simmim_swin.py`). Each encoder module answers the
questions that differ between them (its prefix tokens, pooling, output grid, layer ids for lr
decay, feature stages); the model, the decoder and the loss below are the same for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from ... import initialization as init
from ...layers import Attention, LayerScale, ViTBlock, patchify
from ...layers.masking import flat_bool_mask
from ...layers.relative_position import RelativePositionBias, relative_position_index
from ..encoder import FinalNormMixin, TransformersKwargs, Unpack, block_recorders, can_return_tuple, record_outputs
from ..features import EncoderFeaturesMixin
from ..modeling_common import ImageClassifierForwardMixin, MIMModelOutput, MIMPreTrainedModel, classification_head
from .configuration_simmim import SimMIMConfig
from .modeling_simmim_swin import SwinBlock, SwinEmbeddings, SwinEncoder
from .modeling_simmim_vit import SimMIMViTEmbeddings, SimMIMViTEncoder

# config.backbone -> (embeddings, encoder): the one place the architecture is chosen
ARCHITECTURES = {"vit": (SimMIMViTEmbeddings, SimMIMViTEncoder), "swin": (SwinEmbeddings, SwinEncoder)}


@dataclass
class SimMIMPreTrainingOutput(ModelOutput):
    """SimMIM pre-training output.

    loss: L1 on the masked pixels. reconstruction: [B, C, H, W] the decoder's prediction of every
    pixel (`logits` is the same tensor, for code that expects that name). mask: [B, L] 1 = masked
    (model-patch resolution). last_hidden_state: the encoder output after its final norm.
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def simmim_loss(pixel_values: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor, patch_size: int,
                per_image: bool = False) -> torch.Tensor:
    """SimMIM's loss: L1 over the masked pixels, `sum(|x - x_rec| * m) / (sum(m) + 1e-5) / C`,
    with the patch mask `mask` [B, h, w] upsampled by `patch_size` (sum(m) counts one channel);
    of the batch, or of each image with `per_image` ([B])."""
    pixels = mask.to(reconstruction.dtype).repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2).unsqueeze(1)
    l1 = F.l1_loss(pixel_values.to(reconstruction.dtype), reconstruction, reduction="none")
    if per_image:
        return (l1 * pixels).sum((1, 2, 3)) / (pixels.sum((1, 2, 3)) + 1e-5) / pixel_values.shape[1]
    return (l1 * pixels).sum() / (pixels.sum() + 1e-5) / pixel_values.shape[1]


def random_block_mask(batch: int, grid: tuple[int, int], config: SimMIMConfig, device=None, generator=None) -> torch.Tensor:
    """SimMIM-style masks drawn in torch ([B, h*w] bool): blocks of `mask_patch_size` pixels,
    `ceil(blocks * mask_ratio)` of them masked per image (the distribution of `SimMIMMaskGenerator`)."""
    scale = config.mask_patch_size // config.patch_size
    rows, cols = -(-grid[0] // scale), -(-grid[1] // scale)
    count = rows * cols
    masked = int(math.ceil(count * config.mask_ratio))
    order = torch.rand(batch, count, device=device, generator=generator).argsort(dim=1)
    blocks = torch.zeros(batch, count, device=device, dtype=torch.bool)
    blocks.scatter_(1, order[:, :masked], True)
    blocks = blocks.view(batch, rows, cols).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return blocks[:, : grid[0], : grid[1]].reshape(batch, -1)


class SimMIMPreTrainedModel(MIMPreTrainedModel):
    config_class = SimMIMConfig
    base_model_prefix = "simmim"
    _no_split_modules = ["ViTBlock", "SwinBlock"]
    _can_record_outputs = block_recorders(ViTBlock, SwinBlock)

    def layer_id(self, name: str) -> int:
        """0 for the embeddings, the encoder's id for its blocks (ViT: 1 + the block index; Swin:
        SimMIM's `get_swin_layer`), `num_layers_for_decay()` for the rest (final norm, head)."""
        if any(key in name for key in ("patch_embed", "pos_embed", "cls_token", "mask_token", "embeddings")):
            return 0
        found = None if name.startswith("decoder") else self.base_model.encoder.layer_id(name)
        return self.num_layers_for_decay() if found is None else found

    @torch.no_grad()
    def _init_weights(self, module):
        """The originals' init: truncated-normal(0.02) Linear and conv weights, zero biases,
        unit LayerNorm, zero ViT relative tables (Swin: truncated-normal), layer scale at its
        initial value, and ViT's per-depth rescaling of each block's output projections."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, RelativePositionBias):
            # a non-persistent buffer: from_pretrained leaves it uninitialised
            init.copy_(module.relative_position_index, relative_position_index(module.window_size, module.cls_token))
            if module.cls_token:
                init.zeros_(module.relative_position_bias_table)
            else:
                init.trunc_normal_(module.relative_position_bias_table, std=std)
        elif isinstance(module, LayerScale):
            init.constant_(module.gamma, float(self.config.layer_scale_init_value or 1.0))
        elif isinstance(module, Attention) and module.qkv_bias_mode == "qv":
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
            init.zeros_(module.k_bias)  # non-persistent, always zero
        elif isinstance(module, SimMIMViTEmbeddings):
            init.trunc_normal_(module.cls_token, std=std)
            if module.mask_token is not None:
                init.trunc_normal_(module.mask_token, std=std, a=-std, b=std)
            if module.pos_embed is not None:
                init.trunc_normal_(module.pos_embed, std=std)
        elif isinstance(module, SwinEmbeddings):
            if module.mask_token is not None:  # (a base model built without one)
                init.trunc_normal_(module.mask_token, std=std)
            if module.pos_embed is not None:
                init.trunc_normal_(module.pos_embed, std=std)
        elif isinstance(module, SimMIMViTEncoder):
            for index, layer in enumerate(module.layers):  # BEiT's fix_init_weight
                init.trunc_normal_(layer.attn.o_proj.weight, std=std / math.sqrt(2.0 * (index + 1)))
                init.trunc_normal_(layer.mlp.fc2.weight, std=std / math.sqrt(2.0 * (index + 1)))


class SimMIMModel(FinalNormMixin, EncoderFeaturesMixin, SimMIMPreTrainedModel):
    """SimMIM's encoder (ViT or Swin, by `config.backbone`).

    Called without `bool_masked_pos` it encodes every patch. With `bool_masked_pos` ([B, L] or
    [B, h, w], True/1 = masked, at the model's patch resolution) the masked patch embeddings are
    replaced by the mask token first (needs `use_mask_token=True`, as in pre-training).

    `last_hidden_state`: ViT [B, 1 + L, D] (cls first; after the final norm unless
    `use_mean_pooling`), Swin [B, L', D] the last stage after its norm. `pooler_output`: what the
    original classifier head receives (ViT: `fc_norm` of the mean patch token with
    `use_mean_pooling`, else the cls token; Swin: the mean token).
    """

    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^head\.", r"mask_token"]

    def __init__(self, config: SimMIMConfig, add_pooling_layer: bool = True, use_mask_token: bool = False,
                 add_final_norm: bool | None = None):
        super().__init__(config)
        self.use_mask_token = use_mask_token
        embeddings, encoder = ARCHITECTURES[config.backbone]
        self.embeddings = embeddings(config, use_mask_token=use_mask_token)
        grid = self.embeddings.patch_embed.grid_size
        self.encoder = encoder(config, grid)
        self.relative_position_bias = encoder.shared_relative_position_bias(config, grid)  # (ViT pre-training)
        final_norm, pooling = encoder.final_norms(config, add_pooling_layer)
        self._build_final_norms(config, final_norm if add_final_norm is None else add_final_norm, pooling)
        self.post_init()

    @property
    def num_prefix_tokens(self) -> int:
        """ViT: the cls token; Swin has none."""
        return self.encoder.num_prefix_tokens

    def _feature_stages(self, pixel_values, interpolate_pos_encoding: bool = False, **kwargs):
        """ViT: the embeddings and every block; Swin: the embeddings, then each stage's last block."""
        _, output = super()._feature_stages(pixel_values, interpolate_pos_encoding, **kwargs)  # (its forward with every hidden state)
        grid = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        return self.encoder.feature_stages(output.hidden_states, grid), output

    def _pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.encoder.pool(hidden, self.fc_norm)

    @torch.no_grad()
    def expand_relative_position_bias(self) -> "SimMIMModel":
        """Switch a ViT from the pre-training layout (one relative position table shared by all
        blocks) to SimMIM's fine-tuning one (a table per block, each starting as a copy of the
        shared one, as the original's `load_pretrained` does). Updates the config; returns self."""
        if self.relative_position_bias is None:
            raise ValueError("expand_relative_position_bias needs a ViT with a shared relative position table")
        self.encoder.expand_relative_position_bias(self.relative_position_bias)
        self.relative_position_bias = None
        self.config.use_relative_position_bias = True
        self.config.use_shared_relative_position_bias = False
        return self

    def _check_mask(self, bool_masked_pos: torch.Tensor | None, batch: int, grid: tuple[int, int]):
        if bool_masked_pos is None:
            return None
        if self.embeddings.mask_token is None:
            raise ValueError("bool_masked_pos needs a mask token: build the model with use_mask_token=True (SimMIMForPreTraining does)")
        return flat_bool_mask(bool_masked_pos, batch, grid)

    @record_outputs
    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MIMModelOutput:
        grid = self.embeddings.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
        mask = self._check_mask(bool_masked_pos, pixel_values.shape[0], grid)
        # patches (masked ones as the mask token), positions
        tokens, grid = self.embeddings(pixel_values, mask, interpolate_pos_encoding)
        # encode, final norm, the feature the classifier head receives
        shared = self.relative_position_bias(grid) if self.relative_position_bias is not None else None  # (ViT pre-training)
        hidden = self.encoder(tokens, grid, shared, **kwargs)
        hidden, pooled = self._normalize_and_pool(hidden)
        mask = mask.float() if mask is not None else None
        return MIMModelOutput(last_hidden_state=hidden, pooler_output=pooled, mask=mask)


class SimMIMForPreTraining(SimMIMPreTrainedModel):
    """SimMIM pre-training: encoder with mask tokens, 1x1 conv + PixelShuffle(encoder_stride)
    decoder, L1 loss on the masked pixels.

    `bool_masked_pos` ([B, L] or [B, h, w], True = masked, model-patch resolution, e.g. from
    `mim_hub.masking.SimMIMMaskGenerator`); without it a random block mask is drawn. Returns
    `loss`, `reconstruction` (= `logits`) [B, C, H, W] and `mask`.
    """

    def __init__(self, config: SimMIMConfig):
        super().__init__(config)
        self.simmim = SimMIMModel(config, add_pooling_layer=False, use_mask_token=True)
        stride = config.encoder_stride
        self.decoder = nn.Sequential(
            nn.Conv2d(config.hidden_size, stride**2 * config.num_channels, kernel_size=1),
            nn.PixelShuffle(stride),
        )
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SimMIMPreTrainingOutput:
        grid = self.simmim.embeddings.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
        batch = pixel_values.shape[0]
        if bool_masked_pos is None:
            bool_masked_pos = random_block_mask(batch, grid, self.config, device=pixel_values.device)
        # encode every patch, masked ones as the mask token
        encoded = self.simmim(
            pixel_values, bool_masked_pos=bool_masked_pos, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs,
        )
        hidden = encoded.last_hidden_state
        final_grid = self.simmim.encoder.output_grid(grid)
        feature_map = hidden[:, self.simmim.num_prefix_tokens:].transpose(1, 2).reshape(batch, -1, final_grid[0], final_grid[1])
        # decode all pixels
        reconstruction = self.decoder(feature_map)
        # (a Swin stage of odd size is padded before patch merging: the padding is cut off)
        reconstruction = reconstruction[..., : pixel_values.shape[-2], : pixel_values.shape[-1]]
        # L1 on masked pixels
        mask = bool_masked_pos.reshape(batch, grid[0], grid[1])
        loss = simmim_loss(pixel_values, reconstruction, mask, self.config.patch_size)
        return SimMIMPreTrainingOutput(
            loss=loss, reconstruction=reconstruction, logits=reconstruction, mask=mask.reshape(batch, -1).float(),
            last_hidden_state=hidden, hidden_states=encoded.hidden_states, attentions=encoded.attentions,
        )

    def reconstruction_of(self, pixel_values: torch.Tensor, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        """What `mim_hub.reconstruction.reconstruct` draws, from this model's forward `outputs`:
        (the reconstructed image as patches [B, L, p*p*C]; the L1 loss of each image [B] on its
        masked pixels)."""
        p, reconstruction = self.config.patch_size, outputs.reconstruction.float()
        grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        mask = outputs.mask.reshape(-1, *grid)
        return patchify(reconstruction, p), simmim_loss(pixel_values, reconstruction, mask, p, per_image=True)


class SimMIMForImageClassification(ImageClassifierForwardMixin, SimMIMPreTrainedModel):
    """SimMIM's fine-tuning models: the encoder's `pooler_output` into a linear `head` (ViT:
    `models/vision_transformer.py`, mean pooling + `fc_norm`; Swin: mean of the normed tokens)."""

    def __init__(self, config: SimMIMConfig):
        super().__init__(config)
        self.simmim = SimMIMModel(config)
        self.head = classification_head(config)
        self.post_init()

    def _head_init_std(self) -> float | None:
        scale = self.simmim.encoder.head_init_scale if hasattr(self, "simmim") else None
        return None if scale is None else self.config.initializer_range * scale  # (ViT: BEiT's init_scale)

    def prepare_for_finetuning(self) -> "SimMIMForImageClassification":
        """SimMIM's ViT fine-tunes with a relative position table per block, each starting as the
        pre-training's shared one (`SimMIMModel.expand_relative_position_bias`); a Swin, or a ViT
        without a shared table, is already in its fine-tuning layout."""
        if self.config.use_shared_relative_position_bias and getattr(self.simmim, "relative_position_bias", None) is not None:
            self.simmim.expand_relative_position_bias()
        return self


__all__ = [
    "SimMIMPreTrainedModel",
    "SimMIMModel",
    "SimMIMForPreTraining",
    "SimMIMForImageClassification",
    "SimMIMPreTrainingOutput",
    "simmim_loss",
    "random_block_mask",
]
