"""CAE: an encoder over the visible patches, a latent contextual regressor that predicts the masked
patches' latents from them by cross-attention, an alignment of those predictions with the
encoder's own latents of the masked patches, and a decoder that predicts the masked patches'
token ids (Atten4Vis/CAE, `models/modeling_cae.py`, `modeling_cae_helper.py`,
`modeling_finetune.py`; loss of `furnace/engine_for_pretraining.py`)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ... import initialization as init
from ...layers import (
    MLP,
    DropPath,
    LayerScale,
    PatchEmbedding,
    ViTBlock,
    ViTEncoder,
    get_2d_sincos_pos_embed,
    interpolate_pos_embed,
)
from ...layers.attention import InterfaceAttention, linear_with_output_scale
from ...layers.block import drop_path_rates
from ...layers.mask_block import BlockMaskGenerator
from ...layers.masking import flat_bool_mask
from ...layers.relative_position import RelativePositionBias, relative_position_attention_bias
from ..encoder import FinalNormMixin, TransformersKwargs, Unpack, block_recorders, can_return_tuple, record_outputs
from ..features import EncoderFeaturesMixin
from ..library_internals import forget_key_mapping
from ..modeling_common import ImageClassifierForwardMixin, MIMModelOutput, MIMPreTrainedModel, classification_head, hub_kwargs, vit_blocks
from .configuration_cae import CAEConfig


def cae_sincos_table(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """CAE's fixed table [1, 1 + H*W, dim]: zero cls row, then the row coordinate in the first
    half of the channels and the column in the second (its `ij` meshgrid)."""
    return get_2d_sincos_pos_embed(dim, grid, cls_token=True, row_first=True).unsqueeze(0)


def split_by_mask(tokens: torch.Tensor, bool_masked_pos: torch.Tensor, num_masked: int) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens [B, L, D] -> (visible [B, L - M, D], masked [B, M, D]), each in ascending patch order:
    the original's `x[~mask].reshape(B, -1, D)`. Each token's place in [visible..., masked...] is
    a running count (cumsum) of its kind, and the tokens are scattered there: static shapes under
    torch.compile, and operators ONNX has (no stable sort)."""
    length = tokens.shape[1]
    masked = bool_masked_pos.to(torch.long)
    place = torch.where(bool_masked_pos, masked.cumsum(1) - 1 + (length - num_masked), (1 - masked).cumsum(1) - 1)
    ordered = torch.zeros_like(tokens).scatter(1, place.unsqueeze(-1).expand_as(tokens), tokens)
    return ordered[:, : length - num_masked], ordered[:, length - num_masked:]


def check_bool_masked_pos(bool_masked_pos: torch.Tensor, batch: int, grid: tuple[int, int], expected: int | None = None) -> tuple[torch.Tensor, int]:
    """Validate a [B, L] mask (True = masked; a [B, h, w] grid is flattened row-major) and return it
    with its per-sample count M. CAE needs the same count in every sample. Under torch.compile the
    count cannot be read from the data: `expected` (the config's `num_masking_patches`) is used."""
    bool_masked_pos = flat_bool_mask(bool_masked_pos, batch, grid)
    length = grid[0] * grid[1]
    if torch.compiler.is_compiling():
        if expected is None:
            raise ValueError("under torch.compile pass the mask count (num_masked_patches) explicitly")
        return bool_masked_pos, expected
    counts = bool_masked_pos.sum(dim=1)
    low, high = int(counts.min()), int(counts.max())
    if low != high:
        raise ValueError(
            f"CAE needs the same number of masked patches in every sample of a batch; got counts from {low} to {high} "
            "(use BlockMaskGenerator with a fixed num_masking_patches)"
        )
    if high >= length:
        raise ValueError(f"bool_masked_pos masks all {length} patches; at least one must stay visible")
    if expected is not None and expected != high:
        raise ValueError(f"bool_masked_pos masks {high} patches per sample but num_masked_patches says {expected}")
    return bool_masked_pos, high


