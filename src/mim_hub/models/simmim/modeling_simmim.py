"""SimMIM: mask tokens replace masked patches, the whole image is encoded, and a one-layer
decoder (1x1 conv + PixelShuffle) regresses raw pixels with an L1 loss on the masked ones
(microsoft/SimMIM, `models/simmim.py`, `models/vision_transformer.py`).

The ViT backbone is BEiT's: no absolute positions by default, a relative position bias (one
table shared by every block in pre-training, one per block in fine-tuning, each with three cls
entries), layer scale, learned q/v biases with a zero k bias, and mean pooling + `fc_norm` in
fine-tuning. The Swin backbone lives in `modeling_simmim_swin.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from ... import initialization as init
from ...layers import Attention, LayerScale, PatchEmbedding, ViTEncoder, build_vit_blocks, interpolate_pos_embed, patchify
from ...layers.relative_position import RelativePositionBias, relative_position_attention_bias, relative_position_index
from ..features import EncoderFeaturesMixin, FeatureStage
from ..modeling_common import ImageClassifierForwardMixin, MIMModelOutput, MIMPreTrainedModel
from .configuration_simmim import SimMIMConfig
from .modeling_simmim_swin import SwinEmbeddings, SwinEncoder, swin_layer_id


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


class SimMIMViTEmbeddings(nn.Module):
    """Patch embedding, SimMIM's mask-token substitution, cls token, optional absolute positions."""

    def __init__(self, config: SimMIMConfig, use_mask_token: bool = True):
        super().__init__()
        self.patch_embed = PatchEmbedding(config.image_size, config.patch_size, config.num_channels, config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if use_mask_token else None
        if config.use_absolute_position_embeddings:
            self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, config.hidden_size))
        else:
            self.pos_embed = None

    def forward(self, pixel_values, bool_masked_pos=None, interpolate_pos_encoding: bool = False):
        grid = self.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
        weight = self.patch_embed.projection.weight
        tokens = self.patch_embed.projection(pixel_values.to(weight.dtype)).flatten(2).transpose(1, 2)
        # mask tokens replace the masked patches
        if bool_masked_pos is not None:
            w = bool_masked_pos.reshape(tokens.shape[0], -1).unsqueeze(-1).to(tokens.dtype)
            tokens = tokens * (1 - w) + self.mask_token.to(tokens.dtype) * w
        # cls token, positions
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        if self.pos_embed is not None:
            tokens = tokens + interpolate_pos_embed(self.pos_embed, grid, old_grid=self.patch_embed.grid_size)
        return tokens, grid


class SimMIMPreTrainedModel(MIMPreTrainedModel):
    config_class = SimMIMConfig
    base_model_prefix = "simmim"
    _no_split_modules = ["ViTBlock", "SwinBlock"]

    def num_layers_for_decay(self) -> int:
        return self.config.num_hidden_layers + 1

    def layer_id(self, name: str) -> int:
        if self.config.backbone == "swin":
            if any(key in name for key in ("patch_embed", "pos_embed", "mask_token", "embeddings")):
                return 0
            found = None if name.startswith("decoder") else swin_layer_id(name, list(self.config.depths))
            return self.num_layers_for_decay() if found is None else found
        return super().layer_id(name)

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
        elif isinstance(module, SimMIMModel) and module.config.backbone == "vit":
            for index, layer in enumerate(module.encoder.layers):  # BEiT's fix_init_weight
                init.trunc_normal_(layer.attn.o_proj.weight, std=std / math.sqrt(2.0 * (index + 1)))
                init.trunc_normal_(layer.mlp.fc2.weight, std=std / math.sqrt(2.0 * (index + 1)))


