"""CAE's pre-training recipe: block-wise masks per sample and token targets from a tokenizer.

Each sample draws its mask with `BlockMaskGenerator` (CAE: 98 of 196 patches, blocks of at least
16) from a `random.Random` seeded by the sample's generator, so runs are reproducible and
resumable. Each sample also carries `tokenizer_pixel_values`, the original's second view
(`RandomResizedCropAndInterpolationWithTwoPic`): the same crop box and flip as the encoder's view,
resized with Lanczos to the tokenizer's input size (grid x 8 for the DALL-E dVAE: 112 px), in
[0, 1]; the model's tokenizer turns it into the target ids on the training device. `--tokenizer` is the DALL-E `encoder.pkl` (the original's targets); without it
a weightless colour quantiser stands in (for offline demos). Optimiser as CAE's scripts: AdamW
(0.9, 0.999), lr 1.5e-3 at batch 2048 (base 1.875e-4 per 256), weight decay 0.05, crops down to
8% of the image.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ...layers.mask_block import BlockMaskGenerator
from ...training.recipes import PretrainRecipe
from ...training.transforms import RandomResizedCropTwoViews
from .tokenizers import load_tokenizer, tokenizer_input_size


@dataclass
class CAERecipe(PretrainRecipe):
    method: str = "cae"
    base_lr: float = 1.5e-3 * 256 / 2048
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    min_crop_scale: float = 0.08
    warmup_fraction: float = 20 / 800
    tokenizer: object = field(default=None, repr=False)
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    tokenizer_size: tuple | None = None

    def add_arguments(self, parser) -> None:
        group = parser.add_argument_group("cae")
        group.add_argument("--tokenizer", default=None,
                           help="CAE: the DALL-E dVAE encoder.pkl (or a state-dict file of it) giving the target ids; "
                                "default 'color', a weightless colour quantiser for offline demos")
        group.add_argument("--num-mask-patches", type=int, default=None, help="CAE: patches masked per image (default: the model's, 98 of 196)")

    def configure_model(self, model, args) -> None:
        if getattr(args, "num_mask_patches", None):
            model.config.num_masking_patches = int(args.num_mask_patches)
        self.tokenizer = load_tokenizer(getattr(args, "tokenizer", None), model.config)
        model.set_tokenizer(self.tokenizer)
        self.tokenizer_size = tokenizer_input_size(self.tokenizer, model.config.grid_size, model.config.patch_size)

    def train_transform(self, config, mean, std, *, min_crop_scale: float | None = None, flip: bool = True):
        """One crop, two views: the encoder's (bicubic, normalised) and the tokenizer's (Lanczos, [0, 1])."""
        self.mean, self.std = tuple(mean), tuple(std)
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        scale = self.min_crop_scale if min_crop_scale is None else min_crop_scale
        return RandomResizedCropTwoViews(size, self.tokenizer_size or size, mean, std, scale=(scale, 1.0), flip=flip)

    def mask_generator(self, config) -> BlockMaskGenerator:
        return BlockMaskGenerator(config.grid_size, config.num_masking_patches, min_num_patches=config.min_mask_patches_per_block,
                                  max_num_patches=config.max_mask_patches_per_block, min_aspect=config.mask_min_aspect)

    def sample_inputs(self, config, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        mask = self.mask_generator(config)(random.Random(int(rng.integers(0, 2**62))))
        return {"bool_masked_pos": torch.from_numpy(mask.reshape(-1).astype(bool))}

    def tokenizer_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised crops -> [0, 1] images at the tokenizer's input size: the second view for
        batches made without `train_transform` (antialiased bicubic from the first view)."""
        mean = torch.tensor(self.mean, dtype=pixel_values.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=pixel_values.dtype).view(1, -1, 1, 1)
        images = pixel_values * std + mean
        size = self.tokenizer_size or tuple(images.shape[-2:])
        if tuple(images.shape[-2:]) != tuple(size):
            images = F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)
        return images.clamp(0, 1)

    def collate(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
        if "tokenizer_pixel_values" not in batch:
            batch["tokenizer_pixel_values"] = self.tokenizer_pixels(batch["pixel_values"])
        return batch


RECIPE = CAERecipe()