@dataclass
class CAEPreTrainingOutput(ModelOutput):
    """CAE pre-training output.

    loss: `loss_main + loss_align` (None without `labels`). loss_main: cross-entropy of the
    decoder's token predictions on the masked patches. loss_align: `align_loss_weight` x MSE
    between the regressed latents and the encoder's latents of the masked patches.
    logits: [B*M, vocab_size] token logits of the masked patches (sample-major, ascending patch
    index: the order of `input_ids[bool_masked_pos]`). latent_predict / latent_target:
    [B, M, decoder_hidden_size]. mlm_acc: accuracy of `logits.argmax(-1)` on `labels`.
    bool_masked_pos: the mask used [B, L]. last_hidden_state: the encoder output for
    [cls, visible patches] (after its final norm, before any projection).
    hidden_states / attentions: the encoder's, per block, when asked for; regressor_hidden_states /
    regressor_attentions and decoder_hidden_states / decoder_attentions: the regressor's and the
    decoder's (each stack's input first).
    """

    loss: torch.FloatTensor | None = None
    loss_main: torch.FloatTensor | None = None
    loss_align: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    latent_predict: torch.FloatTensor | None = None
    latent_target: torch.FloatTensor | None = None
    mlm_acc: torch.FloatTensor | None = None
    bool_masked_pos: torch.BoolTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    regressor_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    regressor_attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None


class CAEEmbeddings(nn.Module):
    """Patch embedding, cls token and (optionally) the fixed sin-cos table with its zero cls row.
    With `bool_masked_pos` only the visible patches are kept (in ascending order)."""

    def __init__(self, config: CAEConfig):
        super().__init__()
        self.patch_embed = PatchEmbedding(config.image_size, config.patch_size, config.num_channels, config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        if config.use_absolute_position_embeddings:
            self.pos_embed = nn.Parameter(cae_sincos_table(config.hidden_size, self.patch_embed.grid_size))
        else:
            self.pos_embed = None

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None, interpolate_pos_encoding: bool = False,
                num_masked: int = 0):
        """Returns ([cls, (visible) patches] with positions [B, 1 + K, D], grid); `num_masked` is
        the per-sample count of `bool_masked_pos`."""
        tokens, grid = self.patch_embed(pixel_values, interpolate_pos_encoding, return_grid=True)
        batch = tokens.shape[0]
        cls = self.cls_token.expand(batch, -1, -1)
        if self.pos_embed is not None:
            pos = interpolate_pos_embed(self.pos_embed, grid, old_grid=self.patch_embed.grid_size)
            tokens = tokens + pos[:, 1:]
            cls = cls + pos[:, :1]
        if bool_masked_pos is not None:
            tokens = split_by_mask(tokens, bool_masked_pos, num_masked)[0]
        return torch.cat([cls, tokens], dim=1), grid


def _attention_head_size(width: int, heads: int) -> int:
    """CAE's head width: `width // heads` (the attention may be narrower than the model)."""
    return width // heads


def _cae_blocks(config: CAEConfig, stack: str, layer_scale_init_value: float) -> list:
    """CAE's self-attention blocks of a stack ("" the encoder, "decoder_" the decoder): BEiT's
    learned q/v biases, layer scale, CAE's head width, stochastic depth to `drop_path_rate` in both."""
    width, heads = getattr(config, f"{stack}hidden_size"), getattr(config, f"{stack}num_attention_heads")
    return vit_blocks(config, stack, drop_path_rate=config.drop_path_rate, qkv_bias="qv" if config.qkv_bias else False,
                      layer_scale_init_value=layer_scale_init_value, attention_head_size=_attention_head_size(width, heads))


