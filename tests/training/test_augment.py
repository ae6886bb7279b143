"""The fine-tuning augmentations against their definitions (timm's semantics, PIL calls made here)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from mim_hub.training.augment import (RAND_INCREASING_OPS, FinetuneTransform, Mixup, MixupCollator, RandAugment, RandomErasing,
                                      apply_op, cutmix_box, mean_fill, one_hot_smoothed, op_arguments, soft_target_cross_entropy)

FILL = (124, 116, 104)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 32 * 32 * 3).reshape(32, 32, 3)
    return Image.fromarray(np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8))


def run(image, name, magnitude, negate=False):
    return np.asarray(apply_op(image, name, *op_arguments(name, magnitude, negate), fill=FILL, resample=Image.BICUBIC))


def same(a, b):
    assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("magnitude", [0.0, 4.5, 9.0, 10.0])
def test_pil_operations_equal_their_definitions(image, magnitude):
    level = magnitude / 10
    same(run(image, "AutoContrast", magnitude), ImageOps.autocontrast(image))
    same(run(image, "Equalize", magnitude), ImageOps.equalize(image))
    same(run(image, "Invert", magnitude), ImageOps.invert(image))
    for negate, sign in ((False, 1), (True, -1)):
        same(run(image, "Rotate", magnitude, negate), image.rotate(sign * 30 * level, resample=Image.BICUBIC, fillcolor=FILL))
        for name, matrix in (("ShearX", (1, sign * 0.3 * level, 0, 0, 1, 0)), ("ShearY", (1, 0, 0, sign * 0.3 * level, 1, 0)),
                             ("TranslateXRel", (1, 0, sign * 0.45 * level * 32, 0, 1, 0)),
                             ("TranslateYRel", (1, 0, 0, 0, 1, sign * 0.45 * level * 32))):
            same(run(image, name, magnitude, negate), image.transform((32, 32), Image.AFFINE, matrix, resample=Image.BICUBIC, fillcolor=FILL))
        for name, enhancer in (("Color", ImageEnhance.Color), ("Contrast", ImageEnhance.Contrast),
                               ("Brightness", ImageEnhance.Brightness), ("Sharpness", ImageEnhance.Sharpness)):
            # inc1: 1 +- 0.9 level (severity grows with magnitude), at least 0.1; inc0: 0.1 + 1.8 level
            same(run(image, name + "Increasing", magnitude, negate), enhancer(image).enhance(max(0.1, 1 + sign * 0.9 * level)))
            same(run(image, name, magnitude, negate), enhancer(image).enhance(0.1 + 1.8 * level))
    bits = 4 - int(4 * level)  # inc1: 4 bits kept at magnitude 0 down to 0 at 10
    same(run(image, "PosterizeIncreasing", magnitude), ImageOps.posterize(image, bits) if bits else np.zeros((32, 32, 3), np.uint8))
    kept = int(4 * level)  # inc0: 0 bits kept at magnitude 0 (a black image, PIL < 9's posterize(0))
    same(run(image, "Posterize", magnitude), ImageOps.posterize(image, kept) if kept else np.zeros((32, 32, 3), np.uint8))
    same(run(image, "SolarizeIncreasing", magnitude), ImageOps.solarize(image, 256 - int(256 * level)))
    same(run(image, "Solarize", magnitude), ImageOps.solarize(image, int(256 * level)))
    add = int(110 * level)  # pixels below 128 get + add (clipped at 255)
    pixels = np.asarray(image).astype(int)
    same(run(image, "SolarizeAdd", magnitude), np.where(pixels < 128, np.minimum(255, pixels + add), pixels).astype(np.uint8))


def test_magnitude_nine_arguments():
    assert op_arguments("Rotate", 9) == pytest.approx((27.0,)) and op_arguments("Rotate", 9, True) == pytest.approx((-27.0,))
    assert op_arguments("ShearX", 9) == pytest.approx((0.27,))
    assert op_arguments("TranslateYRel", 9, True) == pytest.approx((-0.405,))
    assert op_arguments("ContrastIncreasing", 9) == pytest.approx((1.81,)) and op_arguments("ContrastIncreasing", 9, True) == pytest.approx((0.19,))
    assert op_arguments("PosterizeIncreasing", 9) == (1,) and op_arguments("SolarizeIncreasing", 9) == (26,)
    assert op_arguments("SolarizeAdd", 9) == (99,)


def test_rand_m9_mstd05_inc1_sampling():
    ra = RandAugment("rand-m9-mstd0.5-inc1")
    assert ra.ops == RAND_INCREASING_OPS and ra.num_layers == 2 and ra.magnitude == 9 and ra.magnitude_std == 0.5 and ra.prob == 0.5
    rng = np.random.default_rng(1)
    draws = [d for _ in range(6000) for d in ra.draw(rng)]
    assert len(draws) == 12000
    counts = np.array([sum(d.name == op for d in draws) for op in RAND_INCREASING_OPS])
    assert counts.min() > 0.8 * 800 and counts.max() < 1.2 * 800  # uniform over 15 operations
    assert abs(np.mean([d.applied for d in draws]) - 0.5) < 0.02
    magnitudes = np.array([d.magnitude for d in draws])
    assert magnitudes.max() <= 10 and magnitudes.min() >= 0
    assert abs(magnitudes.mean() - 9) < 0.02 and abs(magnitudes.std() - 0.5) < 0.03
    assert abs(np.mean([d.negate for d in draws]) - 0.5) < 0.02
    # the image goes through the applied operations in order
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    plan = ra.draw(np.random.default_rng(5))
    expected = img
    for d in plan:
        if d.applied:
            expected = apply_op(expected, d.name, *op_arguments(d.name, d.magnitude, d.negate), fill=ra.fill, resample=Image.BICUBIC)
    same(ra(img, np.random.default_rng(5)), expected)


def test_rand_augment_options_and_errors():
    ra = RandAugment("rand-m7-n3-mstd101-mmax12-inc0-p0.7")
    assert (ra.magnitude, ra.num_layers, ra.magnitude_std, ra.magnitude_max, ra.prob) == (7, 3, math.inf, 12, 0.7)
    assert "Posterize" in ra.ops
    weighted = RandAugment("rand-m9-w0")
    assert weighted.choice_weights[list(weighted.ops).index("Rotate")] == pytest.approx(0.3 / 1.0)
    for bad in ("augmix-m3", "rand-q3", "rand-mx"):
        with pytest.raises(ValueError):
            RandAugment(bad)
    assert mean_fill((0.485, 0.456, 0.406)) == FILL


def test_random_erasing_boxes_and_pixels():
    erasing = RandomErasing(probability=1.0, mode="pixel")
    image = np.full((3, 64, 48), 7.0, np.float32)
    rng = np.random.default_rng(0)
    ratios, aspects = [], []
    for _ in range(400):
        (top, left, h, w), = erasing.boxes(64, 48, rng)
        assert 0 <= top and top + h <= 64 and 0 <= left and left + w <= 48 and h < 64 and w < 48
        ratios.append(h * w / (64 * 48))
        aspects.append(h / w)
    assert 0.015 < min(ratios) and max(ratios) < 0.36
    assert min(aspects) > 0.25 and max(aspects) < 4.0
    out = erasing(image, np.random.default_rng(3))
    (top, left, h, w), = erasing.boxes(64, 48, np.random.default_rng(3))
    region = out[:, top:top + h, left:left + w]
    assert not np.any(region == 7.0) and abs(region.mean()) < 0.3 and abs(region.std() - 1) < 0.2  # per-pixel N(0, 1)
    outside = out.copy()
    outside[:, top:top + h, left:left + w] = 7.0
    assert np.array_equal(outside, image) and np.all(image == 7.0)  # input untouched
    # probability: 0.25 of the images erased
    quarter = RandomErasing(probability=0.25)
    rng = np.random.default_rng(4)
    assert abs(np.mean([bool(quarter.boxes(32, 32, rng)) for _ in range(4000)]) - 0.25) < 0.03
    const = RandomErasing(probability=1.0, mode="const")(torch.ones(3, 32, 32), np.random.default_rng(0))
    assert (const == 0).any() and set(const.unique().tolist()) == {0.0, 1.0}
    rand = RandomErasing(probability=1.0, mode="rand")(np.ones((3, 32, 32), np.float32), np.random.default_rng(0))
    for c in range(3):
        assert len(np.unique(rand[c])) == 2  # one value per channel
    with pytest.raises(ValueError):
        RandomErasing(mode="noise")


def test_mixup_targets_sum_to_one_and_mix_the_reversed_batch():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 8, 8).clone()
    labels = torch.tensor([0, 1, 2, 3])
    mix = Mixup(num_classes=5, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1)
    mixed, targets = mix(x, labels, np.random.default_rng(0))
    lam = mix.last_lam
    assert torch.allclose(targets.sum(1), torch.ones(4))
    assert torch.allclose(mixed[:, 0, 0, 0], lam * torch.arange(4.0) + (1 - lam) * torch.arange(4.0).flip(0))
    smooth = one_hot_smoothed(labels, 5, 0.1)
    assert torch.allclose(smooth[0], torch.tensor([0.92, 0.02, 0.02, 0.02, 0.02]))
    assert torch.allclose(targets, lam * smooth + (1 - lam) * smooth.flip(0))
    assert torch.equal(x[:, 0, 0, 0], torch.arange(4.0))  # input untouched


def test_cutmix_box_and_area_corrected_lambda():
    x = torch.zeros(2, 3, 20, 30)
    x[1] = 1.0
    mix = Mixup(num_classes=3, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)
    mixed, targets = mix(x, torch.tensor([0, 2]), np.random.default_rng(3))
    yl, yh, xl, xh = mix.last_box
    assert mix.last_lam == pytest.approx(1 - (yh - yl) * (xh - xl) / 600)
    assert torch.all(mixed[0, :, yl:yh, xl:xh] == 1) and mixed[0].sum() == 3 * (yh - yl) * (xh - xl)
    assert torch.allclose(targets[0], torch.tensor([mix.last_lam, 0.0, 1 - mix.last_lam]))
    # the box: sides int(side * sqrt(1 - lam)) around a centre, clipped; the same draws as here
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    box = cutmix_box(20, 30, 0.64, rng_a)
    cy, cx = rng_b.integers(0, 20), rng_b.integers(0, 30)
    assert box == (max(0, cy - 6), min(20, cy + 6), max(0, cx - 9), min(30, cx + 9))  # sides 12 and 18
    yl, yh, xl, xh = cutmix_box(20, 30, 0.5, np.random.default_rng(1), minmax=(0.2, 0.5))
    assert 4 <= yh - yl < 10 and 6 <= xh - xl < 15 and yh <= 20 and xh <= 30


def test_mixup_switch_probability_and_prob():
    mix = Mixup(num_classes=10)
    rng = np.random.default_rng(0)
    draws = [mix.draw(rng) for _ in range(4000)]
    assert abs(np.mean([c for _, c in draws]) - 0.5) < 0.03
    cut = [lam for lam, c in draws if c]
    up = [lam for lam, c in draws if not c]
    assert abs(np.mean(cut) - 0.5) < 0.03 and abs(np.var(cut) - 1 / 12) < 0.01  # Beta(1, 1)
    assert abs(np.var(up) - 0.8 * 0.8 / (1.6 ** 2 * 2.6)) < 0.01  # Beta(0.8, 0.8)
    never = Mixup(num_classes=10, prob=0.0)
    assert never.draw(rng) == (1.0, False)
    with pytest.raises(ValueError):
        Mixup(num_classes=10, mode="elem")


def test_collator_with_a_dataloader_and_the_soft_loss():
    samples = [{"pixel_values": torch.randn(3, 8, 8), "labels": torch.tensor(i % 3)} for i in range(8)]
    loader = torch.utils.data.DataLoader(samples, batch_size=4, collate_fn=MixupCollator(Mixup(num_classes=3), seed=1))
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        assert batch["pixel_values"].shape == (4, 3, 8, 8) and batch["labels"].shape == (4, 3)
        assert torch.allclose(batch["labels"].sum(1), torch.ones(4)) and batch["labels"].min() > 0
    logits = torch.randn(4, 3)
    targets = batches[0]["labels"]
    assert soft_target_cross_entropy(logits, targets) == pytest.approx(float(-(targets * logits.log_softmax(-1)).sum(1).mean()))
    hard = torch.tensor([0, 2, 1, 1])
    assert soft_target_cross_entropy(logits, hard, 0.1) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, hard, label_smoothing=0.1)), rel=1e-5)


def test_finetune_transform_is_reproducible(image):
    transform = FinetuneTransform(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), erasing=RandomErasing(0.25))
    a = transform(image, np.random.default_rng(3))
    b = transform(image, np.random.default_rng(3))
    assert a.shape == (3, 16, 16) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, transform(image, np.random.default_rng(4)))
