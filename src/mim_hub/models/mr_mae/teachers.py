"""MR-MAE's "mimic": frozen teachers and the loss that makes the encoder's visible tokens mimic them.

What the paper states (arXiv:2303.05475; no code was released): the mimic loss is applied to the encoder's VISIBLE
tokens (the 25% kept), against features of frozen pre-trained teachers (CLIP and DINO, one
projection head per teacher on the student side, L2 loss); the pixel loss on the masked tokens
after the decoder is MAE's; the terms are added. What it leaves open and we chose (configurable,
stated in the model card): which teacher layer (default: `last_hidden_state`), the target
normalisation (default: parameter-free LayerNorm per token), the head (default: one Linear), and
the weights (default: 1 each).

Teachers are any transformers vision models (`CLIPVisionModel` / `CLIPModel`, `ViTModel`,
`Dinov2Model`, ...). Each runs under `no_grad` in eval mode with its own preprocessing: the
student's normalisation is undone, the image resized (bicubic) to the teacher's input size and
normalised with the teacher's mean/std. Its patch tokens (prefix tokens such as cls or registers
dropped) are resampled to the student's token grid when the grids differ; grids of different
aspect ratios cannot be aligned and raise a `ValueError` naming both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ...layers.patch_embed import to_2tuple

# Teachers' input statistics when no image processor is saved beside them, by model_type.
_DEFAULT_STATS = {
    "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    "clip_vision_model": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    "vit": (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD),
    "dinov2": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    "dinov2_with_registers": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
}


def normalize_target(target: torch.Tensor, kind: str) -> torch.Tensor:
    """Teacher features [..., C] normalised per token: "layernorm" (no affine, eps 1e-6), "l2", or "none"."""
    if kind == "layernorm":
        return F.layer_norm(target, target.shape[-1:], eps=1e-6)
    if kind == "l2":
        return F.normalize(target, dim=-1)
    if kind == "none":
        return target
    raise ValueError(f"unknown mimic_target_norm {kind!r}")


def mimic_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Distance between student predictions and (normalised) teacher features [B, K, C],
    averaged over tokens: "mse" (mean squared error over tokens and channels), "smooth_l1"
    (beta 1, same averaging) or "cosine" (1 - cosine similarity, mean over tokens)."""
    if pred.shape != target.shape:
        raise ValueError(f"mimic prediction {tuple(pred.shape)} and teacher target {tuple(target.shape)} differ in shape")
    pred, target = pred.float(), target.float()
    if kind == "mse":
        return ((pred - target) ** 2).mean()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=1.0)
    if kind == "cosine":
        return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
    raise ValueError(f"unknown mimic_loss {kind!r}")


class MimicHead(nn.Module):
    """Projects the student's tokens to one teacher's width: Linear, or Linear-GELU-Linear."""

    def __init__(self, hidden_size: int, teacher_size: int, kind: str = "linear"):
        super().__init__()
        if kind == "linear":
            self.proj = nn.Linear(hidden_size, teacher_size)
            self.fc2 = None
        else:
            self.proj = nn.Linear(hidden_size, hidden_size)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden_size, teacher_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.proj(hidden_states)
        if self.fc2 is not None:
            hidden_states = self.fc2(self.act(hidden_states))
        return hidden_states


def align_grid(features: torch.Tensor, teacher_grid: tuple[int, int], student_grid: tuple[int, int], name: str = "teacher") -> torch.Tensor:
    """Teacher patch features [B, ht*wt, C] -> [B, hs*ws, C] on the student's grid.

    Equal grids pass through; grids of the same aspect ratio are resampled (area averaging when
    the teacher's grid is an integer multiple of the student's, else bilinear with antialiasing);
    other grids raise a ValueError."""
    (ht, wt), (hs, ws) = teacher_grid, student_grid
    if (ht, wt) == (hs, ws):
        return features
    if ht * ws != wt * hs:
        raise ValueError(
            f"{name}: its {ht}x{wt} token grid cannot be aligned with the student's {hs}x{ws} grid (different aspect "
            "ratios); give the student a square image or a teacher whose input has the student's aspect ratio"
        )
    batch, _, channels = features.shape
    grid = features.transpose(1, 2).reshape(batch, channels, ht, wt).float()
    if ht % hs == 0 and wt % ws == 0:
        grid = F.adaptive_avg_pool2d(grid, (hs, ws))
    else:
        grid = F.interpolate(grid, size=(hs, ws), mode="bilinear", align_corners=False, antialias=hs < ht)
    return grid.flatten(2).transpose(1, 2).to(features.dtype)


