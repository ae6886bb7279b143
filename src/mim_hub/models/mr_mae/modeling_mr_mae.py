"""MR-MAE: mimic before reconstruct. The encoder's visible tokens mimic frozen teachers (CLIP,
DINO) through one head per teacher; the decoder reconstructs the masked patches' pixels as MAE.

The stem before the transformer blocks is chosen once, when the model is built, by
`config.backbone`: MAE's plain ViT embeddings (`modeling_mr_mae_vit.py`) or ConvMAE's hybrid
(`modeling_convvit.py`: masked convolution stages and their multi-scale fusion). Both answer the
same interface; the blocks, decoder and losses below serve both. With no teachers the objective
is exactly ConvMAE's (hybrid) or MAE's (ViT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ... import initialization as init
from ...layers import ViTEncoder, gather_tokens, get_2d_sincos_pos_embed, random_masking
from ..mae.modeling_mae import MAEDecoder, MAEPreTrainedModel, PixelTargetsMixin
from ..encoder import FinalNormMixin, TransformersKwargs, Unpack, can_return_tuple, record_outputs
from ..features import EncoderFeaturesMixin, FeatureStage
from ..modeling_common import ImageClassifierForwardMixin, MIMModelOutput, MIMPreTrainingOutput, classification_head, vit_blocks
from .configuration_mr_mae import MRMAEConfig
from .modeling_convvit import ConvViTEmbeddings
from .modeling_mr_mae_vit import MRMAEViTEmbeddings
from .teachers import MimicHead, Teacher, mimic_loss, visible_targets

# config.backbone -> the stem before the transformer blocks: the one place the architecture is chosen
STEMS = {"vit": MRMAEViTEmbeddings, "convvit": ConvViTEmbeddings}


@dataclass
class MRMAEModelOutput(MIMModelOutput):
    """MIMModelOutput plus `ids_keep` [B, K] (the visible patches, in ascending-noise order) and,
    for ConvMAE's hybrid with `output_hidden_states`, `conv_hidden_states`: the outputs of its two
    convolution stages as [B, C, h, w] maps (strides p1 and p1 p2), which come before
    `hidden_states` (the transformer stage's tokens)."""

    ids_keep: torch.LongTensor | None = None
    conv_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MRMAEPreTrainingOutput(MIMPreTrainingOutput):
    """MIMPreTrainingOutput plus each loss term.

    reconstruction_loss: MAE's pixel loss on the masked patches. mimic_loss: the weighted sum of
    the teachers' terms (0 without teachers). mimic_losses: [num_teachers] unweighted terms (None
    without teachers).
    """

    reconstruction_loss: torch.FloatTensor | None = None
    mimic_loss: torch.FloatTensor | None = None
    mimic_losses: torch.FloatTensor | None = None


class MRMAEPreTrainedModel(MAEPreTrainedModel):
    """Base of the MR-MAE models: MAE's initialisation (its embeddings and decoder), plus the
    hybrid's stem; fixed sin-cos tables built at construction."""

    config_class = MRMAEConfig
    base_model_prefix = "mr_mae"

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d) and getattr(module, "torch_default_init", False):
            # ConvMAE leaves its convolutions at PyTorch's default init (only the stage-3 patch
            # projection is initialised like a Linear)
            if not getattr(module.weight, "_is_hf_initialized", False):
                module.reset_parameters()
        elif isinstance(module, ConvViTEmbeddings):
            table = get_2d_sincos_pos_embed(module.pos_embed.shape[-1], module.grid_size, cls_token=module.cls_token is not None)
            init.copy_(module.pos_embed, table.unsqueeze(0))
            if module.cls_token is not None:
                init.normal_(module.cls_token, std=0.02)