class SimMIMModel(EncoderFeaturesMixin, SimMIMPreTrainedModel):
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

    def __init__(self, config: SimMIMConfig, add_pooling_layer: bool = True, use_mask_token: bool = False):
        super().__init__(config)
        self.use_mask_token = use_mask_token
        if config.backbone == "swin":
            self.embeddings = SwinEmbeddings(config)
            if not use_mask_token:
                self.embeddings.mask_token = None
            self.encoder = SwinEncoder(config, self.embeddings.patch_embed.grid_size)
            self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.relative_position_bias = None
            self.fc_norm = None
        else:
            self.embeddings = SimMIMViTEmbeddings(config, use_mask_token=use_mask_token)
            grid = self.embeddings.patch_embed.grid_size
            qkv_bias = "qv" if config.qkv_bias else False
            blocks = build_vit_blocks(
                config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size,
                qkv_bias=qkv_bias, layer_norm_eps=config.layer_norm_eps, hidden_act=config.hidden_act,
                layer_scale_init_value=config.layer_scale_init_value, drop_path_rate=config.drop_path_rate,
                attention_dropout=config.attention_probs_dropout_prob, hidden_dropout=config.hidden_dropout_prob,
            )
            if config.use_relative_position_bias:  # one table per block (fine-tuning)
                for block in blocks:
                    block.relative_position_bias = RelativePositionBias(grid, config.num_attention_heads)
            self.encoder = ViTEncoder(blocks)
            self.relative_position_bias = (
                RelativePositionBias(grid, config.num_attention_heads) if config.use_shared_relative_position_bias else None
            )
            self.layernorm = None if config.use_mean_pooling else nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            use_fc_norm = add_pooling_layer and config.use_mean_pooling
            self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if use_fc_norm else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embed

    @property
    def num_prefix_tokens(self) -> int:
        """ViT: the cls token; Swin has none."""
        return 0 if self.config.backbone == "swin" else 1

    def _feature_stages(self, pixel_values, interpolate_pos_encoding: bool = False, output_attentions: bool = False):
        """Swin: the embeddings, then each stage's last block (before its patch merging) at the
        stage's resolution; ViT: every block."""
        if self.config.backbone != "swin":
            return super()._feature_stages(pixel_values, interpolate_pos_encoding, output_attentions)
        kwargs = {"interpolate_pos_encoding": True} if interpolate_pos_encoding else {}
        output = self(pixel_values, output_hidden_states=True, output_attentions=output_attentions, **kwargs)
        grid = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        stages = [FeatureStage(output.hidden_states[0], grid)]
        end = 0
        for stage, depth in enumerate(self.config.depths):
            end += depth
            stages.append(FeatureStage(output.hidden_states[end], (grid[0] // 2**stage, grid[1] // 2**stage)))
        return stages, output

    def _pool(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.config.backbone == "swin":
            return hidden.mean(dim=1)
        return super()._pool(hidden)

    @torch.no_grad()
    def expand_relative_position_bias(self) -> "SimMIMModel":
        """Switch a ViT from the pre-training layout (one relative position table shared by all
        blocks) to SimMIM's fine-tuning one (a table per block, each starting as a copy of the
        shared one, as the original's `load_pretrained` does). Updates the config; returns self."""
        shared = self.relative_position_bias
        if self.config.backbone != "vit" or shared is None:
            raise ValueError("expand_relative_position_bias needs a ViT with a shared relative position table")
        table = shared.relative_position_bias_table
        for layer in self.encoder.layers:
            own = RelativePositionBias(shared.window_size, shared.num_heads).to(device=table.device, dtype=table.dtype)
            previous = getattr(layer, "relative_position_bias", None)
            own.relative_position_bias_table.copy_(table if previous is None else table + previous.relative_position_bias_table)
            layer.relative_position_bias = own
        self.relative_position_bias = None
        self.config.use_relative_position_bias = True
        self.config.use_shared_relative_position_bias = False
        return self

    def _vit_attention_bias(self, grid: tuple[int, int]):
        """None, one [heads, N, N] tensor, or a per-block callable (shared + the block's own)."""
        per_block = [layer.relative_position_bias for layer in self.encoder.layers] if self.config.use_relative_position_bias else None
        return relative_position_attention_bias(grid, self.relative_position_bias, per_block)

    def _check_mask(self, bool_masked_pos: torch.Tensor | None, batch: int, grid: tuple[int, int]):
        if bool_masked_pos is None:
            return None
        if self.embeddings.mask_token is None:
            raise ValueError("bool_masked_pos needs a mask token: build the model with use_mask_token=True (SimMIMForPreTraining does)")
        length = grid[0] * grid[1]
        if bool_masked_pos.shape[0] != batch or bool_masked_pos[0].numel() != length:
            raise ValueError(
                f"bool_masked_pos must be [batch, num_patches] = [{batch}, {length}] or [{batch}, {grid[0]}, {grid[1]}] "
                f"(model-patch resolution), got {tuple(bool_masked_pos.shape)}"
            )
        return bool_masked_pos.reshape(batch, length)

    def encode(self, pixel_values, bool_masked_pos=None, output_attentions=False, output_hidden_states=False, interpolate_pos_encoding=False):
        """(last_hidden_state, pooler_output, final grid (h, w), hidden states, attentions)."""
        patch_embed = self.embeddings.patch_embed
        grid = patch_embed.check_input(pixel_values, interpolate_pos_encoding)
        mask = self._check_mask(bool_masked_pos, pixel_values.shape[0], grid)
        if self.config.backbone == "swin":
            tokens, grid = self.embeddings(pixel_values, mask, interpolate_pos_encoding)
            hidden, final_grid, all_hidden, all_attn = self.encoder(tokens, grid, output_attentions, output_hidden_states)
            hidden = self.layernorm(hidden)
            return hidden, hidden.mean(dim=1), final_grid, all_hidden, all_attn
        tokens, grid = self.embeddings(pixel_values, mask, interpolate_pos_encoding)
        hidden, all_hidden, all_attn = self.encoder(
            tokens, attention_bias=self._vit_attention_bias(grid), output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        if self.layernorm is not None:
            hidden = self.layernorm(hidden)
        pooled = self.fc_norm(hidden[:, 1:].mean(dim=1)) if self.fc_norm is not None else hidden[:, 0]
        return hidden, pooled, grid, all_hidden, all_attn

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MIMModelOutput:
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        hidden, pooled, _, all_hidden, all_attn = self.encode(
            pixel_values, bool_masked_pos, bool(output_attentions), bool(output_hidden_states), interpolate_pos_encoding
        )
        mask = bool_masked_pos.reshape(hidden.shape[0], -1).float() if bool_masked_pos is not None else None
        output = MIMModelOutput(last_hidden_state=hidden, pooler_output=pooled, mask=mask, hidden_states=all_hidden, attentions=all_attn)
        return output if return_dict is not False else output.to_tuple()


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

    def get_input_embeddings(self) -> nn.Module:
        return self.simmim.embeddings.patch_embed

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SimMIMPreTrainingOutput:
        grid = self.simmim.embeddings.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
        batch = pixel_values.shape[0]
        if bool_masked_pos is None:
            bool_masked_pos = random_block_mask(batch, grid, self.config, device=pixel_values.device)
        # encode every patch, masked ones as the mask token
        hidden, _, final_grid, all_hidden, all_attn = self.simmim.encode(
            pixel_values, bool_masked_pos, bool(output_attentions), bool(output_hidden_states), interpolate_pos_encoding
        )
        patches = hidden[:, 1:] if self.config.backbone == "vit" else hidden
        feature_map = patches.transpose(1, 2).reshape(batch, -1, final_grid[0], final_grid[1])
        # decode all pixels
        reconstruction = self.decoder(feature_map)
        # (a Swin stage of odd size is padded before patch merging: the padding is cut off)
        reconstruction = reconstruction[..., : pixel_values.shape[-2], : pixel_values.shape[-1]]
        # L1 on masked pixels
        mask = bool_masked_pos.reshape(batch, grid[0], grid[1])
        loss = simmim_loss(pixel_values, reconstruction, mask, self.config.patch_size)
        output = SimMIMPreTrainingOutput(
            loss=loss, reconstruction=reconstruction, logits=reconstruction, mask=mask.reshape(batch, -1).float(),
            last_hidden_state=hidden, hidden_states=all_hidden, attentions=all_attn,
        )
        return output if return_dict is not False else output.to_tuple()

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
        self.head = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.simmim.embeddings.patch_embed

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if module is getattr(self, "head", None) and isinstance(module, nn.Linear) and self.config.backbone == "vit":
            init.trunc_normal_(module.weight, std=self.config.initializer_range * 1e-3)  # BEiT's init_scale 0.001

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
