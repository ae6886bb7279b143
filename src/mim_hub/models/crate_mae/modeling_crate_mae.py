"""CRATE-MAE and CRATE: white-box transformer blocks (Ma-Lab-Berkeley/CRATE, `model/crate.py`,
`model/crate_ae/`).

- MSSA (multi-head subspace self-attention): ONE bias-free projection used as query, key and
  value; softmax(w w^T / sqrt(d)) w per head; an output projection (absent when one head spans
  the whole width).
- ISTA: one step of sparse coding, relu(x + eta (x D - x D^T D) - eta lambda), with no
  residual around it.
- Encoder layer: z + MSSA(LN(z)), then ISTA(LN(.)). Decoder layer, in the inverse order: the
  transposed dictionary step LN(z) D^T first, then the subtraction y - MSSA(LN(y)).

Quirks of the original CRATE-MAE forward, reproduced on purpose: mask tokens are put back in
place BEFORE the encoder, which therefore sees every position; the positions added are the fixed
`decoder_pos_embed` table (the stored `pos_embed` and the `decoder_embed` projection are never
used, so the converter drops them); the decoder runs directly on the encoder output.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ImageClassifierOutput

from ... import initialization as init
from ...layers import PatchEmbedding, gather_tokens, get_2d_sincos_pos_embed, interpolate_pos_embed, patchify, random_masking, unpatchify
from ...layers.attention import InterfaceAttention
from ..mae.modeling_mae import PixelTargetsMixin, pixel_loss
from ..encoder import TransformersKwargs, Unpack, block_recorders, can_return_tuple, record_outputs
from ..features import ClassifierFeaturesMixin, EncoderFeaturesMixin
from ..modeling_common import MIMModelOutput, MIMPreTrainedModel, MIMPreTrainingOutput, classification_head, classification_loss
from .configuration_crate_mae import CrateMAEConfig


class MSSA(InterfaceAttention):
    """Multi-head subspace self-attention: q = k = v = x U (U bias-free)."""

    def __init__(self, hidden_size: int, num_heads: int, head_size: int):
        super().__init__()
        inner = num_heads * head_size
        self.num_heads, self.head_size, self.scale = num_heads, head_size, head_size**-0.5
        self.qkv_proj = nn.Linear(hidden_size, inner, bias=False)
        self.o_proj = nn.Identity() if (num_heads == 1 and head_size == hidden_size) else nn.Linear(inner, hidden_size)

    def forward(self, hidden_states: torch.Tensor, **kwargs):
        batch, length, _ = hidden_states.shape
        w = self.qkv_proj(hidden_states).reshape(batch, length, self.num_heads, self.head_size).transpose(1, 2)
        out, weights = self.attend(w, w, w, **kwargs)
        return self.o_proj(out.reshape(batch, length, -1)), weights


class ISTA(nn.Module):
    """One ISTA step towards a sparse code of x in the dictionary D ([D, D]):
    relu(x + eta (x D - (x D^T) D) - eta lambda)."""

    def __init__(self, hidden_size: int, step_size: float, lambd: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.step_size, self.lambd = step_size, lambd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        grad = x @ w - (x @ w.t()) @ w
        return torch.relu(x + self.step_size * grad - self.step_size * self.lambd)


class CrateEncoderLayer(GradientCheckpointingLayer):
    """z + MSSA(LN(z)), then ISTA(LN(.)) (no residual around ISTA)."""

    def __init__(self, config: CrateMAEConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = MSSA(config.hidden_size, config.num_attention_heads, config.head_size)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ista = ISTA(config.hidden_size, config.ista_step_size, config.ista_lambda)

    def forward(self, hidden_states, **kwargs):
        attn_out, weights = self.attn(self.norm1(hidden_states), **kwargs)
        return self.ista(self.norm2(hidden_states + attn_out)), weights


class CrateDecoderLayer(GradientCheckpointingLayer):
    """The encoder layer inverted: y = LN(z) D^T, then y - MSSA(LN(y))."""

    def __init__(self, config: CrateMAEConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dictionary = nn.Parameter(torch.empty(config.hidden_size, config.hidden_size))
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = MSSA(config.hidden_size, config.decoder_num_attention_heads, config.hidden_size // config.decoder_num_attention_heads)

    def forward(self, hidden_states, **kwargs):
        y = nn.functional.linear(self.norm1(hidden_states), self.dictionary)
        attn_out, weights = self.attn(self.norm2(y), **kwargs)
        return y - attn_out, weights


def _run(layers, hidden, **kwargs) -> torch.Tensor:
    for layer in layers:
        hidden = layer(hidden, **kwargs)[0]
    return hidden


class CratePatchEmbedding(nn.Module):
    """CRATE's classifier embedding: channel-last patch vectors -> LayerNorm -> Linear -> LayerNorm."""

    def __init__(self, config: CrateMAEConfig):
        super().__init__()
        patch_dim = config.patch_size**2 * config.num_channels
        self.patch_size, self.num_channels = config.patch_size, config.num_channels
        self.grid = PatchEmbedding(config.image_size, config.patch_size, config.num_channels, 1)  # geometry checks only
        del self.grid.projection
        self.norm_in = nn.LayerNorm(patch_dim, eps=config.layer_norm_eps)
        self.projection = nn.Linear(patch_dim, config.hidden_size)
        self.norm_out = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def check_input(self, pixel_values, interpolate_pos_encoding: bool = False) -> tuple[int, int]:
        return self.grid.check_input(pixel_values, interpolate_pos_encoding)

    def forward(self, pixel_values, interpolate_pos_encoding: bool = False):
        self.check_input(pixel_values, interpolate_pos_encoding)
        return self.norm_out(self.projection(self.norm_in(patchify(pixel_values, self.patch_size))))


