"""The fine-tuning augmentations of MAE, SimMIM, CAE and ConvMAE, with timm's semantics and
without timm (it needs torchvision):

- `RandAugment`: timm's `rand_augment_transform` config strings (`rand-m9-mstd0.5-inc1`: magnitude
  9 of 10, magnitude noise std 0.5, the increasing-severity variants of posterize, solarize and
  the enhancements, 2 operations per image each applied with probability 0.5);
- `RandomErasing`: timm's random erasing of a normalised CHW image (area 2-33 %, aspect 0.3-3.3,
  log-uniform; modes 'const', 'rand', 'pixel');
- `Mixup`: timm's MixUp / CutMix in 'batch' mode with label smoothing folded into the soft
  targets, and `MixupCollator`, a batch collator for transformers' Trainer or any DataLoader;
- `soft_target_cross_entropy`: the loss for those targets;
- `FinetuneTransform`: timm's `create_transform(is_training=True, ...)` as MAE builds it:
  RandomResizedCrop (bicubic) + flip + RandAugment + normalise + erasing.

Every random draw comes from an explicit `numpy.random.Generator`, as in `transforms.py`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from .transforms import Normalize, RandomResizedCropFlip

LEVEL_DENOM = 10.0  # an 'mN' magnitude is N / 10 of each operation's range

# timm's RandAugment operation lists (inc0 and inc1)
RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
            "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
                       "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
                       "TranslateXRel", "TranslateYRel")
# timm's `_RAND_CHOICE_WEIGHTS_0` (the 'w0' option), indexed by the non-increasing names
RAND_CHOICE_WEIGHTS_0 = {"Rotate": 0.3, "ShearX": 0.2, "ShearY": 0.2, "TranslateXRel": 0.1, "TranslateYRel": 0.1, "Color": 0.025,
                         "Sharpness": 0.025, "AutoContrast": 0.025, "Solarize": 0.005, "SolarizeAdd": 0.005, "Contrast": 0.005,
                         "Brightness": 0.005, "Equalize": 0.005, "Posterize": 0.0, "Invert": 0.0}
SIGNED_OPS = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing", "ContrastIncreasing",
              "BrightnessIncreasing", "SharpnessIncreasing"}


def mean_fill(mean) -> tuple[int, ...]:
    """The fill colour of the geometric operations: the dataset mean in 0-255 (timm's `img_mean`)."""
    return tuple(min(255, round(255 * m)) for m in mean)


def op_arguments(name: str, magnitude: float, negate: bool = False, translate_pct: float = 0.45) -> tuple:
    """The operation's argument at `magnitude` (0-10), timm's level-to-argument mapping; `negate`
    is the 50 % sign flip of the signed operations."""
    level = magnitude / LEVEL_DENOM
    sign = -1.0 if negate else 1.0
    if name in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if name == "Rotate":
        return (sign * level * 30.0,)
    if name == "Posterize":
        return (int(level * 4),)
    if name == "PosterizeIncreasing":
        return (4 - int(level * 4),)
    if name == "Solarize":
        return (int(level * 256),)
    if name == "SolarizeIncreasing":
        return (256 - int(level * 256),)
    if name == "SolarizeAdd":
        return (int(level * 110),)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (level * 1.8 + 0.1,)
    if name.endswith("Increasing"):  # Color/Contrast/Brightness/Sharpness: 1 +- 0.9 level, at least 0.1
        return (max(0.1, 1.0 + sign * level * 0.9),)
    if name in ("ShearX", "ShearY"):
        return (sign * level * 0.3,)
    if name in ("TranslateXRel", "TranslateYRel"):
        return (sign * level * translate_pct,)
    raise ValueError(f"unknown RandAugment operation {name!r}; known: {sorted(set(RAND_OPS) | set(RAND_INCREASING_OPS))}")


def _solarize_add(image: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    table = [min(255, i + add) if i < threshold else i for i in range(256)]
    return image.point(table * len(image.getbands()))


_ENHANCERS = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast, "Brightness": ImageEnhance.Brightness,
              "Sharpness": ImageEnhance.Sharpness}


def apply_op(image: Image.Image, name: str, *args, fill=(128, 128, 128), resample=Image.BICUBIC) -> Image.Image:
    """Apply one operation with its argument (from `op_arguments`) to an RGB PIL image."""
    base = name.removesuffix("Increasing")
    if base == "AutoContrast":
        return ImageOps.autocontrast(image)
    if base == "Equalize":
        return ImageOps.equalize(image)
    if base == "Invert":
        return ImageOps.invert(image)
    if base == "Rotate":
        return image.rotate(args[0], resample=resample, fillcolor=fill)
    if base == "Posterize":
        if args[0] >= 8:
            return image
        if args[0] <= 0:  # keep no bits: black, as PIL < 9 did (newer PIL refuses 0 bits, reached at magnitude 10 with inc1)
            return image.point([0] * 256 * len(image.getbands()))
        return ImageOps.posterize(image, args[0])
    if base == "Solarize":
        return ImageOps.solarize(image, args[0])
    if base == "SolarizeAdd":
        return _solarize_add(image, args[0])
    if base in _ENHANCERS:
        return _ENHANCERS[base](image).enhance(args[0])
    affine = {"ShearX": lambda v: (1, v, 0, 0, 1, 0), "ShearY": lambda v: (1, 0, 0, v, 1, 0),
              "TranslateXRel": lambda v: (1, 0, v * image.size[0], 0, 1, 0),
              "TranslateYRel": lambda v: (1, 0, 0, 0, 1, v * image.size[1])}
    if base in affine:
        return image.transform(image.size, Image.AFFINE, affine[base](args[0]), resample=resample, fillcolor=fill)
    raise ValueError(f"unknown RandAugment operation {name!r}")


@dataclass(frozen=True)
class OpDraw:
    """One drawn operation of an image's RandAugment: whether it applies, its magnitude and sign."""

    name: str
    applied: bool
    magnitude: float
    negate: bool


class RandAugment:
    """timm's RandAugment from a config string `rand-<options>` (options as timm's
    `rand_augment_transform`): `mN` magnitude (default 10), `nN` operations per image (2),
    `mstdX` magnitude noise (gaussian std; > 100: uniform in 0..m), `mmaxN` magnitude bound (10),
    `incN` the increasing-severity variants, `wN` timm's choice weights, `pX` the probability of
    each chosen operation (0.5).

    `fill`: colour of the pixels that rotation, shear and translation bring in (timm: the
    dataset mean); `resample`: their interpolation (MAE/SimMIM: bicubic); `translate_pct`: the
    translation at magnitude 10, as a fraction of the image size."""

    def __init__(self, config: str = "rand-m9-mstd0.5-inc1", *, fill=(124, 116, 104), resample=Image.BICUBIC, translate_pct: float = 0.45):
        parts = config.split("-")
        if parts[0] != "rand":
            raise ValueError(f"RandAugment config must start with 'rand', got {config!r} (e.g. 'rand-m9-mstd0.5-inc1')")
        self.config, self.magnitude, self.num_layers, self.magnitude_std, self.magnitude_max = config, LEVEL_DENOM, 2, 0.0, None
        self.prob, weights, increasing = 0.5, None, False
        for part in parts[1:]:
            match = re.fullmatch(r"([a-z]+)(\d.*)", part)
            if match is None:
                raise ValueError(f"RandAugment option {part!r} of {config!r} is not <name><number>")
            key, value = match.groups()
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"RandAugment option {part!r} of {config!r}: {value!r} is not a number") from None
            if key == "mstd":
                self.magnitude_std = math.inf if number > 100 else number
            elif key == "mmax":
                self.magnitude_max = int(number)
            elif key == "inc":
                increasing = bool(int(number))
            elif key == "m":
                self.magnitude = int(number)
            elif key == "n":
                self.num_layers = int(number)
            elif key == "w":
                if int(number) != 0:
                    raise ValueError(f"RandAugment weights index must be 0 (timm has one set), got {part!r}")
                weights = 0
            elif key == "p":
                self.prob = number
            else:
                raise ValueError(f"unknown RandAugment option {key!r} in {config!r}; known: m, n, mstd, mmax, inc, w, p")
        self.ops = RAND_INCREASING_OPS if increasing else RAND_OPS
        self.choice_weights = None
        if weights is not None:  # timm looks the weights up by the non-increasing names
            raw = np.array([RAND_CHOICE_WEIGHTS_0[k] for k in RAND_OPS])
            self.choice_weights = raw / raw.sum()
        self.fill, self.resample, self.translate_pct = tuple(fill), resample, translate_pct

    def draw(self, rng: np.random.Generator) -> list[OpDraw]:
        """The random part: which operations (with replacement, or without when weighted as timm
        does), each applied with probability `prob`, its magnitude and its sign."""
        chosen = rng.choice(len(self.ops), self.num_layers, replace=self.choice_weights is None, p=self.choice_weights)
        draws = []
        for index in chosen:
            applied = self.prob >= 1.0 or rng.random() <= self.prob
            magnitude = float(self.magnitude)
            if self.magnitude_std == math.inf:
                magnitude = rng.uniform(0, magnitude)
            elif self.magnitude_std > 0:
                magnitude = rng.normal(magnitude, self.magnitude_std)
            magnitude = max(0.0, min(magnitude, self.magnitude_max or LEVEL_DENOM))
            draws.append(OpDraw(self.ops[index], bool(applied), float(magnitude), bool(rng.random() > 0.5)))
        return draws

    def apply(self, image: Image.Image, draws: list[OpDraw]) -> Image.Image:
        for d in draws:
            if d.applied:
                args = op_arguments(d.name, d.magnitude, d.negate, self.translate_pct)
                image = apply_op(image, d.name, *args, fill=self.fill, resample=self.resample)
        return image

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return self.apply(image, self.draw(rng))

    def __repr__(self) -> str:
        return f"RandAugment({self.config!r}, ops={list(self.ops)})"


