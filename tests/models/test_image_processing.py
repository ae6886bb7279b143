"""The processors' `resize_backend` option and the torch-resampled augmentation."""

import numpy as np
import pytest
from PIL import Image

import mim_hub
from mim_hub.training.transforms import RandomResizedCropFlip


def _photo(height=300, width=400, seed=0):
    """A smooth image with edges (noise is the worst case for any resampler, not a photo)."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / 17.0 + c) * np.cos(y / 23.0 - c) for c in range(3)], -1) * 100 + 128
    base[height // 3: height // 2, width // 4: width // 2] = 30  # a sharp-edged block
    return Image.fromarray(np.clip(base + rng.randn(height, width, 3) * 3, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("resample", [Image.BILINEAR, Image.BICUBIC])
def test_torch_resize_backend_stays_close_to_pil(resample):
    pil = mim_hub.MAEImageProcessor(resample=resample)
    fast = mim_hub.MAEImageProcessor(resample=resample, resize_backend="torch")
    image = _photo()
    a = pil(image, return_tensors="np").pixel_values
    b = fast(image, return_tensors="np").pixel_values
    assert a.shape == b.shape == (1, 3, 224, 224)
    levels = np.abs(a - b) * np.asarray(pil.image_std)[None, :, None, None] * 255
    assert levels.mean() < 0.2
    assert levels.max() <= (1.01 if resample == Image.BILINEAR else 12)
    assert not np.array_equal(a, b) or resample == Image.BILINEAR  # it really is another resampler


def test_resize_backend_is_saved_and_validated(tmp_path):
    mim_hub.MAEImageProcessor(resize_backend="torch").save_pretrained(tmp_path)
    from transformers import AutoImageProcessor

    assert AutoImageProcessor.from_pretrained(tmp_path).resize_backend == "torch"
    with pytest.raises(ValueError, match="resize_backend must be one of"):
        mim_hub.MAEImageProcessor(resize_backend="opencv")
    with pytest.raises(ValueError, match="resize_backend must be one of"):
        mim_hub.MAEImageProcessor()(_photo(), resize_backend="opencv", return_tensors="np")


def test_torch_augmentation_draws_like_pil_and_stays_close():
    image = _photo()
    fast = RandomResizedCropFlip(64, [0.5] * 3, [0.5] * 3, backend="torch")
    slow = RandomResizedCropFlip(64, [0.5] * 3, [0.5] * 3, backend="pil")
    for seed in range(5):
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        a, b = fast(image, rng_a), slow(image, rng_b)
        assert rng_a.random() == rng_b.random()  # the same random draws were consumed
        assert a.shape == b.shape == (3, 64, 64) and a.dtype == np.float32
        assert (np.abs(a - b) * 0.5 * 255).mean() < 0.5
    with pytest.raises(ValueError, match="backend must be one of"):
        RandomResizedCropFlip(64, [0.5] * 3, [0.5] * 3, backend="cv2")