class CrateEmbeddings(nn.Module):
    """Patches, cls token, mask token (CRATE-MAE) and position table, added in the same way by
    both variants (`CrateMAEEmbeddings`, `CrateClassifierEmbeddings`), which differ in what they hold.

    At another input size (`interpolate_pos_encoding=True`) the position table is resampled
    bicubically to the input's patch grid, as MAE's and ViT's are (the cls row kept)."""

    final_norm: bool  # whether the encoder ends with a LayerNorm

    def __init__(self, config: CrateMAEConfig, patch_embed: nn.Module, use_mask_token: bool):
        super().__init__()
        self.patch_embed = patch_embed
        self.grid_size = (config.image_size // config.patch_size,) * 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if use_mask_token else None

    def forward(self, pixel_values, noise=None, mask_ratio: float = 0.75, interpolate_pos_encoding: bool = False):
        """(cls + patch tokens with positions [B, 1 + L, D], mask, ids_restore); with `noise` [B, L]
        the masked patches are replaced in place by the mask token (CRATE-MAE)."""
        grid = self.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
        tokens = self.patch_embed(pixel_values.to(self.cls_token.dtype), interpolate_pos_encoding)  # (float32 input, bf16 weights)
        batch, length, _ = tokens.shape
        mask = ids_restore = None
        if noise is not None:
            if self.mask_token is None:
                raise ValueError("the CRATE classifier variant has no mask token: masking needs a CRATE-MAE model")
            if noise.shape != (batch, length):
                raise ValueError(f"noise must be [batch, num_patches] = {(batch, length)}, got {tuple(noise.shape)}")
            ids_keep, mask, ids_restore = random_masking(noise, mask_ratio)
            visible = gather_tokens(tokens, ids_keep)
            filler = self.mask_token.expand(batch, length - visible.shape[1], -1).to(tokens.dtype)
            tokens = gather_tokens(torch.cat([visible, filler], dim=1), ids_restore)
        pos = interpolate_pos_embed(self.pos_embed, grid, old_grid=self.grid_size)
        return torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1) + pos, mask, ids_restore


