"""Model EMA with the semantics of timm's `ModelEmaV2`: a copy of the model whose weights follow
the trained ones, `ema = decay x ema + (1 - decay) x weights`, updated after every optimizer
step, evaluated and saved beside the model, and saved/resumed with each checkpoint.

Floating-point entries of the state dict (parameters and buffers) are averaged; the others
(integer counters) are copied, as timm's `ModelEmaV3` does (V2 would truncate an average).

- `ModelEma(model, decay)`: `update(model)`, `state_dict()`, `load_state_dict()`, `module`;
- `EmaCallback(ema, resume_from=...)`: transformers' `TrainerCallback` that updates it on each
  step, writes `ema.safetensors` into each `checkpoint-N` folder the Trainer saves and reads it
  back when training resumes from such a folder.
"""

from __future__ import annotations

import copy
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

EMA_FILE = "ema.safetensors"


def _unwrap(model):
    return getattr(model, "module", model)


class ModelEma:
    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, device: str | torch.device | None = None):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.device = decay, device
        if device is not None:
            self.module.to(device)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        ema_state, model_state = self.module.state_dict(), _unwrap(model).state_dict()
        for name, ema_value in ema_state.items():
            value = model_state[name].detach().to(ema_value.device)
            if ema_value.is_floating_point():
                ema_value.lerp_(value.to(ema_value.dtype), 1.0 - self.decay)
            else:
                ema_value.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

    def save(self, folder: str) -> str:
        path = os.path.join(folder, EMA_FILE)
        state = self.state_dict()
        # tied tensors share memory: safetensors wants each stored once
        seen, unique = {}, {}
        for key, value in state.items():
            ptr = (value.data_ptr(), value.shape)
            if ptr not in seen:
                seen[ptr] = key
                unique[key] = value
        save_file({k: v.clone() for k, v in unique.items()}, path, metadata={"decay": str(self.decay)})
        return path

    def load(self, folder: str) -> None:
        path = os.path.join(folder, EMA_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder} has no {EMA_FILE}: it was not saved with model EMA on")
        stored = load_file(path)
        missing = [k for k in self.module.state_dict() if k not in stored]
        current = self.module.state_dict()
        for key in missing:  # a tied tensor stored under its twin's name
            twin = next((k for k in stored if current[k].data_ptr() == current[key].data_ptr()), None)
            if twin is None:
                raise ValueError(f"{path} lacks {key}: not an EMA of this model")
            stored[key] = stored[twin]
        self.module.load_state_dict(stored)


class EmaCallback(TrainerCallback):
    """Keeps a `ModelEma` in step with transformers' Trainer (see the module's docstring)."""

    def __init__(self, ema: ModelEma, resume_from: str | None = None):
        self.ema, self.resume_from = ema, resume_from

    def on_train_begin(self, args, state, control, **kwargs):
        if self.resume_from:
            self.ema.load(self.resume_from)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ema.update(model)

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder) and state.is_world_process_zero:
            self.ema.save(folder)
