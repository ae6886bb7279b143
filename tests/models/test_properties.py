"""Property-based tests (hypothesis): any image is processed correctly or refused clearly; masks
always hit the requested count."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mim_hub import MAEImageProcessor
from mim_hub.masking import random_masking

PROCESSOR = MAEImageProcessor.for_image_size(16)
MODES = ["L", "LA", "RGB", "RGBA", "P", "I;16", "I", "F", "CMYK", "1"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(MODES), width=st.integers(1, 300), height=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_any_pil_image_becomes_a_finite_rgb_tensor(mode, width, height, seed):
    rng = np.random.RandomState(seed)
    if mode in ("I;16",):
        image = Image.fromarray(rng.randint(0, 65535, (height, width)).astype(np.uint16))
    elif mode in ("I", "F"):
        image = Image.fromarray(rng.rand(height, width).astype(np.float32) * 1000).convert(mode)
    else:
        image = Image.fromarray(rng.randint(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode)
    if max(width, height) > 100 * min(width, height):  # beyond MAX_ASPECT_RATIO: refused before any resize
        with pytest.raises(ValueError, match="aspect ratio"):
            PROCESSOR(image)
        return
    pixels = PROCESSOR(image, return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 16, 16)
    assert torch.isfinite(pixels).all()
    # rescaled to [0, 1] then normalised with ImageNet statistics
    assert pixels.min() >= (0 - 0.485) / 0.229 - 1e-4 and pixels.max() <= (1 - 0.406) / 0.225 + 1e-4


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from([(5, 7), (5, 7, 1), (5, 7, 3), (3, 5, 7), (5, 7, 4), (5, 7, 2), (2, 5, 7), (0, 4, 3), (4,), (2, 2, 2, 2)]),
    dtype=st.sampled_from([np.uint8, np.float32, np.float64, np.uint16]),
    special=st.sampled_from([None, "nan", "inf"]),
)
def test_any_array_is_processed_or_refused_clearly(shape, dtype, special):
    array = np.random.RandomState(0).rand(*shape)
    array = (array * (255 if dtype in (np.uint8, np.uint16) else 1)).astype(dtype)
    if special and np.issubdtype(dtype, np.floating) and array.size:
        array.flat[0] = np.nan if special == "nan" else np.inf
    try:
        pixels = PROCESSOR(array, return_tensors="pt").pixel_values
    except ValueError as error:
        message = str(error)
        assert any(word in message for word in ("channels", "no pixels", "NaN", "shape", "image")), message
        return
    assert pixels.shape[1:] == (3, 16, 16) and torch.isfinite(pixels).all()


@settings(max_examples=100, deadline=None)
@given(batch=st.integers(1, 4), length=st.integers(1, 400), ratio=st.floats(0.0, 0.999), seed=st.integers(0, 1000))
def test_random_masking_hits_the_count(batch, length, ratio, seed):
    keep = int(length * (1 - ratio))
    noise = torch.rand(batch, length, generator=torch.Generator().manual_seed(seed))
    if keep < 1:
        with pytest.raises(ValueError, match="keeps no patch"):
            random_masking(noise, ratio)
        return
    ids_keep, mask, ids_restore = random_masking(noise, ratio)
    assert ids_keep.shape == (batch, keep)
    assert (mask.sum(1) == length - keep).all()
    assert torch.equal(torch.gather(mask, 1, ids_keep), torch.zeros(batch, keep))
    # the kept patches are those with the lowest noise
    assert torch.equal(torch.sort(ids_keep, 1).values, torch.sort(torch.argsort(noise, 1)[:, :keep], 1).values)
    assert torch.equal(torch.argsort(ids_restore, 1), torch.argsort(noise, 1))


@settings(max_examples=60, deadline=None)
@given(height=st.integers(2, 20), width=st.integers(2, 20), fraction=st.floats(0.05, 0.6), min_patches=st.integers(1, 16),
       min_aspect=st.floats(0.2, 1.0), seed=st.integers(0, 10_000))
def test_block_masks_hit_the_count_exactly(height, width, fraction, min_patches, min_aspect, seed):
    import random

    from mim_hub.masking import BlockMaskGenerator

    count = max(1, int(fraction * height * width))
    generator = BlockMaskGenerator((height, width), count, min_num_patches=min(min_patches, count), min_aspect=min_aspect)
    try:
        mask = generator(random.Random(seed))
    except RuntimeError as error:  # only when no rectangle can make progress: said clearly, never a hang
        assert "cannot place" in str(error)
        return
    assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 1}
    assert int(mask.sum()) == count


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 24), ratio=st.floats(0.0, 0.999), seed=st.integers(0, 1000))
def test_random_block_free_masks_hit_the_count(size, ratio, seed):
    from mim_hub.masking import RandomMaskGenerator

    generator = RandomMaskGenerator(size, ratio)
    mask = generator(np.random.RandomState(seed))
    assert mask.shape == (size * size,) and int(mask.sum()) == int(ratio * size * size)


@settings(max_examples=60, deadline=None)
@given(blocks=st.integers(1, 12), scale=st.integers(1, 4), model_patch=st.sampled_from([1, 2, 4, 16]), ratio=st.floats(0.0, 1.0),
       seed=st.integers(0, 10_000))
def test_simmim_masks_hit_the_count_exactly(blocks, scale, model_patch, ratio, seed):
    from mim_hub.masking import SimMIMMaskGenerator

    mask_patch = scale * model_patch
    generator = SimMIMMaskGenerator(blocks * mask_patch, mask_patch, model_patch, ratio)
    mask = generator(np.random.RandomState(seed))
    assert mask.shape == (blocks * scale, blocks * scale) and set(np.unique(mask)) <= {0, 1}
    assert int(mask.sum()) == int(np.ceil(blocks * blocks * ratio)) * scale * scale
    # whole mask blocks: every scale x scale block is all masked or all visible
    per_block = mask.reshape(blocks, scale, blocks, scale).sum((1, 3))
    assert set(np.unique(per_block)) <= {0, scale * scale}