class CAECrossAttention(InterfaceAttention):
    """CAE's cross-attention: separate q/k/v projections without bias, learned q and v biases
    (k has none), queries [B, M, D] attending to keys/values [B, N, D]."""

    def __init__(self, hidden_size: int, num_attention_heads: int, *, qkv_bias: bool = True, attention_dropout: float = 0.0, proj_dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_attention_heads
        self.head_dim = _attention_head_size(hidden_size, num_attention_heads)
        self.scale = self.head_dim**-0.5
        inner = self.head_dim * num_attention_heads
        self.q_proj = nn.Linear(hidden_size, inner, bias=False)
        self.k_proj = nn.Linear(hidden_size, inner, bias=False)
        self.v_proj = nn.Linear(hidden_size, inner, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(inner))
            self.v_bias = nn.Parameter(torch.zeros(inner))
        else:
            self.q_bias = self.v_bias = None
        self.o_proj = nn.Linear(inner, hidden_size)
        self.attention_dropout = attention_dropout
        self.proj_dropout = nn.Dropout(proj_dropout) if proj_dropout > 0 else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, queries, keys, values, output_scale: torch.Tensor | None = None, **kwargs):
        q = self._heads(F.linear(queries, self.q_proj.weight, self.q_bias))
        k = self._heads(self.k_proj(keys))
        v = self._heads(F.linear(values, self.v_proj.weight, self.v_bias))
        out, weights = self.attend(q, k, v, **kwargs)
        out = out.reshape(queries.shape[0], queries.shape[1], -1)
        return self.proj_dropout(linear_with_output_scale(out, self.o_proj, output_scale)), weights


class CAERegressorBlock(GradientCheckpointingLayer):
    """One step of the latent contextual regressor (CAE's `RegressorBlock`):

    x = q + gamma1 * cross_attn(norm_q(q + pos_q), norm_k(kv + pos_kv), norm_v(kv)); x = norm2(x)
    (post-norm on the residual stream itself); x = x + gamma2 * mlp(x).
    The LayerScale gammas always exist; with `layer_scale_init_value` 0 they are frozen ones.
    """

    def __init__(self, config: CAEConfig, drop_path: float = 0.0):
        super().__init__()
        width, eps = config.decoder_hidden_size, config.layer_norm_eps
        self.norm_q = nn.LayerNorm(width, eps=eps)
        self.norm_k = nn.LayerNorm(width, eps=eps)
        self.norm_v = nn.LayerNorm(width, eps=eps)
        self.cross_attn = CAECrossAttention(
            width, config.regressor_num_attention_heads, qkv_bias=config.qkv_bias,
            attention_dropout=config.attention_probs_dropout_prob, proj_dropout=config.hidden_dropout_prob,
        )
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, config.decoder_intermediate_size, config.hidden_act, dropout=config.hidden_dropout_prob)
        value = config.decoder_layer_scale_init_value
        self.layer_scale1 = LayerScale(width, value if value > 0 else 1.0)
        self.layer_scale2 = LayerScale(width, value if value > 0 else 1.0)
        if value <= 0:
            self.layer_scale1.gamma.requires_grad_(False)
            self.layer_scale2.gamma.requires_grad_(False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, queries, context, pos_queries, pos_context, **kwargs):
        attn_out, weights = self.cross_attn(
            self.norm_q(queries + pos_queries), self.norm_k(context + pos_context), self.norm_v(context),
            output_scale=self.layer_scale1.gamma, **kwargs,
        )
        hidden = queries + self.drop_path(attn_out)
        del attn_out
        hidden = self.norm2(hidden)
        hidden = hidden + self.drop_path(self.mlp(hidden, output_scale=self.layer_scale2.gamma))
        return hidden, weights


