"""HPM's pre-training recipe: MAE's (crop + flip, AdamW (0.9, 0.95), base lr 1.5e-4, weight decay
0.05: HPM's `scripts/pretrain_base.sh`), with hard-patch masks chosen by an EMA teacher.

Each sample still draws MAE's uniform noise from its own generator (seeded by seed, epoch and
index). On the device, `HardPatchTeacher.model_inputs` turns a batch's noise into HPM's mask
(`HardPatchMaskGenerator`): the teacher predicts every patch's loss on the unmasked images, the
hardest `int((L - len_keep) * (epoch + 1) / total_epochs * max_hard_share)` are masked, and the
sample's noise orders the rest (before the first hard patch the mask is the sample's own random
one), as the original's `engine_pretrain.py` with `--learning_loss --relative`. After every
optimizer step the teacher follows the model (timm's `ModelEma`, decay 0.999 rising linearly to
0.9999 over the first 100 epochs, as the original). The teacher is saved in every checkpoint
(`hpm_teacher.safetensors`) and read back on `--resume`, so a resumed run draws the masks the
uninterrupted one would; the final teacher is written to `OUTPUT/ema` (where `mim-hub convert`
writes an original checkpoint's `ema_state_dict`). A run that continues a folder with an `ema/`
subfolder starts its teacher from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ...layers.mask_hard_patches import HardPatchMaskGenerator
from ..ema import ModelEma
from .base import PretrainRecipe

TEACHER_FILE = "hpm_teacher.safetensors"


def teacher_decay(epoch: int) -> float:
    """HPM's EMA decay at `epoch`: 0.999 + epoch / 100 x (0.9999 - 0.999) for the first 100 epochs, then 0.9999."""
    return 0.999 + epoch / 100 * (0.9999 - 0.999) if epoch < 100 else 0.9999


class HardPatchTeacher:
    """The EMA teacher of one run and the mask source it drives (see the module docstring)."""

    def __init__(self, model, mask_generator: HardPatchMaskGenerator):
        self.ema = ModelEma(model, teacher_decay(0))
        self.mask_generator = mask_generator
        start = os.path.join(str(getattr(model.config, "_name_or_path", "") or ""), "ema")
        if os.path.isfile(os.path.join(start, "model.safetensors")):  # a converted original checkpoint's teacher
            from safetensors.torch import load_file

            self.ema.module.load_state_dict(load_file(os.path.join(start, "model.safetensors")))

    @property
    def teacher(self):
        return self.ema.module

    @staticmethod
    def decay(epoch: int) -> float:
        return teacher_decay(epoch)

    @torch.no_grad()
    def model_inputs(self, inputs: dict, *, epoch: int) -> dict:
        """The batch's inputs with its uniform `noise` replaced by the hard-patch mask's noise."""
        pixels = inputs["pixel_values"]
        length = inputs["noise"].shape[1]
        if self.mask_generator.num_hard(length, epoch) <= 0:
            return inputs
        scores = self.teacher.predict_patch_losses(pixels.to(next(self.teacher.parameters()).dtype))
        return {**inputs, "noise": self.mask_generator(scores, epoch, noise=inputs["noise"])}

    def step_end(self, model, *, epoch: int) -> None:
        """After an optimizer step: the teacher follows the model."""
        self.ema.decay = teacher_decay(epoch)
        self.ema.update(model)

    def save(self, folder: str) -> None:
        from safetensors.torch import save_file

        save_file({k: v.clone() for k, v in self.ema.state_dict().items()}, os.path.join(folder, TEACHER_FILE))

    def load(self, folder: str) -> None:
        from safetensors.torch import load_file

        path = os.path.join(folder, TEACHER_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"--resume: {folder} has no {TEACHER_FILE}: it was not written by an HPM run")
        self.ema.module.load_state_dict(load_file(path))

    def final_models(self) -> dict:
        """What the run writes beside its model: the teacher, at OUTPUT/ema."""
        return {"ema": self.teacher}


@dataclass(frozen=True)
class HPMRecipe(PretrainRecipe):
    method = "hpm"

    @classmethod
    def configure_model(cls, model, args, *, mean=None, std=None) -> None:
        if getattr(args, "model_ema", False):
            raise ValueError("--model-ema: HPM keeps its own EMA teacher (written to OUTPUT/ema); drop --model-ema")
        if getattr(args, "fsdp", False):
            raise ValueError("--fsdp: HPM's EMA teacher is a full copy of the model; train HPM without --fsdp")

    def training_state(self, model, *, total_epochs: float) -> HardPatchTeacher:
        generator = HardPatchMaskGenerator(self.config.mask_ratio, total_epochs, self.config.max_hard_share)
        return HardPatchTeacher(model, generator)


RECIPE = HPMRecipe
