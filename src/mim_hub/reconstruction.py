"""Reconstructions of masked images by MAE-family and SimMIM pre-training models, and the picture
original | masked | reconstruction | reconstruction with the visible patches pasted back.

For `norm_pix_loss` models the predictions are per-patch normalised pixels. They are brought
back to pixel space with statistics taken ONLY from the visible patches: each masked patch gets
the mean and standard deviation of the visible patches, weighted by inverse distance on the patch
grid. The masked patches' own statistics are never used (that would leak the answer)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .layers import patchify, unpatchify


@dataclass
class Reconstruction:
    """Tensors in the model's input space [B, C, H, W] (normalised pixels), plus mask and loss."""

    original: torch.Tensor
    masked: torch.Tensor
    reconstruction: torch.Tensor
    pasted: torch.Tensor
    mask: torch.Tensor  # [B, L], 1 = masked
    loss: torch.Tensor  # [B], the model's loss per image (on masked patches)
    norm_pix_loss: bool


def _visible_statistics(target: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]):
    """Per-patch mean/std for every patch, masked ones estimated from visible ones only."""
    mean = target.mean(-1)  # [B, L]
    std = (target.var(-1) + 1e-6).sqrt()
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], -1).float()
    distance = torch.cdist(coords, coords)  # [L, L]
    weights = 1.0 / (distance + 1e-3) ** 2
    visible = (1 - mask)  # [B, L]
    w = weights[None] * visible[:, None, :]  # [B, L(query), L(visible)]
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    est_mean = (w * mean[:, None, :]).sum(-1)
    est_std = (w * std[:, None, :]).sum(-1)
    return torch.where(mask.bool(), est_mean, mean), torch.where(mask.bool(), est_std, std)


def predicts_pixels(model) -> bool:
    """Whether `reconstruct` works with `model`: a pre-training model that predicts pixels and
    says what it reconstructed (`reconstruction_of`: MAE-family per-patch pixels, SimMIM's whole
    image), not CAE's token ids nor an encoder."""
    return callable(getattr(model, "reconstruction_of", None))


def _per_image_seeds(seed: int | Sequence[int], batch: int) -> list[int] | None:
    """None for one int seed (one draw for the whole batch), else one seed per image."""
    if isinstance(seed, (int, np.integer)) or (torch.is_tensor(seed) and seed.dim() == 0):
        return None
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for {batch} images: give one seed per image (or one int)")
    return seeds


def _masking_noise(batch: int, length: int, seed: int, seeds: list[int] | None) -> torch.Tensor:
    """MAE-style masking noise [B, L] (lowest kept): one draw for the batch, or one per image."""
    if seeds is None:
        return torch.rand(batch, length, generator=torch.Generator().manual_seed(int(seed)))
    return torch.cat([torch.rand(1, length, generator=torch.Generator().manual_seed(s)) for s in seeds])


def _block_masks(config, pixel_values: torch.Tensor, mask_ratio: float | None, seed: int, seeds: list[int] | None) -> torch.Tensor:
    """[B, L] bool block masks for a model masked by `bool_masked_pos` (SimMIM): blocks of
    `config.mask_patch_size` pixels (SimMIMMaskGenerator), drawn from `numpy.random.RandomState(seed)`
    for the batch, or one RandomState per image."""
    from .masking import SimMIMMaskGenerator

    ratio = config.mask_ratio if mask_ratio is None else mask_ratio
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {ratio}")
    batch, _, height, width = pixel_values.shape
    if height != width:
        raise ValueError(f"block masks need square images, got {height}x{width}")
    generator = SimMIMMaskGenerator(height, config.mask_patch_size, config.patch_size, ratio)
    if seeds is not None:
        masks = [generator(np.random.RandomState(s)) for s in seeds]
    else:
        rng = np.random.RandomState(seed)
        masks = [generator(rng) for _ in range(batch)]
    return torch.stack([torch.as_tensor(m) for m in masks]).flatten(1).bool()