class CAEPreTrainedModel(MIMPreTrainedModel):
    config_class = CAEConfig
    base_model_prefix = "cae"
    _no_split_modules = ["ViTBlock", "CAERegressorBlock"]
    _can_record_outputs = block_recorders(ViTBlock, CAERegressorBlock)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, CAEEmbeddings):
            if module.pos_embed is not None:
                init.copy_(module.pos_embed, cae_sincos_table(module.pos_embed.shape[-1], module.patch_embed.grid_size))
            init.trunc_normal_(module.cls_token, std=std, a=-std, b=std)
            init.trunc_normal_(module.patch_embed.projection.weight, std=std, a=-std, b=std)
        elif isinstance(module, RelativePositionBias):  # (its index buffer: the base class)
            init.zeros_(module.relative_position_bias_table)
        elif isinstance(module, CAECrossAttention) and module.q_bias is not None:
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        elif isinstance(module, CAEForPreTraining):
            init.copy_(module.decoder_pos_embed, cae_sincos_table(module.decoder_pos_embed.shape[-1], module.grid_size))
            init.trunc_normal_(module.mask_token, std=std, a=-std, b=std)

    _rel_pos_pattern = re.compile(r"relative_position_bias\.(\d+)\.")

    def layer_id(self, name: str) -> int:
        """As the base, plus BEiT's rule for relative position tables (block i's table with block
        i; a shared table with the head, as BEiT's `rel_pos_bias`) and the pre-training heads after
        the encoder."""
        match = self._rel_pos_pattern.search(name)
        if match:
            return int(match.group(1)) + 1
        if name.startswith(("regressor.", "decoder.", "encoder_to_regressor")):
            return self.num_layers_for_decay()
        return super().layer_id(name)


class CAEModel(FinalNormMixin, EncoderFeaturesMixin, CAEPreTrainedModel):
    """CAE's encoder (BEiT-style ViT).

    Without `bool_masked_pos` it encodes every patch in order: `last_hidden_state` [B, 1 + L, D].
    With `bool_masked_pos` [B, L] (True = masked, the same count per sample) it encodes the cls
    token and the visible patches only, as in pre-training. `pooler_output` is what CAE's
    classifier head receives: `fc_norm` of the mean patch token when `config.use_mean_pooling`
    (no final norm then), else the normed cls token.
    """

    _keys_to_ignore_on_load_unexpected = [r"^regressor\.", r"^decoder\.", r"^head\.", r"^mask_token", r"^decoder_pos_embed", r"^encoder_to_regressor"]
    num_prefix_tokens = 1  # the cls token

    def __init__(self, config: CAEConfig, add_pooling_layer: bool = True, add_final_norm: bool | None = None,
                 use_relative_position_bias: bool | None = None):
        super().__init__(config)
        self.embeddings = CAEEmbeddings(config)
        grid = self.embeddings.patch_embed.grid_size
        self.encoder = ViTEncoder(_cae_blocks(config, "", config.layer_scale_init_value))
        # relative position biases (fine-tuning only; `use_relative_position_bias=False` turns both off)
        per_block = config.use_relative_position_bias if use_relative_position_bias is None else use_relative_position_bias
        shared = config.use_shared_relative_position_bias and use_relative_position_bias is not False
        self.relative_position_bias = (
            nn.ModuleList([RelativePositionBias(grid, config.num_attention_heads) for _ in range(config.num_hidden_layers)])
            if per_block else None
        )
        self.shared_relative_position_bias = RelativePositionBias(grid, config.num_attention_heads) if shared else None
        self._build_final_norms(config, add_final_norm, add_pooling_layer)
        self.post_init()

    def _attention_bias(self, grid: tuple[int, int]):
        """Per-block (plus shared) relative position bias for `grid`, or None."""
        return relative_position_attention_bias(grid, self.shared_relative_position_bias, self.relative_position_bias)

    @record_outputs
    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        num_masked_patches: int | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MIMModelOutput:
        """`num_masked_patches`: the per-sample count of `bool_masked_pos`, read from the mask
        unless given (it must be given under torch.compile, where shapes cannot depend on data)."""
        mask, num_masked = None, 0
        if bool_masked_pos is not None:
            grid = self.embeddings.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
            bool_masked_pos, num_masked = check_bool_masked_pos(bool_masked_pos, pixel_values.shape[0], grid, num_masked_patches)
            mask = bool_masked_pos.float()
            if self.relative_position_bias is not None or self.shared_relative_position_bias is not None:
                raise ValueError("bool_masked_pos cannot be combined with a relative position bias (fine-tuning models see every patch)")
        # patches (visible only when masked), positions, cls
        hidden, grid = self.embeddings(pixel_values, bool_masked_pos, interpolate_pos_encoding, num_masked)
        # encode
        hidden = self.encoder(hidden, attention_bias=self._attention_bias(grid), **kwargs)
        # final norm, the feature the classifier head receives
        hidden, pooled = self._normalize_and_pool(hidden)
        return MIMModelOutput(last_hidden_state=hidden, pooler_output=pooled, mask=mask)


