"""MAE: a ViT encoder over the visible patches and a light decoder that regresses the pixels of
the masked ones (facebookresearch/mae, `models_mae.py` and `models_vit.py`)."""

from __future__ import annotations

import torch
from torch import nn

from ... import initialization as init
from ...layers import (
    PatchEmbedding,
    ViTEncoder,
    gather_tokens,
    get_2d_sincos_pos_embed,
    interpolate_pos_embed,
    patchify,
    random_masking,
    unpatchify,
)
from ..encoder import FinalNormMixin, TransformersKwargs, Unpack, can_return_tuple, record_outputs
from ..features import EncoderFeaturesMixin
from ..modeling_common import (
    ImageClassifierForwardMixin,
    MIMModelOutput,
    MIMPreTrainedModel,
    MIMPreTrainingOutput,
    classification_head,
    vit_blocks,
)
from .configuration_mae import MAEConfig


def pixel_loss(pixel_values, pred, mask, patch_size: int, norm_pix_loss: bool, per_image: bool = False) -> torch.Tensor:
    """MAE's loss: mean squared error per patch, averaged over the masked patches only (of the
    batch, or of each image with `per_image`: [B]).

    With `norm_pix_loss` the target is each patch normalised by its own mean and unbiased
    variance (+1e-6), as the original."""
    loss = patch_errors(pixel_values, pred, patch_size, norm_pix_loss)
    if per_image:
        return (loss * mask).sum(1) / mask.sum(1)
    return (loss * mask).sum() / mask.sum()


def patch_errors(pixel_values, pred, patch_size: int, norm_pix_loss: bool) -> torch.Tensor:
    """Each patch's mean squared error [B, L] against its pixels (per-patch normalised by its own
    mean and unbiased variance, +1e-6, with `norm_pix_loss`): what `pixel_loss` averages."""
    target = patchify(pixel_values, patch_size)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    return ((pred - target) ** 2).mean(dim=-1)


class MAEEmbeddings(nn.Module):
    """Patch embedding + cls token + the fixed 2-D sin-cos table (with its zero cls row).

    The table is a parameter because fine-tuning trains it and checkpoints store it; the
    pre-training model freezes it, as the original does.
    """

    def __init__(self, config: MAEConfig):
        super().__init__()
        self.patch_embed = PatchEmbedding(config.image_size, config.patch_size, config.num_channels, config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        table = get_2d_sincos_pos_embed(config.hidden_size, self.patch_embed.grid_size, cls_token=True)
        self.pos_embed = nn.Parameter(table.unsqueeze(0))

    def position_table(self, grid: tuple[int, int]) -> torch.Tensor:
        return interpolate_pos_embed(self.pos_embed, grid, old_grid=self.patch_embed.grid_size)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False):
        """Returns (patch tokens with positions [B, L, D], cls token with position [B, 1, D], grid)."""
        tokens, grid = self.patch_embed(pixel_values, interpolate_pos_encoding, return_grid=True)
        pos = self.position_table(grid)
        tokens = tokens + pos[:, 1:]
        cls = (self.cls_token + pos[:, :1]).expand(tokens.shape[0], -1, -1)
        return tokens, cls, grid


class MAEPreTrainedModel(MIMPreTrainedModel):
    config_class = MAEConfig
    base_model_prefix = "mae"

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MAEEmbeddings):
            init.copy_(module.pos_embed, get_2d_sincos_pos_embed(module.pos_embed.shape[-1], module.patch_embed.grid_size, cls_token=True).unsqueeze(0))
            init.normal_(module.cls_token, std=0.02)
        elif isinstance(module, MAEDecoder):
            init.copy_(module.decoder_pos_embed, module.position_table())
            init.normal_(module.mask_token, std=0.02)