class Teacher:
    """A frozen vision model with its own preprocessing (not an `nn.Module` of the student: its
    weights are never saved with the student nor seen by its optimizer)."""

    def __init__(self, model: nn.Module, *, name: str = "teacher", image_mean=None, image_std=None, image_size=None):
        if getattr(model.config, "vision_config", None) is not None and hasattr(model, "vision_model"):
            model = model.vision_model  # CLIPModel and other dual encoders: the vision tower
        config = model.config
        self.model = model.eval().requires_grad_(False)
        self.name = name
        model_type = getattr(config, "model_type", "")
        default_mean, default_std = _DEFAULT_STATS.get(model_type, (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
        self.image_mean = list(image_mean if image_mean is not None else default_mean)
        self.image_std = list(image_std if image_std is not None else default_std)
        size = image_size if image_size is not None else getattr(config, "image_size", None)
        if size is None:
            raise ValueError(f"{name}: cannot tell the teacher's input size (its config has no image_size)")
        self.image_size = to_2tuple(size)
        patch = getattr(config, "patch_size", None)
        if patch is None:
            raise ValueError(f"{name}: not a patch-token vision transformer (its config has no patch_size)")
        self.patch_size = to_2tuple(patch)
        if self.image_size[0] % self.patch_size[0] or self.image_size[1] % self.patch_size[1]:
            raise ValueError(f"{name}: input size {self.image_size} is not a multiple of its patch size {self.patch_size}")
        self.grid = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.hidden_size = int(config.hidden_size)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> "Teacher":
        """Load a teacher (and the mean/std/size of its saved image processor, when there is one)."""
        from transformers import AutoImageProcessor, AutoModel

        model = AutoModel.from_pretrained(name_or_path, **kwargs)
        stats = {}
        try:
            processor = AutoImageProcessor.from_pretrained(name_or_path)
        except Exception:  # no (readable) image processor saved beside the model: use the defaults
            processor = None
        if processor is not None:
            if getattr(processor, "image_mean", None) is not None:
                stats["image_mean"], stats["image_std"] = processor.image_mean, processor.image_std
            crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
            size = crop or getattr(processor, "size", None)
            if isinstance(size, dict) and "height" in size:
                stats["image_size"] = (size["height"], size["width"])
        return cls(model, name=str(name_or_path), **stats)

    def preprocess(self, pixel_values: torch.Tensor, student_mean, student_std) -> torch.Tensor:
        """Student-normalised images -> this teacher's input (unnormalise, resize, normalise)."""
        shape = (1, -1, 1, 1)
        device = pixel_values.device
        images = pixel_values.float() * torch.tensor(student_std, device=device).view(shape) + torch.tensor(student_mean, device=device).view(shape)
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(self.image_mean, device=device).view(shape)
        std = torch.tensor(self.image_std, device=device).view(shape)
        return (images - mean) / std

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor, student_mean, student_std, layer: int | None = None) -> torch.Tensor:
        """Patch-token features [B, ht*wt, C] of the teacher (prefix tokens dropped)."""
        param = next(self.model.parameters())
        if param.device != pixel_values.device:
            self.model.to(pixel_values.device)
        inputs = self.preprocess(pixel_values, student_mean, student_std).to(param.dtype)
        out = self.model(pixel_values=inputs, output_hidden_states=layer is not None)
        tokens = out.last_hidden_state if layer is None else out.hidden_states[layer]
        count = self.grid[0] * self.grid[1]
        if tokens.shape[1] < count:
            raise ValueError(f"{self.name}: {tokens.shape[1]} output tokens are fewer than its {self.grid[0]}x{self.grid[1]} patch grid")
        return tokens[:, tokens.shape[1] - count:].float()


def visible_targets(teacher: Teacher, pixel_values, ids_keep, student_grid, *, mean, std, layer, norm: str) -> torch.Tensor:
    """The teacher's normalised features at the student's visible tokens [B, K, C]."""
    features = align_grid(teacher.features(pixel_values, mean, std, layer), teacher.grid, student_grid, teacher.name)
    features = normalize_target(features, norm)
    return torch.gather(features, 1, ids_keep.unsqueeze(-1).expand(-1, -1, features.shape[-1]))



__all__ = ["Teacher", "MimicHead", "mimic_loss", "normalize_target", "align_grid", "visible_targets"]