class CAERegressor(nn.Module):
    """Latent contextual regressor: mask-token queries (+ positions) attend to the visible latents
    and to themselves; a final LayerNorm gives `latent_predict`."""

    def __init__(self, config: CAEConfig):
        super().__init__()
        depth = config.regressor_num_hidden_layers
        rates = drop_path_rates(config.drop_path_rate, depth)
        self.layers = nn.ModuleList([CAERegressorBlock(config, rate) for rate in rates])
        self.layernorm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)

    def forward(self, queries, visible, pos_masked, pos_visible, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        pos_context = torch.cat([pos_visible, pos_masked], dim=1)
        for layer in self.layers:
            queries = layer(queries, torch.cat([visible, queries], dim=1), pos_masked, pos_context, **kwargs)[0]
        return self.layernorm(queries)


class CAEDecoder(nn.Module):
    """Self-attention blocks over the masked tokens only (regressed latents + positions), a final
    LayerNorm and the token classifier."""

    def __init__(self, config: CAEConfig):
        super().__init__()
        self.transformer = ViTEncoder(_cae_blocks(config, "decoder_", config.decoder_layer_scale_init_value))
        self.layernorm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.decoder_hidden_size, config.vocab_size)

    def forward(self, latent_predict, pos_masked, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        hidden = self.transformer(latent_predict + pos_masked, **kwargs)
        return self.head(self.layernorm(hidden))


def cae_mask_generator(config: CAEConfig) -> BlockMaskGenerator:
    """The block-wise generator `config` describes (CAE's pre-training masks; the recipe's too)."""
    return BlockMaskGenerator(config.grid_size, config.num_masking_patches, min_num_patches=config.min_mask_patches_per_block,
                              max_num_patches=config.max_mask_patches_per_block, min_aspect=config.mask_min_aspect)


class CAEForPreTraining(CAEPreTrainedModel):
    """CAE pre-training.

    `bool_masked_pos` [B, L] (True = masked; the same count per sample; a [B, H, W] grid is
    flattened row-major) selects the masked patches; without it the block-wise generator of the
    config draws one mask per sample. `labels` are the target token ids of the masked patches in
    row-major order, [B*M] (as `input_ids[bool_masked_pos]`) or [B, M]; without them a tokenizer
    set with `set_tokenizer` (e.g. the DALL-E dVAE encoder) computes them from
    `tokenizer_pixel_values` (default: `pixel_values`). Returns `loss` = `loss_main` (token
    cross-entropy) + `loss_align` (`align_loss_weight` x MSE of regressed vs. encoded latents of
    the masked patches), `logits` [B*M, vocab_size], `latent_predict`, `latent_target`, `mlm_acc`.

    The alignment target is the encoder itself (same weights, no gradient) applied to the masked
    patches, as the original's `alignment_encoder`, which is re-synchronised with the encoder on
    every step and therefore never stored here.
    """

    _keys_to_ignore_on_load_unexpected = [r"^cae\.fc_norm\.", r"relative_position_bias"]

    def __init__(self, config: CAEConfig):
        super().__init__(config)
        self.cae = CAEModel(config, add_pooling_layer=False, add_final_norm=True, use_relative_position_bias=False)
        if self.cae.embeddings.pos_embed is None:
            raise ValueError("CAEForPreTraining needs use_absolute_position_embeddings=True (the pre-training encoder adds the sin-cos table)")
        self.cae.embeddings.pos_embed.requires_grad_(False)
        self.grid_size = self.cae.embeddings.patch_embed.grid_size
        if config.decoder_hidden_size != config.hidden_size:
            self.encoder_to_regressor = nn.Linear(config.hidden_size, config.decoder_hidden_size)
            self.encoder_to_regressor_norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        else:
            self.encoder_to_regressor = self.encoder_to_regressor_norm = None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        self.decoder_pos_embed = nn.Parameter(cae_sincos_table(config.decoder_hidden_size, self.grid_size), requires_grad=False)
        self.regressor = CAERegressor(config)
        self.decoder = CAEDecoder(config)
        object.__setattr__(self, "_tokenizer", None)  # not a submodule (see set_tokenizer)
        self.post_init()

    def set_tokenizer(self, tokenizer) -> None:
        """A convenience for calls without `labels`: a callable mapping images [B, C, H', W'] to
        token ids [B, h, w] or [B, L] (e.g. `DalleTokenizer`), applied to `tokenizer_pixel_values`
        where it lives (the model never moves it; its ids are moved to the logits). Not a
        submodule: never saved, moved or trained with the model. The pre-trainer does not use it:
        its recipe (`mim_hub.training.recipes.cae`) holds the tokenizer and passes `labels`."""
        object.__setattr__(self, "_tokenizer", tokenizer)

    @property
    def tokenizer(self):
        return self.__dict__.get("_tokenizer")

    def mask_generator(self) -> BlockMaskGenerator:
        """The block-wise generator this config describes (CAE's pre-training masks)."""
        return cae_mask_generator(self.config)

    def draw_mask(self, batch_size: int, rng: random.Random | None = None, device=None) -> torch.Tensor:
        """[B, L] bool masks from the block generator; `rng` defaults to one seeded from torch's RNG."""
        if rng is None:
            rng = random.Random(int(torch.randint(0, 2**62, (1,)).item()))
        gen = self.mask_generator()
        masks = [torch.from_numpy(gen(rng).reshape(-1).astype(bool)) for _ in range(batch_size)]
        return torch.stack(masks).to(device)

    def _project(self, latent: torch.Tensor) -> torch.Tensor:
        if self.encoder_to_regressor is None:
            return latent
        return self.encoder_to_regressor_norm(self.encoder_to_regressor(latent))

    def _labels_from_tokenizer(self, pixels: torch.Tensor, bool_masked_pos: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ids = self.tokenizer(pixels)
        ids = ids.reshape(ids.shape[0], -1)
        if ids.shape != bool_masked_pos.shape:
            raise ValueError(f"the tokenizer gave {ids.shape[1]} token ids per image but the model has {bool_masked_pos.shape[1]} patches; "
                             "feed it images whose token grid matches the patch grid (tokenizer_pixel_values)")
        return ids[bool_masked_pos.to(ids.device)]

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        tokenizer_pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CAEPreTrainingOutput:
        grid = self.cae.embeddings.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
        batch, length = pixel_values.shape[0], grid[0] * grid[1]
        if bool_masked_pos is None:
            if tuple(grid) != tuple(self.grid_size):
                raise ValueError("pass bool_masked_pos for inputs of another size than the model's")
            bool_masked_pos = self.draw_mask(batch, device=pixel_values.device)
        expected = self.config.num_masking_patches if torch.compiler.is_compiling() else None
        bool_masked_pos, num_masked = check_bool_masked_pos(bool_masked_pos, batch, grid, expected)
        # encode cls + visible patches
        encoded = self.cae(
            pixel_values, bool_masked_pos=bool_masked_pos, interpolate_pos_encoding=interpolate_pos_encoding, num_masked_patches=num_masked,
            **kwargs,
        )
        visible = self._project(encoded.last_hidden_state)[:, 1:]
        # alignment target: the same encoder on the masked patches, without gradient
        with torch.no_grad():
            target = self.cae(pixel_values, bool_masked_pos=~bool_masked_pos, interpolate_pos_encoding=interpolate_pos_encoding,
                              num_masked_patches=length - num_masked)
            latent_target = self._project(target.last_hidden_state[:, 1:])
        # positions of regressor and decoder; mask-token queries
        pos = interpolate_pos_embed(self.decoder_pos_embed, grid, old_grid=self.grid_size)[:, 1:].expand(batch, -1, -1)
        pos_visible, pos_masked = split_by_mask(pos.to(visible.dtype), bool_masked_pos, num_masked)
        queries = self.mask_token.to(visible.dtype).expand(batch, pos_masked.shape[1], -1)
        # regress the masked latents
        regressed = self.run_recorded(self.regressor, queries, visible, pos_masked, pos_visible, **kwargs)
        latent_predict = regressed.last_hidden_state
        # decode token ids of the masked patches
        decoded = self.run_recorded(self.decoder, latent_predict, pos_masked, **kwargs)
        logits = decoded.last_hidden_state.reshape(-1, decoded.last_hidden_state.shape[-1])
        # losses
        if labels is None and self.tokenizer is not None:
            tok_pixels = pixel_values if tokenizer_pixel_values is None else tokenizer_pixel_values
            labels = self._labels_from_tokenizer(tok_pixels, bool_masked_pos)
        loss_align = self.config.align_loss_weight * F.mse_loss(latent_predict.float(), latent_target.float(), reduction="mean")
        loss = loss_main = mlm_acc = None
        if labels is not None:
            labels = labels.reshape(-1).to(logits.device)
            if labels.shape[0] != logits.shape[0]:
                raise ValueError(f"labels must hold the token ids of the {logits.shape[0]} masked patches (row-major), got {labels.shape[0]}")
            loss_main = F.cross_entropy(logits.float(), labels)
            loss = loss_main + loss_align
            mlm_acc = (logits.detach().argmax(-1) == labels).float().mean()
        return CAEPreTrainingOutput(
            loss=loss, loss_main=loss_main, loss_align=loss_align, logits=logits, latent_predict=latent_predict,
            latent_target=latent_target, mlm_acc=mlm_acc, bool_masked_pos=bool_masked_pos,
            last_hidden_state=encoded.last_hidden_state,
            hidden_states=encoded.hidden_states, attentions=encoded.attentions,
            regressor_hidden_states=regressed.hidden_states, regressor_attentions=regressed.attentions,
            decoder_hidden_states=decoded.hidden_states, decoder_attentions=decoded.attentions,
        )


class CAEForImageClassification(ImageClassifierForwardMixin, CAEPreTrainedModel):
    """CAE's fine-tuning model (`modeling_finetune.VisionTransformer`): per-block relative
    position bias (by default), the sin-cos table, mean pooling of the patch tokens + `fc_norm`
    (or the normed cls token) into a linear head."""

    head_init_std, head_init_bound = 2e-5, 4e-5  # trunc_normal(0.02) x init_scale 0.001

    def __init__(self, config: CAEConfig):
        super().__init__(config)
        self.cae = CAEModel(config)
        self.head = classification_head(config)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`, plus CAE's fine-tuning start: when a checkpoint without
        mean pooling (a pre-trained encoder, whose final norm is `cae.layernorm`) is loaded with
        `use_mean_pooling=True`, that norm initialises `fc_norm`, as `run_class_finetuning.py`
        renames `norm` to `fc_norm`. Relative position tables it lacks start at zero.

        The rename is transformers' documented `key_mapping`. transformers records a key mapping
        on the model to reverse it when saving (`save_original_format=True`, the default of every
        `save_pretrained`, the Trainer's checkpoints included); this one is a one-way start, so
        the record is cleared and the model saves (and resumes) under its own names, `cae.fc_norm`."""
        given = kwargs.get("config")
        wanted = kwargs.get("use_mean_pooling", getattr(given, "use_mean_pooling", None) if isinstance(given, CAEConfig) else None)
        if "key_mapping" not in kwargs and wanted:
            try:
                saved = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub_kwargs(kwargs))
            except (OSError, ValueError, TypeError):
                saved = None
            if saved is not None and not saved.use_mean_pooling:
                kwargs["key_mapping"] = {r"^cae\.layernorm\.": "cae.fc_norm.", r"^layernorm\.": "fc_norm."}  # (a CAEModel's keys: no prefix)
                loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
                model = loaded[0] if isinstance(loaded, tuple) else loaded
                forget_key_mapping(model)  # (transformers' record of the mapping, see above)
                return loaded
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


__all__ = ["CAEPreTrainedModel", "CAEModel", "CAEForPreTraining", "CAEForImageClassification", "CAEPreTrainingOutput"]
