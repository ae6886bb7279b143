"""How much of a representation is about layout: kNN on the features of test images whose patches
are shuffled (each image its own seeded permutation of its patch grid), against the same training
features as the ordinary kNN. A model that ignores where each patch is (SimMIM's small ViT, which
has no absolute positions and a zero-initialised relative table) scores about as without the
shuffle; one that reads the layout (MAE) drops toward chance."""

from __future__ import annotations

import torch

from .evaluate import extract_features, knn_accuracy


def shuffle_patches(pixels: torch.Tensor, patch_size: int, generator: torch.Generator) -> torch.Tensor:
    """[B, C, H, W] with each image's `patch_size` x `patch_size` patches in its own random order
    (H and W must be multiples of `patch_size`)."""
    batch, channels, height, width = pixels.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"a {height}x{width} image does not tile into {patch_size}-pixel patches")
    rows, cols = height // patch_size, width // patch_size
    patches = pixels.reshape(batch, channels, rows, patch_size, cols, patch_size).permute(0, 2, 4, 1, 3, 5).reshape(batch, rows * cols, -1)
    order = torch.stack([torch.randperm(rows * cols, generator=generator) for _ in range(batch)])
    patches = patches.gather(1, order[:, :, None].expand_as(patches))
    return patches.reshape(batch, rows, cols, channels, patch_size, patch_size).permute(0, 3, 1, 4, 2, 5).reshape(pixels.shape)


def model_patch_size(model) -> int:
    """The pixel size of one encoder token (the model's `patch_size`; MR-MAE: its overall stride)."""
    size = getattr(model.config, "patch_size", None)
    if not isinstance(size, int):
        raise ValueError(f"{type(model).__name__} states no integer patch_size; give patch_size")
    return size


def shuffled_patch_knn(model, processor, train_images, test_images, *, patch_size: int | None = None, seed: int = 0, k: int = 20,
                       temperature: float = 0.07, train_features=None) -> float:
    """kNN accuracy (as `knn_accuracy`) of test images with shuffled patches against the training
    images' ordinary features (`train_features`: (features, labels), if already computed)."""
    patch_size = patch_size or model_patch_size(model)
    generator = torch.Generator().manual_seed(seed)
    if train_features is None:
        train_features = extract_features(model, processor, train_images, return_labels=True)
    test_x, test_y = extract_features(model, processor, test_images, return_labels=True,
                                      pixel_transform=lambda pixels: shuffle_patches(pixels, patch_size, generator))
    return knn_accuracy(*train_features, test_x, test_y, k=k, temperature=temperature)