class MRMAEModel(FinalNormMixin, EncoderFeaturesMixin, MRMAEPreTrainedModel):
    """MR-MAE's encoder (plain ViT or ConvMAE hybrid).

    Without `noise` it encodes every patch in order, as the fine-tuning model
    (`ConvViT.forward_features`): no masking and no multi-scale fusion; `last_hidden_state` is
    [B, (1 +) L, D]. With `noise` [B, L] it runs the pre-training encoder: the lowest-noise
    `int(L * (1 - mask_ratio))` patches are kept, the hybrid's convolutional stages see the
    upsampled mask (masked convolution), and the fused stage-1/2 features are added to the
    visible tokens before the final norm (when the model has the fusion layers).

    `pooler_output` is what the original classifier receives: `fc_norm` of the mean patch token
    with `use_mean_pooling`, else token 0 after the final norm (the cls token where there is one;
    ConvMAE v1 has none and its `global_pool=False` head takes patch token 0).
    """

    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^head\.", r"^mimic_heads\."]

    def __init__(self, config: MRMAEConfig, add_pooling_layer: bool = True, add_final_norm: bool | None = None, add_fusion: bool | None = None):
        super().__init__(config)
        stem = STEMS[config.backbone]
        self.embeddings = stem(config, add_fusion=config.use_multiscale_fusion if add_fusion is None else add_fusion)
        self.encoder = ViTEncoder(vit_blocks(config, rates=stem.transformer_drop_path_rates(config)))
        self._build_final_norms(config, add_final_norm, add_pooling_layer)
        self.post_init()

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.config.use_cls_token else 0

    @property
    def _num_stem_stages(self) -> int:
        return self.embeddings.num_stem_stages

    def _feature_stages(self, pixel_values, interpolate_pos_encoding: bool = False, **kwargs):
        """The hybrid's convolution stages, then the embeddings and every transformer block."""
        stages, output = super()._feature_stages(pixel_values, interpolate_pos_encoding, **kwargs)
        maps = [FeatureStage(m.flatten(2).transpose(1, 2), (m.shape[-2], m.shape[-1])) for m in output.conv_hidden_states or ()]
        return maps + stages, output

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.input_embeddings()

    def token_grid(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> tuple[int, int]:
        """The token grid of `pixel_values` (validated)."""
        return self.embeddings.check_input(pixel_values, interpolate_pos_encoding)

    @record_outputs
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MRMAEModelOutput:
        grid = self.token_grid(pixel_values, interpolate_pos_encoding)
        mask = ids_restore = ids_keep = None
        # choose the visible patches
        if noise is not None:
            if tuple(noise.shape) != (pixel_values.shape[0], grid[0] * grid[1]):
                raise ValueError(f"noise must be [batch, num_patches] = {(pixel_values.shape[0], grid[0] * grid[1])}, got {tuple(noise.shape)}")
            ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
            ids_keep, mask, ids_restore = random_masking(noise, ratio)
        # patches (masked convolution in the hybrid's stages), positions
        stage_maps = bool(kwargs["output_hidden_states"])  # (set by record_outputs)
        tokens, cls, fused, conv_hidden = self.embeddings(pixel_values, mask, interpolate_pos_encoding, output_stage_maps=stage_maps)
        if ids_keep is not None:
            tokens = gather_tokens(tokens, ids_keep)
        hidden = tokens if cls is None else torch.cat([cls, tokens], dim=1)
        # transformer stage
        hidden = self.encoder(hidden, **kwargs)
        # multi-scale fusion of the stage-1/2 features at the visible tokens
        if fused is not None:
            prefix = self.num_prefix_tokens
            patches = hidden[:, prefix:]
            for stage in fused:
                patches = patches + (gather_tokens(stage, ids_keep) if ids_keep is not None else stage)
            hidden = torch.cat([hidden[:, :prefix], patches], dim=1) if prefix else patches
        # final norm, the feature the classifier head receives
        hidden, pooled = self._normalize_and_pool(hidden)
        return MRMAEModelOutput(
            last_hidden_state=hidden, pooler_output=pooled, mask=mask, ids_restore=ids_restore, ids_keep=ids_keep,
            conv_hidden_states=conv_hidden,
        )


class MRMAEForPreTraining(PixelTargetsMixin, MRMAEPreTrainedModel):
    """MR-MAE pre-training: encoder on the visible patches, MAE's decoder and pixel loss on the
    masked ones, plus the mimic loss of the visible tokens against each teacher.

    `noise` [B, L] is the uniform draw of the original's `torch.rand(B, L)` (lowest kept);
    without it the model draws it. Returns `loss` (= `reconstruction_loss` + the weighted
    `mimic_loss`), `logits` [B, L, p*p*C], `mask` (1 = masked), `ids_restore`,
    `last_hidden_state` (the visible latents) and the loss terms.

    Teachers come from `config.teacher_names_or_paths` (loaded when training starts, or on
    `model.teachers`) or from `set_teachers`; see `uses_teachers`.
    """

    _keys_to_ignore_on_load_unexpected = [r"^head\."]

    def __init__(self, config: MRMAEConfig):
        super().__init__(config)
        self.mr_mae = MRMAEModel(config, add_pooling_layer=False, add_final_norm=True, add_fusion=config.use_multiscale_fusion)
        self.decoder = MAEDecoder(config, self.mr_mae.embeddings.grid_size, num_prefix_tokens=self.mr_mae.num_prefix_tokens)
        self.mimic_heads = nn.ModuleList(MimicHead(config.hidden_size, size, config.mimic_head) for size in config.teacher_hidden_sizes)
        self._teachers: list[Teacher] | None = None
        self.freeze_position_tables()
        self.post_init()

    def freeze_position_tables(self) -> None:
        """The fixed sin-cos tables of pre-training are not trained (as the original)."""
        self.mr_mae.embeddings.pos_embed.requires_grad_(False)
        self.decoder.decoder_pos_embed.requires_grad_(False)

    # teachers -------------------------------------------------------------------------------
    def set_teachers(self, teachers, weights: list[float] | None = None) -> None:
        """Attach frozen teachers: paths / Hub ids, `Teacher`s or transformers vision models.

        Records their names and widths in the config and (re)builds the mimic heads whose width
        changed (new heads are freshly initialised)."""
        built = []
        for index, teacher in enumerate(teachers):
            if isinstance(teacher, Teacher):
                built.append(teacher)
            elif isinstance(teacher, nn.Module):
                built.append(Teacher(teacher, name=getattr(teacher.config, "_name_or_path", "") or f"teacher{index}"))
            else:
                built.append(Teacher.from_pretrained(str(teacher)))
        sizes = [t.hidden_size for t in built]
        heads = []
        for index, size in enumerate(sizes):
            old = self.mimic_heads[index] if index < len(self.mimic_heads) and index < len(self.config.teacher_hidden_sizes) else None
            if old is not None and self.config.teacher_hidden_sizes[index] == size:
                heads.append(old)
            else:
                head = MimicHead(self.config.hidden_size, size, self.config.mimic_head)
                head.apply(self._init_weights)
                weight = self.decoder.decoder_embed.weight  # (a student loaded in bf16 gets bf16 heads)
                heads.append(head.to(device=weight.device, dtype=weight.dtype))
        self.mimic_heads = nn.ModuleList(heads)
        self.config.teacher_names_or_paths = [t.name for t in built]
        self.config.teacher_hidden_sizes = sizes
        if weights is not None:
            self.config.mimic_loss_weights = [float(w) for w in weights]
        elif self.config.mimic_loss_weights is not None and len(self.config.mimic_loss_weights) != len(built):
            self.config.mimic_loss_weights = None
        self._teachers = built

    @property
    def teachers(self) -> list[Teacher]:
        if self._teachers is None:
            names = list(self.config.teacher_names_or_paths)
            self._teachers = [Teacher.from_pretrained(name) for name in names]
            sizes = [t.hidden_size for t in self._teachers]
            if sizes != list(self.config.teacher_hidden_sizes):
                raise ValueError(f"teachers {names} have widths {sizes} but the model's mimic heads were built for "
                                 f"{list(self.config.teacher_hidden_sizes)}")
        return self._teachers

    @property
    def uses_teachers(self) -> bool:
        """Whether forward adds the mimic term: the config names teachers and the model is training
        (teachers are then loaded on first use) or they are attached (`set_teachers`, `teachers`).
        A model loaded only to reconstruct images never needs its teachers."""
        return bool(self.config.num_teachers) and (self.training or self._teachers is not None)

    def _mimic(self, pixel_values, latent, ids_keep, grid):
        """(weighted total, per-teacher losses [T]) of the visible latents against the teachers."""
        visible = latent[:, self.mr_mae.num_prefix_tokens:]
        weights = self.config.mimic_loss_weights or [1.0] * self.config.num_teachers
        losses = []
        for teacher, head in zip(self.teachers, self.mimic_heads):
            target = visible_targets(teacher, pixel_values, ids_keep, grid, mean=self.config.image_mean, std=self.config.image_std,
                                     layer=self.config.teacher_layer, norm=self.config.mimic_target_norm)
            losses.append(mimic_loss(head(visible), target, self.config.mimic_loss))
        terms = torch.stack(losses)
        return (terms * torch.tensor(weights, device=terms.device, dtype=terms.dtype)).sum(), terms

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MRMAEPreTrainingOutput:
        # MAE's pass: encode the visible patches, decode every patch, reconstruct the masked ones
        encoded, decoded, reconstruction, grid = self.encode_and_decode(pixel_values, noise, mask_ratio, interpolate_pos_encoding, **kwargs)
        # mimic the teachers on the visible tokens
        mimic_total, mimic_terms = reconstruction.new_zeros(()), None  # no teachers: no terms (not an empty tensor)
        if self.uses_teachers:
            mimic_total, mimic_terms = self._mimic(pixel_values, encoded.last_hidden_state, encoded.ids_keep, grid)
        loss = reconstruction + mimic_total if self.uses_teachers else reconstruction
        return MRMAEPreTrainingOutput(loss=loss, **self.pretraining_fields(encoded, decoded), reconstruction_loss=reconstruction,
                                      mimic_loss=mimic_total, mimic_losses=mimic_terms)


class MRMAEForImageClassification(ImageClassifierForwardMixin, MRMAEPreTrainedModel):
    """The fine-tuning model (ConvMAE's `models_convvit.ConvViT`, MAE's `models_vit` for the ViT
    backbone): the encoder's `pooler_output` into a linear head. No fusion layers, no masking."""

    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^mimic_heads\.", r"embeddings\.fusion\."]
    head_init_std = 2e-5  # MAE's / ConvMAE's fine-tuning head init

    def __init__(self, config: MRMAEConfig):
        config.use_multiscale_fusion = False  # a classifier has no fusion layers (its saved config says so)
        super().__init__(config)
        self.mr_mae = MRMAEModel(config, add_fusion=False)
        self.head = classification_head(config)
        self.post_init()


__all__ = ["MRMAEPreTrainedModel", "MRMAEModel", "MRMAEForPreTraining", "MRMAEForImageClassification",
           "MRMAEModelOutput", "MRMAEPreTrainingOutput"]
