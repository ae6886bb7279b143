"""CAE's pre-training recipe: block-wise masks per sample and token targets from a tokenizer.

Each sample draws its mask with the model's `BlockMaskGenerator` (`cae_mask_generator`: CAE's 98
of 196 patches, blocks of at least 16) from a `random.Random` seeded by the sample's generator,
so runs are reproducible and resumable. Each sample also carries `tokenizer_pixel_values`, the
original's second view (`RandomResizedCropAndInterpolationWithTwoPic`): the same crop box and
flip as the encoder's view, resized with Lanczos to the tokenizer's input size (grid x 8 for the
DALL-E dVAE: 112 px), in [0, 1]. The recipe holds the tokenizer, on the training device, and
`model_inputs` turns that view into the target `labels` of the masked patches, which the model
receives as any other input. `--tokenizer` is the DALL-E `encoder.pkl` (the original's targets);
without it a weightless colour quantiser stands in (for offline demos). Optimiser as CAE's
scripts: AdamW (0.9, 0.999), lr 1.5e-3 at batch 2048 (base 1.875e-4 per 256), weight decay
0.05, crops down to 8% of the image.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...layers.mask_block import BlockMaskGenerator
from ...models.cae.modeling_cae import cae_mask_generator
from ...models.cae.tokenizers import load_tokenizer, tokenizer_input_size
from ..transforms import RandomResizedCropTwoViews
from .base import PretrainRecipe


@dataclass(frozen=True)
class CAERecipe(PretrainRecipe):
    """`tokenizer`: a callable images [B, C, H', W'] in [0, 1] -> ids [B, h, w] (e.g.
    `DalleTokenizer`), or a spec for `load_tokenizer` (a DALL-E `encoder.pkl` path; None or
    "color" for the colour quantiser)."""

    method = "cae"
    base_lr = 1.5e-3 * 256 / 2048
    weight_decay = 0.05
    betas = (0.9, 0.999)
    min_crop_scale = 0.08
    warmup_fraction = 20 / 800
    tokenizer: object = field(default=None, repr=False)
    tokenizer_size: tuple = field(init=False)
    mask_generator: BlockMaskGenerator = field(init=False, repr=False)

    def __post_init__(self):
        tokenizer = self.tokenizer
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer, self.config)
        if isinstance(tokenizer, nn.Module) and self.device is not None:
            tokenizer = tokenizer.to(self.device)
        object.__setattr__(self, "tokenizer", tokenizer)
        object.__setattr__(self, "tokenizer_size", tuple(tokenizer_input_size(tokenizer, self.config.grid_size, self.config.patch_size)))
        object.__setattr__(self, "mask_generator", cae_mask_generator(self.config))

    def __getstate__(self):  # (to data-loader workers: they never compute targets)
        return {**self.__dict__, "tokenizer": None}

    @classmethod
    def configure_model(cls, model, options, *, mean=None, std=None) -> None:
        if getattr(options, "num_mask_patches", None):
            model.config.num_masking_patches = int(options.num_mask_patches)

    @classmethod
    def recipe_options(cls, options) -> dict:
        return {"tokenizer": getattr(options, "tokenizer", None)}

    def train_transform(self, *, min_crop_scale: float | None = None, flip: bool = True):
        """One crop, two views: the encoder's (bicubic, normalised) and the tokenizer's (Lanczos, [0, 1])."""
        scale = self.min_crop_scale if min_crop_scale is None else min_crop_scale
        return RandomResizedCropTwoViews(self.image_size, self.tokenizer_size, self.mean, self.std, scale=(scale, 1.0), flip=flip)

    def sample_inputs(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        mask = self.mask_generator(random.Random(int(rng.integers(0, 2**62))))
        return {"bool_masked_pos": torch.from_numpy(mask.reshape(-1).astype(bool))}

    def tokenizer_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised crops -> [0, 1] images at the tokenizer's input size: the second view for
        batches made without `train_transform` (antialiased bicubic from the first view)."""
        mean = torch.tensor(self.mean, dtype=pixel_values.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=pixel_values.dtype).view(1, -1, 1, 1)
        images = pixel_values * std + mean
        if tuple(images.shape[-2:]) != self.tokenizer_size:
            images = F.interpolate(images, size=self.tokenizer_size, mode="bicubic", antialias=True, align_corners=False)
        return images.clamp(0, 1)

    def collate(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
        if "tokenizer_pixel_values" not in batch:
            batch["tokenizer_pixel_values"] = self.tokenizer_pixels(batch["pixel_values"])
        return batch

    @torch.no_grad()
    def labels(self, tokenizer_pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor) -> torch.Tensor:
        """The target token ids of the masked patches, row-major ([B*M], as `input_ids[bool_masked_pos]`)."""
        ids = self.tokenizer(tokenizer_pixel_values)
        ids = ids.reshape(ids.shape[0], -1)
        mask = bool_masked_pos.reshape(bool_masked_pos.shape[0], -1).bool()
        if ids.shape != mask.shape:
            raise ValueError(f"the tokenizer gave {ids.shape[1]} token ids per image but the model has {mask.shape[1]} patches; "
                             "feed it images whose token grid matches the patch grid (tokenizer_pixel_values)")
        return ids[mask.to(ids.device)]

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with its second view replaced by the target `labels`."""
        batch = dict(batch)
        batch["labels"] = self.labels(batch.pop("tokenizer_pixel_values"), batch["bool_masked_pos"])
        return batch


RECIPE = CAERecipe