class CrateMAEEmbeddings(CrateEmbeddings):
    """CRATE-MAE's: a conv patch embedding, a mask token, and the fixed sin-cos table the original
    adds (its `decoder_pos_embed`); its encoder ends with a final norm."""

    final_norm = True

    def __init__(self, config: CrateMAEConfig, use_mask_token: bool = True):
        patch_embed = PatchEmbedding(config.image_size, config.patch_size, config.num_channels, config.hidden_size)
        super().__init__(config, patch_embed, use_mask_token=use_mask_token)
        self.pos_embed = nn.Parameter(get_2d_sincos_pos_embed(config.hidden_size, self.grid_size, cls_token=True)[None], requires_grad=False)


class CrateClassifierEmbeddings(CrateEmbeddings):
    """The CRATE classifiers': channel-last patch vectors -> LayerNorm -> Linear -> LayerNorm, and
    a learned `pos_embedding`; no mask token, and no final norm (the head has its own)."""

    final_norm = False

    def __init__(self, config: CrateMAEConfig, use_mask_token: bool = False):
        super().__init__(config, CratePatchEmbedding(config), use_mask_token=False)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1] + 1, config.hidden_size))


# config.variant -> embeddings: the one place the variant is chosen
VARIANTS = {"crate_mae": CrateMAEEmbeddings, "crate": CrateClassifierEmbeddings}


class CrateMAEPreTrainedModel(MIMPreTrainedModel):
    config_class = CrateMAEConfig
    base_model_prefix = "crate"
    _no_split_modules = ["CrateEncoderLayer", "CrateDecoderLayer"]
    _can_record_outputs = block_recorders(CrateEncoderLayer, CrateDecoderLayer)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (ISTA,)):
            init.kaiming_uniform_(module.weight)
        elif isinstance(module, CrateDecoderLayer):
            init.kaiming_uniform_(module.dictionary)
        elif isinstance(module, CrateEmbeddings):
            init.normal_(module.cls_token, std=0.02)
            if module.mask_token is not None:
                init.normal_(module.mask_token, std=0.02)
            if isinstance(module, CrateMAEEmbeddings):
                init.copy_(module.pos_embed, get_2d_sincos_pos_embed(self.config.hidden_size, module.grid_size, cls_token=True)[None])
            else:
                init.normal_(module.pos_embed, std=0.02)


