"""HPM: MAE's encoder, decoder and pixel loss (shared, not copied), plus a loss predictor, a
second decoder stack on the same input that predicts each patch's reconstruction loss and learns
which patches are harder (Haochen-Wang409/HPM, `models_mae_learn_loss.py`). The hard-patch masks
that a teacher's predictions choose are a mask source of the pre-training recipe
(`layers/mask_hard_patches.py`), not of the model."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ...layers import ViTEncoder, random_masking
from ..encoder import TransformersKwargs, Unpack, can_return_tuple
from ..mae.modeling_mae import MAEDecoder, MAEForImageClassification, MAEForPreTraining, MAEModel, patch_errors
from ..modeling_common import MIMPreTrainingOutput, vit_blocks
from .configuration_hpm import HPMConfig


def check_bool_masked_pos(bool_masked_pos: torch.Tensor, batch: int, length: int, expected: int | None = None) -> tuple[torch.Tensor, int]:
    """A [B, L] mask (True = masked; a [B, H, W] grid is flattened row-major) and its per-sample
    count, which HPM's encoder (`x[~mask].reshape(B, -1, D)`) needs to be the same in every sample.
    Under torch.compile the count cannot be read from the data: `expected` (the mask ratio's) is used."""
    if bool_masked_pos.is_floating_point():
        raise ValueError(f"bool_masked_pos must be boolean (True = masked), got {bool_masked_pos.dtype}; MAE-style noise goes to `noise`")
    if bool_masked_pos.dim() == 3 and bool_masked_pos.shape[0] == batch and bool_masked_pos.shape[1] * bool_masked_pos.shape[2] == length:
        bool_masked_pos = bool_masked_pos.flatten(1)
    if tuple(bool_masked_pos.shape) != (batch, length):
        raise ValueError(f"bool_masked_pos must be [batch, num_patches] = {(batch, length)}, got {tuple(bool_masked_pos.shape)}")
    bool_masked_pos = bool_masked_pos.bool()
    if torch.compiler.is_compiling() and expected is not None:
        return bool_masked_pos, expected
    counts = bool_masked_pos.sum(dim=1)
    low, high = int(counts.min()), int(counts.max())
    if low != high:
        raise ValueError(f"HPM needs the same number of masked patches in every sample of a batch; got counts from {low} to {high}")
    if high >= length:
        raise ValueError(f"bool_masked_pos masks all {length} patches; at least one must stay visible")
    return bool_masked_pos, high


def check_same_mask(bool_masked_pos: torch.Tensor, noise: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """The rule of every HPM class given both a boolean mask and MAE-style `noise`: they must mask
    the same patches (the noise through MAE's `random_masking` at `mask_ratio`); the boolean mask
    (checked, [B, L]) is then the one used. Raises ValueError when they differ."""
    batch, length = noise.shape[0], noise.shape[-1]
    if noise.dim() != 2:
        raise ValueError(f"noise must be [batch, num_patches], got {tuple(noise.shape)}")
    bool_masked_pos, _ = check_bool_masked_pos(bool_masked_pos, batch, length)
    if not torch.equal(bool_masked_pos, random_masking(noise, mask_ratio)[1].bool()):
        raise ValueError("bool_masked_pos and noise give different masks; pass one of them")
    return bool_masked_pos


def visible_first_noise(bool_masked_pos: torch.Tensor, num_masked: int) -> tuple[torch.Tensor, float]:
    """MAE-convention noise and mask ratio with which MAE's encoder keeps exactly the unmasked
    patches, in ascending order (HPM's encoder), and the decoder's sequence puts them back."""
    length = bool_masked_pos.shape[1]
    noise = bool_masked_pos.float() * length + torch.arange(length, device=bool_masked_pos.device)
    return noise, 1.0 - (length - num_masked + 0.5) / length  # int(L * (1 - ratio)) = L - M, whatever the rounding


def loss_prediction_loss(predicted: torch.Tensor, target: torch.Tensor, objective: str = "relative") -> torch.Tensor:
    """HPM's `forward_learning_loss` over the masked patches: `predicted` and `target` (the
    detached reconstruction losses) are [B, M].

    "relative": for every ordered pair (i, j) of masked patches of an image whose targets differ,
    a binary cross-entropy that `sigmoid(predicted_j - predicted_i)` says whether j is the harder
    one (+1e-6 inside the logs, as the original), averaged over those pairs. "absolute": MSE to
    the targets standardised per image (unbiased variance, +1e-6)."""
    if objective == "relative":
        harder = target.unsqueeze(1) > target.unsqueeze(2)  # [b, i, j]: patch j is harder than patch i
        easier = target.unsqueeze(1) < target.unsqueeze(2)
        chance = torch.sigmoid(predicted.unsqueeze(1) - predicted.unsqueeze(2))
        loss = -harder.int() * torch.log(chance + 1e-6) - easier.int() * torch.log(1 - chance + 1e-6)
        return loss.sum() / (harder | easier).sum().clamp_min(1)
    standardised = (target - target.mean(dim=1, keepdim=True)) / (target.var(dim=1, keepdim=True) + 1.0e-6) ** 0.5
    return ((predicted - standardised) ** 2).mean()


@dataclass
class HPMPreTrainingOutput(MIMPreTrainingOutput):
    """HPM pre-training output: MAE's (`loss`, per-patch `logits` in the original patch order,
    `mask`, `ids_restore`, `last_hidden_state` = [cls, visible patches in ascending order]) plus
    `reconstruction_loss` (MAE's pixel loss on the masked patches), `loss_prediction_loss` (the
    loss predictor's objective; `loss` is their sum) and `predicted_loss` [B, L], each patch's
    predicted reconstruction loss in the original patch order. No loss when nothing is masked.
    `hidden_states` / `attentions` are the encoder's, `decoder_*` the reconstructor's and
    `loss_predictor_*` the loss predictor's (each stack's input first)."""

    reconstruction_loss: torch.FloatTensor | None = None
    loss_prediction_loss: torch.FloatTensor | None = None
    predicted_loss: torch.FloatTensor | None = None
    loss_predictor_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    loss_predictor_attentions: tuple[torch.FloatTensor, ...] | None = None


class HPMModel(MAEModel):
    """HPM's ViT encoder (MAE's). Without a mask it encodes every patch in order.
    `bool_masked_pos` [B, L] (True = masked, the same count in every sample) keeps the visible
    patches in ascending order, as HPM's encoder; `noise` masks as MAE. Given both, they must mask
    the same patches (`check_same_mask`, the rule of `HPMForPreTraining` too)."""

    config_class = HPMConfig

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                mask_ratio: float | None = None, interpolate_pos_encoding: bool = False, **kwargs: Unpack[TransformersKwargs]):
        if bool_masked_pos is not None:
            if noise is not None:
                bool_masked_pos = check_same_mask(bool_masked_pos, noise, self.config.mask_ratio if mask_ratio is None else mask_ratio)
                noise = None
            grid = self.embeddings.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
            bool_masked_pos, num_masked = check_bool_masked_pos(bool_masked_pos, pixel_values.shape[0], grid[0] * grid[1])
            if num_masked:
                noise, mask_ratio = visible_first_noise(bool_masked_pos, num_masked)
        return super().forward(pixel_values, noise=noise, mask_ratio=mask_ratio, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)


class HPMDecoder(MAEDecoder):
    """MAE's decoder (HPM's reconstructor) and, on the same input sequence (`embed`), the loss
    predictor: a second block stack of the decoder's size whose `p*p*C` outputs per patch are
    averaged into one predicted loss. `head` picks which one a call runs (each is recorded as its
    own stack)."""

    def __init__(self, config: HPMConfig, grid_size: tuple[int, int]):
        super().__init__(config, grid_size)
        self.loss_transformer = ViTEncoder(vit_blocks(config, "decoder_"))
        self.loss_norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.loss_pred = nn.Linear(config.decoder_hidden_size, config.patch_size**2 * config.num_channels)

    def forward(self, latent, ids_restore, grid, head: str = "pixels", **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        """"pixels": [B, L, p*p*C], each patch's pixels (MAE's decoder); "loss": [B, L], each patch's
        predicted reconstruction loss."""
        if head == "pixels":
            return super().forward(latent, ids_restore, grid, **kwargs)
        if head != "loss":
            raise ValueError(f"head must be 'pixels' or 'loss', got {head!r}")
        hidden = self.embed(latent, ids_restore, grid)
        hidden = self.loss_transformer(hidden, **kwargs)
        return self.loss_pred(self.loss_norm(hidden))[:, 1:].mean(dim=-1)


class HPMForPreTraining(MAEForPreTraining):
    """HPM pre-training: MAE's encoder on the visible patches (ascending order), the reconstructor
    and the loss predictor on the same decoder sequence, and `loss = reconstruction_loss +
    loss_prediction_loss` (see `HPMPreTrainingOutput`, `loss_prediction_loss`).

    The mask is `bool_masked_pos` [B, L] (True = masked, as HPM's model takes it; the same count
    in every sample), or MAE-convention `noise` [B, L] with `mask_ratio` (what the hard-patch mask
    source `HardPatchMaskGenerator` gives; `ids_restore` is then the noise's), or, with neither,
    uniform noise drawn here (plain random masking)."""

    config_class = HPMConfig
    decoder_class = HPMDecoder
    recorded_stacks = {"decoder": "decoder.transformer", "loss_predictor": "decoder.loss_transformer"}  # output field -> blocks

    def predict_patch_losses(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """[B, L]: each patch's predicted reconstruction loss with every patch visible (only the
        loss predictor runs): what HPM's teacher ranks to choose the hard patches."""
        grid = self.mae.embeddings.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
        latent = self.mae(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state
        in_place = torch.arange(grid[0] * grid[1], device=latent.device).expand(latent.shape[0], -1)
        return self.decoder(latent, in_place, grid, head="loss")

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> HPMPreTrainingOutput:
        grid = self.mae.embeddings.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
        batch, length = pixel_values.shape[0], grid[0] * grid[1]
        # the mask: given, or from noise (given or drawn)
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        noise_ids_restore = None
        if bool_masked_pos is None or noise is not None:
            if noise is None:
                noise = torch.rand(batch, length, device=pixel_values.device)
            if tuple(noise.shape) != (batch, length):
                raise ValueError(f"noise must be [batch, num_patches] = {(batch, length)}, got {tuple(noise.shape)}")
            _, noise_mask, noise_ids_restore = random_masking(noise, ratio)
            if bool_masked_pos is not None:
                check_same_mask(bool_masked_pos, noise, ratio)
            bool_masked_pos, num_masked = noise_mask.bool(), length - int(length * (1 - ratio))
        else:
            bool_masked_pos, num_masked = check_bool_masked_pos(bool_masked_pos, batch, length, expected=length - int(length * (1 - ratio)))
        # encode cls + the visible patches, in ascending order
        order_noise, keep_ratio = visible_first_noise(bool_masked_pos, num_masked) if num_masked else (None, None)
        encoded = self.mae(
            pixel_values, noise=order_noise, mask_ratio=keep_ratio, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs,
        )
        in_place = encoded.ids_restore if num_masked else torch.arange(length, device=pixel_values.device).expand(batch, -1)
        # one decoder sequence, two heads: the pixels and the predicted loss of every patch
        reconstructed = self.run_recorded(partial(self.decoder, head="pixels"), encoded.last_hidden_state, in_place, grid,
                                          blocks_of=self.decoder.transformer, **kwargs)
        predicted = self.run_recorded(partial(self.decoder, head="loss"), encoded.last_hidden_state, in_place, grid,
                                      blocks_of=self.decoder.loss_transformer, **kwargs)
        logits, predicted_loss = reconstructed.last_hidden_state, predicted.last_hidden_state
        mask = bool_masked_pos.to(torch.float32)
        # losses on the masked patches: pixels, and the predictor against the (detached) pixel errors
        loss = reconstruction_loss = prediction_loss = None
        if num_masked:
            errors = patch_errors(pixel_values, logits.float(), self.config.patch_size, self.config.norm_pix_loss)
            reconstruction_loss = (errors * mask).sum() / mask.sum()
            masked_ids = torch.argsort(bool_masked_pos.to(torch.uint8), dim=1, stable=True)[:, length - num_masked:]  # ascending
            masked = lambda values: torch.gather(values, 1, masked_ids)  # noqa: E731
            prediction_loss = loss_prediction_loss(masked(predicted_loss.float()), masked(errors.detach()), self.config.loss_prediction_objective)
            loss = reconstruction_loss + prediction_loss
        return HPMPreTrainingOutput(
            loss=loss, logits=logits, mask=mask, ids_restore=in_place if noise_ids_restore is None else noise_ids_restore,
            last_hidden_state=encoded.last_hidden_state,
            hidden_states=encoded.hidden_states, attentions=encoded.attentions,
            decoder_hidden_states=reconstructed.hidden_states, decoder_attentions=reconstructed.attentions,
            loss_predictor_hidden_states=predicted.hidden_states, loss_predictor_attentions=predicted.attentions,
            reconstruction_loss=reconstruction_loss, loss_prediction_loss=prediction_loss, predicted_loss=predicted_loss,
        )


class HPMForImageClassification(MAEForImageClassification):
    """A fine-tuned HPM encoder: MAE's `models_vit.VisionTransformer` (mean pooling + `fc_norm` with
    `use_mean_pooling`, HPM's default; else the normed cls token) into a linear head."""

    config_class = HPMConfig


__all__ = ["HPMModel", "HPMForPreTraining", "HPMForImageClassification", "HPMPreTrainingOutput", "HPMDecoder", "loss_prediction_loss"]