class MAEModel(FinalNormMixin, EncoderFeaturesMixin, MAEPreTrainedModel):
    """MAE's ViT encoder.

    Called without `noise` it encodes every patch in its original order (no masking, no
    shuffling): `last_hidden_state` is [B, 1 + L, D]. With `noise` [B, L] it keeps the
    `int(L * (1 - mask_ratio))` lowest-noise patches as in pre-training and returns `mask` and
    `ids_restore` too.

    `pooler_output` is what MAE's classifier head receives: `fc_norm` of the mean patch token
    when `config.use_mean_pooling` (the fine-tuning recipe; no final norm then), else the normed
    cls token.
    """

    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^head\."]
    num_prefix_tokens = 1  # the cls token

    def __init__(self, config: MAEConfig, add_pooling_layer: bool = True, add_final_norm: bool | None = None):
        super().__init__(config)
        self.embeddings = MAEEmbeddings(config)
        self.encoder = ViTEncoder(vit_blocks(config))
        self._build_final_norms(config, add_final_norm, add_pooling_layer)
        self.post_init()

    def token_grid(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> tuple[int, int]:
        """The token grid of `pixel_values` (validated)."""
        return self.embeddings.patch_embed.check_input(pixel_values, interpolate_pos_encoding)

    @record_outputs
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MIMModelOutput:
        # patches, positions
        tokens, cls, _ = self.embeddings(pixel_values, interpolate_pos_encoding)
        mask = ids_restore = None
        # keep the lowest-noise patches
        if noise is not None:
            if noise.shape != tokens.shape[:2]:
                raise ValueError(f"noise must be [batch, num_patches] = {tuple(tokens.shape[:2])}, got {tuple(noise.shape)}")
            ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
            ids_keep, mask, ids_restore = random_masking(noise, ratio)
            tokens = gather_tokens(tokens, ids_keep)
        # encode cls + visible patches (rebinding `tokens` frees the patch tokens once copied: peak memory)
        tokens = torch.cat([cls, tokens], dim=1)
        hidden = self.encoder(tokens, **kwargs)
        # final norm, the feature the classifier head receives
        hidden, pooled = self._normalize_and_pool(hidden)
        return MIMModelOutput(last_hidden_state=hidden, pooler_output=pooled, mask=mask, ids_restore=ids_restore)


class MAEDecoder(nn.Module):
    """Embeds the visible latents, fills the masked places with `mask_token`, adds the fixed
    decoder positions, runs the decoder blocks and predicts each patch's pixels.

    `num_prefix_tokens`: the encoder's tokens before the patches (MAE's cls token: 1; ConvMAE v1,
    which MR-MAE builds on, has none: 0); they go through the blocks and are dropped from the
    predictions."""

    def __init__(self, config: MAEConfig, grid_size: tuple[int, int], num_prefix_tokens: int = 1):
        super().__init__()
        self.grid_size = grid_size
        self.num_prefix_tokens = num_prefix_tokens
        self.decoder_embed = nn.Linear(config.hidden_size, config.decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        table = get_2d_sincos_pos_embed(config.decoder_hidden_size, grid_size, cls_token=num_prefix_tokens > 0)
        self.decoder_pos_embed = nn.Parameter(table.unsqueeze(0), requires_grad=False)
        self.transformer = ViTEncoder(vit_blocks(config, "decoder_"))
        self.decoder_norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(config.decoder_hidden_size, config.patch_size**2 * config.num_channels)

    def position_table(self) -> torch.Tensor:
        """The fixed sin-cos table [1, prefix + L, D] (a zero row per prefix token)."""
        table = get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], self.grid_size, cls_token=self.num_prefix_tokens > 0)
        return table.unsqueeze(0)

    def embed(self, latent, ids_restore, grid) -> torch.Tensor:
        """The decoder's input: [prefix, every patch in its place (masked ones as `mask_token`)] + positions."""
        hidden = self.decoder_embed(latent)
        batch, length = ids_restore.shape
        prefix = self.num_prefix_tokens
        # append mask tokens and put every token back in its place
        mask_tokens = self.mask_token.expand(batch, length + prefix - hidden.shape[1], -1).to(hidden.dtype)
        # (no name holds the intermediates, so they are freed before the decoder runs: peak memory)
        patches = gather_tokens(torch.cat([hidden[:, prefix:], mask_tokens], dim=1), ids_restore)
        hidden = torch.cat([hidden[:, :prefix], patches], dim=1) if prefix else patches
        return hidden + interpolate_pos_embed(self.decoder_pos_embed, grid, num_prefix_tokens=prefix, old_grid=self.grid_size)

    def forward(self, latent, ids_restore, grid, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        hidden = self.embed(latent, ids_restore, grid)
        # decode, predict pixels, drop the prefix
        hidden = self.transformer(hidden, **kwargs)
        return self.decoder_pred(self.decoder_norm(hidden))[:, self.num_prefix_tokens:]


class PixelTargetsMixin:
    """MAE's pixel-target helpers for a pre-training model with `config.patch_size`,
    `num_channels` and `norm_pix_loss` (MAE, ColorMAE, MR-MAE), and MAE's pre-training pass
    (`encode_and_decode`) for one whose base model takes MAE's `noise` / `mask_ratio` and has a
    `token_grid`, and whose `decoder` is MAE's."""

    def encode_and_decode(self, pixel_values, noise=None, mask_ratio=None, interpolate_pos_encoding: bool = False, **kwargs):
        """MAE's pre-training pass: `noise` (uniform, drawn when None), the base model on the
        visible patches, the decoder on every patch (recorded as `decoder_*`), the pixel loss on
        the masked ones. Returns (the base model's output, the decoder's `StackOutput`, the loss,
        the token grid)."""
        encoder = self.base_model
        grid = encoder.token_grid(pixel_values, interpolate_pos_encoding)
        if noise is None:
            noise = torch.rand(pixel_values.shape[0], grid[0] * grid[1], device=pixel_values.device)
        # encode visible patches
        encoded = encoder(pixel_values, noise=noise, mask_ratio=mask_ratio, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        # decode every patch
        decoded = self.run_recorded(self.decoder, encoded.last_hidden_state, encoded.ids_restore, grid, **kwargs)
        # loss on masked patches only
        loss = self.forward_loss(pixel_values, decoded.last_hidden_state.float(), encoded.mask)
        return encoded, decoded, loss, grid

    @staticmethod
    def pretraining_fields(encoded, decoded) -> dict:
        """The output fields every MAE-style pre-training model returns, from `encode_and_decode`."""
        return dict(logits=decoded.last_hidden_state, mask=encoded.mask, ids_restore=encoded.ids_restore,
                    last_hidden_state=encoded.last_hidden_state, hidden_states=encoded.hidden_states, attentions=encoded.attentions,
                    decoder_hidden_states=decoded.hidden_states, decoder_attentions=decoded.attentions)

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return patchify(pixel_values, self.config.patch_size)

    def unpatchify(self, logits: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return unpatchify(logits, self.config.patch_size, self.config.num_channels, grid)

    def forward_loss(self, pixel_values, logits, mask) -> torch.Tensor:
        return pixel_loss(pixel_values, logits, mask, self.config.patch_size, self.config.norm_pix_loss)

    def reconstruction_of(self, pixel_values: torch.Tensor, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        """What `mim_hub.reconstruction.reconstruct` draws, from this model's forward `outputs`:
        (the predicted patches [B, L, p*p*C], per-patch normalised for `norm_pix_loss`; the loss of
        each image [B] on its masked patches)."""
        logits = outputs.logits.float()
        return logits, pixel_loss(pixel_values, logits, outputs.mask.float(), self.config.patch_size, self.config.norm_pix_loss, per_image=True)


class MAEForPreTraining(PixelTargetsMixin, MAEPreTrainedModel):
    """MAE pre-training: encoder on visible patches, decoder, pixel loss on masked patches.

    `noise` [B, L] is the uniform draw the original makes with `torch.rand(B, L)` (the lowest
    values are kept); without it the model draws it. Returns `loss`, `logits` (per-patch
    predictions [B, L, p*p*C]), `mask` (1 = masked) and `ids_restore`. `unpatchify(logits)`
    turns predictions into images (in normalised-pixel space for `norm_pix_loss` models).
    """

    decoder_class = MAEDecoder  # a subclass whose decoder adds parts of its own names it (HPM)

    def __init__(self, config: MAEConfig):
        super().__init__(config)
        self.mae = MAEModel(config, add_pooling_layer=False, add_final_norm=True)
        self.mae.embeddings.pos_embed.requires_grad_(False)
        self.decoder = self.decoder_class(config, self.mae.embeddings.patch_embed.grid_size)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MIMPreTrainingOutput:
        encoded, decoded, loss, _ = self.encode_and_decode(pixel_values, noise, mask_ratio, interpolate_pos_encoding, **kwargs)
        return MIMPreTrainingOutput(loss=loss, **self.pretraining_fields(encoded, decoded))


class MAEForImageClassification(ImageClassifierForwardMixin, MAEPreTrainedModel):
    """MAE's fine-tuning model (`models_vit.VisionTransformer`): the encoder's `pooler_output`
    (mean patch token + `fc_norm` with `use_mean_pooling`, else the normed cls token) into a
    linear head."""

    head_init_std = 2e-5  # MAE's fine-tuning head init

    def __init__(self, config: MAEConfig):
        super().__init__(config)
        self.mae = MAEModel(config)
        self.head = classification_head(config)
        self.post_init()


__all__ = ["MAEPreTrainedModel", "MAEModel", "MAEForPreTraining", "MAEForImageClassification", "patch_errors", "pixel_loss"]