class CrateMAEModel(EncoderFeaturesMixin, CrateMAEPreTrainedModel):
    """The CRATE-MAE (or CRATE) encoder.

    Without `noise` every patch is encoded in order. With `noise` (CRATE-MAE) the masked patches
    are replaced by the mask token in place, and the encoder still sees every position (as the
    original). `last_hidden_state` is after the final norm for CRATE-MAE; CRATE has none.
    `pooler_output` is the cls token (or the mean patch token with `pooling="mean"`).
    """

    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^head"]
    num_prefix_tokens = 1  # the cls token
    supports_interpolation = False

    def __init__(self, config: CrateMAEConfig, use_mask_token: bool = True, add_final_norm: bool = True):
        """`use_mask_token=False`: without the mask token (a classifier's or backbone's encoder never
        masks); `add_final_norm=False`: without CRATE-MAE's final norm (a backbone's block outputs)."""
        super().__init__(config)
        self.embeddings = VARIANTS[config.variant](config, use_mask_token=use_mask_token)
        self.layers = nn.ModuleList([CrateEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        use_norm = add_final_norm and self.embeddings.final_norm
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.final_layer_norm_eps) if use_norm else None
        self.post_init()

    def _pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden[:, 1:].mean(1) if self.config.pooling == "mean" else hidden[:, 0]

    @record_outputs
    def forward(self, pixel_values, noise=None, mask_ratio=None, interpolate_pos_encoding: bool = False, **kwargs: Unpack[TransformersKwargs]):
        # mask tokens replace the masked patches in place (the encoder sees every position)
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        hidden, mask, ids_restore = self.embeddings(pixel_values, noise, ratio, interpolate_pos_encoding)
        hidden = _run(self.layers, hidden, **kwargs)
        if self.layernorm is not None:
            hidden = self.layernorm(hidden)
        return MIMModelOutput(last_hidden_state=hidden, pooler_output=self._pool(hidden), mask=mask, ids_restore=ids_restore)


class CrateMAEDecoder(nn.Module):
    def __init__(self, config: CrateMAEConfig):
        super().__init__()
        self.layers = nn.ModuleList([CrateDecoderLayer(config) for _ in range(config.decoder_num_hidden_layers)])
        self.decoder_norm = nn.LayerNorm(config.hidden_size, eps=config.final_layer_norm_eps)
        self.decoder_pred = nn.Linear(config.hidden_size, config.patch_size**2 * config.num_channels)

    def forward(self, latent, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        return self.decoder_pred(self.decoder_norm(_run(self.layers, latent, **kwargs)))[:, 1:]


class CrateMAEForPreTraining(CrateMAEPreTrainedModel):
    """CRATE-MAE pre-training: `noise` [B, L] (lowest kept, as MAE; drawn when absent) ->
    `loss` (MAE's pixel loss on masked patches), `logits` [B, L, p*p*C], `mask`, `ids_restore`;
    `last_hidden_state` holds every position (the encoder sees them all)."""

    def __init__(self, config: CrateMAEConfig):
        super().__init__(config)
        self.crate = CrateMAEModel(config)
        if self.crate.embeddings.mask_token is None:
            raise ValueError("CrateMAEForPreTraining needs variant='crate_mae' (the CRATE classifier has no decoder)")
        self.decoder = CrateMAEDecoder(config)
        self.post_init()

    def unpatchify(self, logits, grid=None):
        return unpatchify(logits, self.config.patch_size, self.config.num_channels, grid)

    @can_return_tuple
    def forward(self, pixel_values, noise=None, mask_ratio=None, interpolate_pos_encoding: bool = False, **kwargs: Unpack[TransformersKwargs]):
        if noise is None:
            grid = self.crate.embeddings.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
            noise = torch.rand(pixel_values.shape[0], grid[0] * grid[1], device=pixel_values.device)
        # encode every position, masked ones as mask tokens
        encoded = self.crate(pixel_values, noise=noise, mask_ratio=mask_ratio, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        # decode, predict pixels
        decoded = self.run_recorded(self.decoder, encoded.last_hidden_state, **kwargs)
        logits = decoded.last_hidden_state
        # loss on masked patches only
        loss = pixel_loss(pixel_values, logits.float(), encoded.mask, self.config.patch_size, self.config.norm_pix_loss)
        return MIMPreTrainingOutput(
            loss=loss, logits=logits, mask=encoded.mask, ids_restore=encoded.ids_restore, last_hidden_state=encoded.last_hidden_state,
            hidden_states=encoded.hidden_states, attentions=encoded.attentions, decoder_hidden_states=decoded.hidden_states, decoder_attentions=decoded.attentions,
        )

    reconstruction_of = PixelTargetsMixin.reconstruction_of  # (MAE's pixel targets)


class CrateMAEForImageClassification(ClassifierFeaturesMixin, CrateMAEPreTrainedModel):
    """CRATE's classifier head (`mlp_head`: LayerNorm + Linear) on the pooled token: the
    released CRATE-T/S/B/L classifiers, or a fine-tuned CRATE-MAE encoder."""

    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"mask_token"]

    def __init__(self, config: CrateMAEConfig):
        super().__init__(config)
        self.crate = CrateMAEModel(config, use_mask_token=False)  # (its forward never masks: no unused parameter)
        self.head_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = classification_head(config)
        self.post_init()

    def _pre_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head_norm(pooled)

    @can_return_tuple
    def forward(self, pixel_values, labels=None, interpolate_pos_encoding: bool = False, **kwargs: Unpack[TransformersKwargs]):
        encoded = self.crate(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        logits = self.head(self.head_norm(encoded.pooler_output))
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states, attentions=encoded.attentions)


__all__ = ["CrateMAEPreTrainedModel", "CrateMAEModel", "CrateMAEForPreTraining", "CrateMAEForImageClassification", "MSSA", "ISTA"]