class RandomErasing:
    """timm's RandomErasing on a normalised float CHW image (numpy or torch): with probability
    `probability`, `count` rectangles (1 unless `max_count`), each of area uniform in
    [min_area, max_area] of the image / count and log-uniform aspect in [min_aspect, max_aspect]
    (max defaults to 1 / min_aspect), 10 tries each, filled by `mode`: 'const' zeros, 'rand' one
    normal value per channel, 'pixel' a normal value per pixel (MAE: probability 0.25, 'pixel')."""

    def __init__(self, probability: float = 0.25, mode: str = "pixel", min_area: float = 0.02, max_area: float = 1 / 3,
                 min_aspect: float = 0.3, max_aspect: float | None = None, min_count: int = 1, max_count: int | None = None):
        if mode not in ("const", "rand", "pixel"):
            raise ValueError(f"random erasing mode must be 'const', 'rand' or 'pixel', got {mode!r}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"random erasing probability must be in [0, 1], got {probability}")
        self.probability, self.mode, self.min_area, self.max_area = probability, mode, min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect or 1 / min_aspect))
        self.min_count, self.max_count = min_count, max_count or min_count

    def boxes(self, height: int, width: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
        """The random part: the (top, left, h, w) rectangles to erase (none with 1 - probability)."""
        if rng.random() > self.probability:
            return []
        area = height * width
        count = self.min_count if self.min_count == self.max_count else int(rng.integers(self.min_count, self.max_count + 1))
        boxes = []
        for _ in range(count):
            for _attempt in range(10):
                target = rng.uniform(self.min_area, self.max_area) * area / count
                aspect = math.exp(rng.uniform(*self.log_aspect))
                h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
                if w < width and h < height:
                    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                    boxes.append((top, left, h, w))
                    break
        return boxes

    def __call__(self, image, rng: np.random.Generator):
        channels, height, width = image.shape[-3:]
        is_torch = isinstance(image, torch.Tensor)
        out = image.clone() if is_torch else np.array(image, copy=True)
        for top, left, h, w in self.boxes(height, width, rng):
            shape = {"pixel": (channels, h, w), "rand": (channels, 1, 1), "const": None}[self.mode]
            values = np.zeros((channels, 1, 1), np.float32) if shape is None else rng.standard_normal(shape, dtype=np.float32)
            values = np.broadcast_to(values, (channels, h, w))
            out[..., top:top + h, left:left + w] = torch.from_numpy(values.copy()).to(out.dtype) if is_torch else values
        return out


def one_hot_smoothed(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets with label smoothing as timm folds it: off = s / C, on = 1 - s + s / C."""
    off = smoothing / num_classes
    targets = torch.full((len(labels), num_classes), off, dtype=torch.float32, device=labels.device)
    return targets.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator, minmax=None) -> tuple[int, int, int, int]:
    """timm's CutMix box (y_low, y_high, x_low, x_high): sides sqrt(1 - lam) of the image's
    around a uniform centre, clipped to the image; or, with `minmax`, sides uniform in that
    fraction range placed wholly inside."""
    if minmax is not None:
        cut_h = int(rng.integers(int(height * minmax[0]), int(height * minmax[1])))
        cut_w = int(rng.integers(int(width * minmax[0]), int(width * minmax[1])))
        top, left = int(rng.integers(0, height - cut_h)), int(rng.integers(0, width - cut_w))
        return top, top + cut_h, left, left + cut_w
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    return (int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height)),
            int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width)))


@dataclass
class Mixup:
    """timm's Mixup in 'batch' mode: with probability `prob` a batch is mixed with its reverse,
    by CutMix (probability `switch_prob` when both are on; lam ~ Beta(cutmix_alpha), corrected
    to the box's area) or by MixUp (lam ~ Beta(mixup_alpha)); the targets are lam x y + (1 - lam)
    x flip(y), each one-hot with `label_smoothing` folded in, so that every row sums to 1.
    MAE/SimMIM/CAE: mixup_alpha 0.8, cutmix_alpha 1.0, switch_prob 0.5, label_smoothing 0.1."""

    num_classes: int
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    cutmix_minmax: tuple[float, float] | None = None
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    correct_lam: bool = True
    mode: str = "batch"

    def __post_init__(self):
        if self.mode != "batch":
            raise ValueError(f"only timm's 'batch' mixing mode is implemented, got mode={self.mode!r}")
        if self.cutmix_minmax is not None:
            if len(self.cutmix_minmax) != 2:
                raise ValueError(f"cutmix_minmax must be (min, max), got {self.cutmix_minmax!r}")
            self.cutmix_alpha = 1.0  # as timm: minmax forces CutMix on
        if self.mixup_alpha <= 0 and self.cutmix_alpha <= 0:
            raise ValueError("Mixup needs mixup_alpha > 0 or cutmix_alpha > 0 (or cutmix_minmax)")

    def draw(self, rng: np.random.Generator) -> tuple[float, bool]:
        """The random part: (lam, use_cutmix); lam 1 means the batch is left as it is."""
        if rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = bool(rng.random() < self.switch_prob)
            lam = rng.beta(self.cutmix_alpha, self.cutmix_alpha) if cutmix else rng.beta(self.mixup_alpha, self.mixup_alpha)
        elif self.mixup_alpha > 0:
            cutmix, lam = False, rng.beta(self.mixup_alpha, self.mixup_alpha)
        else:
            cutmix, lam = True, rng.beta(self.cutmix_alpha, self.cutmix_alpha)
        return float(lam), cutmix

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator):
        """(mixed pixel_values, soft targets [batch, num_classes]); the input is not modified."""
        lam, cutmix = self.draw(rng)
        x = pixel_values.clone()
        self.last_box = None
        if lam < 1.0:
            if cutmix:
                height, width = x.shape[-2:]
                yl, yh, xl, xh = cutmix_box(height, width, lam, rng, self.cutmix_minmax)
                x[..., yl:yh, xl:xh] = pixel_values.flip(0)[..., yl:yh, xl:xh]
                self.last_box = (yl, yh, xl, xh)
                if self.correct_lam or self.cutmix_minmax is not None:
                    lam = 1.0 - (yh - yl) * (xh - xl) / float(height * width)
            else:
                x = pixel_values * lam + pixel_values.flip(0) * (1.0 - lam)
        self.last_lam = lam
        y = one_hot_smoothed(labels, self.num_classes, self.label_smoothing)
        return x, y * lam + y.flip(0) * (1.0 - lam)


@dataclass
class MixupCollator:
    """Batch collator: stacks the samples' `pixel_values` and `labels` and mixes them with
    `mixup`. Works as transformers' `Trainer(data_collator=...)` (train batches only: see
    `AugmentedTrainer`) and as any DataLoader's `collate_fn`. When the samples carry a
    `sample_key` (their epoch and index: `ClassificationData(with_keys=True)`), each batch's
    generator is seeded with (seed, process rank, the batch's keys), so a batch is mixed the same
    way whichever worker collates it and after a resume; the keys are not passed on. Without keys,
    one generator seeded with (seed, process rank) mixes the batches in the order they come."""

    mixup: Mixup
    seed: int = 0
    rank: int = 0
    _rng: np.random.Generator | None = field(default=None, repr=False)

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        batch = {key: torch.stack([torch.as_tensor(s[key]) for s in samples]) for key in samples[0]}
        keys = batch.pop("sample_key", None)
        if keys is not None:
            rng = np.random.default_rng([self.seed, self.rank, 0x6D6978, *keys.flatten().tolist()])
        else:
            if self._rng is None:
                self._rng = np.random.default_rng([self.seed, self.rank, 0x6D6978])
            rng = self._rng
        batch["pixel_values"], batch["labels"] = self.mixup(batch["pixel_values"], batch["labels"], rng)
        return batch


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against soft targets [batch, classes] (timm's SoftTargetCrossEntropy);
    integer labels are made one-hot with `label_smoothing` first (timm's LabelSmoothingCrossEntropy)."""
    if not targets.is_floating_point() or targets.ndim == 1:
        targets = one_hot_smoothed(targets.view(-1), logits.shape[-1], label_smoothing)
    if targets.shape != logits.shape:
        raise ValueError(f"soft targets of shape {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
    return torch.sum(-targets.to(logits.dtype) * torch.log_softmax(logits, dim=-1), dim=-1).mean()


class FinetuneTransform:
    """timm's training transform as MAE/SimMIM/CAE build it (`create_transform(is_training=True,
    auto_augment=..., interpolation='bicubic', re_prob, re_mode, re_count)`):
    RandomResizedCrop(size, scale, bicubic) + horizontal flip -> RandAugment -> normalise ->
    RandomErasing. `rand_augment=None` / `erasing=None` leave those steps out."""

    def __init__(self, size: int, mean, std, *, scale=(0.08, 1.0), flip: bool = True, rand_augment: str | None = "rand-m9-mstd0.5-inc1",
                 erasing: RandomErasing | None = None, backend: str = "torch"):
        self.crop = RandomResizedCropFlip(size, mean, std, scale=scale, flip=flip, backend=backend)
        self.rand_augment = RandAugment(rand_augment, fill=mean_fill(mean)) if rand_augment else None
        self.normalize = Normalize(mean, std)
        self.erasing = erasing

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> np.ndarray:
        box, flip = self.crop.draw(image, rng)
        out = self.crop.crop_resize(image, box, flip)
        if self.rand_augment is not None:
            pil = out if isinstance(out, Image.Image) else Image.fromarray(np.ascontiguousarray(out))
            out = self.rand_augment(pil, rng)
        pixels = self.normalize(out if isinstance(out, Image.Image) else np.ascontiguousarray(out))
        return self.erasing(pixels, rng) if self.erasing is not None else pixels