@torch.no_grad()
def reconstruct(model, pixel_values: torch.Tensor, *, mask_ratio: float | None = None, seed: int | Sequence[int] = 0,
                noise: torch.Tensor | None = None) -> Reconstruction:
    """Mask `pixel_values` with noise drawn from `seed` (or the given `noise`) and reconstruct.

    One int `seed` draws the masks of the whole batch in one go; a sequence of seeds, one per
    image, draws each image's mask from its own seed, so that an image gets the same mask in any
    batch as alone (what the `masked-image-reconstruction` pipeline does). A model masked by
    noise (MAE family) gets uniform noise; one masked by `bool_masked_pos` (SimMIM), block masks.
    What was reconstructed, and each image's loss, the model says (`reconstruction_of`)."""
    if not predicts_pixels(model):
        raise ValueError(f"{type(model).__name__} does not predict pixels; reconstructions need a pixel-predicting "
                         "pre-training model (mae, color_mae, mr_mae, crate_mae, hpm, simmim)")
    config = model.config
    seeds = _per_image_seeds(seed, pixel_values.shape[0])
    p = config.patch_size
    grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
    kwargs = {}
    if "noise" in inspect.signature(model.forward).parameters:
        kwargs["noise"] = noise if noise is not None else _masking_noise(pixel_values.shape[0], grid[0] * grid[1], seed, seeds)
        if mask_ratio is not None:
            kwargs["mask_ratio"] = mask_ratio
    elif noise is not None:
        raise ValueError(f"{type(model).__name__} is masked by bool_masked_pos, not by noise: pass seed (and mask_ratio) instead")
    else:
        kwargs["bool_masked_pos"] = _block_masks(config, pixel_values, mask_ratio, seed, seeds)
    model.eval()
    out = model(pixel_values, **kwargs)
    pred, per_image = model.reconstruction_of(pixel_values, out)
    mask = out.mask.float()
    target = patchify(pixel_values, p)
    norm_pix = bool(getattr(config, "norm_pix_loss", False))
    if norm_pix:
        mean, std = _visible_statistics(target, mask, grid)
        pred = pred * std[..., None] + mean[..., None]
    m = mask[..., None]
    reconstruction = unpatchify(pred, p, config.num_channels, grid)
    pasted = unpatchify(pred * m + target * (1 - m), p, config.num_channels, grid)
    masked = unpatchify(target * (1 - m), p, config.num_channels, grid)
    return Reconstruction(pixel_values, masked, reconstruction, pasted, mask, per_image, norm_pix)


def to_image(tensor: torch.Tensor, mean, std, *, blank=None):
    """[C, H, W] normalised -> RGB PIL image."""
    from PIL import Image

    array = tensor.detach().float().cpu().numpy()
    array = array * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
    array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, -1)
    return Image.fromarray(array)


def compose_picture(result: Reconstruction, index: int, mean, std, *, scale: int | None = None):
    """The four panels side by side with titles and a note on the denormalisation."""
    from PIL import Image, ImageDraw

    m = result.mask[index]
    p = result.original.shape[-1] // int(round(m.numel() ** 0.5))
    grey = torch.tensor([0.5, 0.5, 0.5])
    masked = result.masked[index].clone()
    grid_mask = m.reshape(result.original.shape[-2] // p, -1).repeat_interleave(p, 0).repeat_interleave(p, 1).bool()
    fill = ((grey - torch.tensor(mean)) / torch.tensor(std))[: masked.shape[0], None, None].float()
    masked = torch.where(grid_mask[None], fill.expand_as(masked), masked)
    panels = [to_image(result.original[index], mean, std), to_image(masked, mean, std),
              to_image(result.reconstruction[index], mean, std), to_image(result.pasted[index], mean, std)]
    size = panels[0].size[0]
    scale = scale or max(1, 160 // size)
    panels = [panel.resize((panel.width * scale, panel.height * scale), Image.NEAREST) for panel in panels]
    width, height = panels[0].size
    titles = ["original", f"masked {100 * m.mean().item():.0f}%", "reconstruction", "reconstruction + visible"]
    note = (f"loss {result.loss[index].item():.3f}; " + ("norm_pix_loss: masked patches denormalised with the visible patches' "
            "statistics (inverse-distance weighted), never their own" if result.norm_pix_loss else "pixel targets"))
    import textwrap

    lines = textwrap.wrap(note, max(20, (4 * width + 40) // 6))
    canvas = Image.new("RGB", (4 * width + 50, height + 30 + 12 * len(lines)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (panel, title) in enumerate(zip(panels, titles)):
        x = 10 + i * (width + 10)
        canvas.paste(panel, (x, 18))
        draw.text((x, 3), title, fill="black")
    for i, line in enumerate(lines):
        draw.text((10, height + 24 + 12 * i), line, fill="black")
    return canvas
