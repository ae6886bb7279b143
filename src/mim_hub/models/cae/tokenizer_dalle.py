"""The DALL-E dVAE encoder (openai/DALL-E, `dall_e/encoder.py`): CAE's default tokenizer.

CAE's targets are `argmax` over the 8192 logits of this encoder applied to `map_pixels(image)`
(the second, half-size view of each crop: 112 px for 224 inputs, one token per 16-px patch).
OpenAI publishes it as `encoder.pkl`, a pickled `dall_e.encoder.Encoder` module. We never
unpickle it: `load_dalle_state_dict` reads the file with a restricted unpickler in which every
`dall_e` / `torch.nn` class is an inert stand-in (nothing is imported or run), collects the
parameters by their module path, and `DalleTokenizer.from_original` loads them into this port.

Architecture (defaults of the released encoder): 7x7 input conv to `n_hid` (256); four groups
of `n_blk_per_group` (2) residual blocks at widths 1, 2, 4, 8 x `n_hid`, max-pool 2 after the
first three; ReLU + 1x1 conv to `vocab_size` logits. Block: `id_path(x) + res_path(x) / L**2`
(L = number of blocks), `res_path` = ReLU-conv3x3(out/4) x3 -> ReLU-conv1x1(out); `id_path` a 1x1
conv when the width changes. Convolutions are 'same'-padded.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from collections import OrderedDict

import torch
from torch import nn

from ...utils.safe_pickle import CheckpointError, RestrictedPickleModule, RestrictedUnpickler, inert_class

LOGIT_LAPLACE_EPS = 0.1


def map_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """DALL-E's input mapping of [0, 1] pixels to [eps, 1 - eps] (logit-Laplace, eps 0.1)."""
    return (1 - 2 * LOGIT_LAPLACE_EPS) * pixels + LOGIT_LAPLACE_EPS


class DalleEncoderBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, n_layers: int):
        super().__init__()
        n_hid = n_out // 4
        self.post_gain = 1 / (n_layers**2)
        self.id_path = nn.Conv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        self.res_path = nn.Sequential(OrderedDict([
            ("relu_1", nn.ReLU()), ("conv_1", nn.Conv2d(n_in, n_hid, 3, padding=1)),
            ("relu_2", nn.ReLU()), ("conv_2", nn.Conv2d(n_hid, n_hid, 3, padding=1)),
            ("relu_3", nn.ReLU()), ("conv_3", nn.Conv2d(n_hid, n_hid, 3, padding=1)),
            ("relu_4", nn.ReLU()), ("conv_4", nn.Conv2d(n_hid, n_out, 1)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.id_path(x) + self.post_gain * self.res_path(x)


class DalleTokenizer(nn.Module):
    """Images -> dVAE token ids [B, H/8, W/8].

    `forward(pixels)` takes images in [0, 1] (not ImageNet-normalised), applies `map_pixels`
    and returns the argmax ids (`logits(...)` gives the raw logits). For CAE, feed images of
    `8 x` the model's patch grid (112 px for a 224 / 16 model). Frozen: it is a target, never
    trained. Runs in float32 (the original casts to float16 on CUDA only for its 3x3 convs).
    """

    def __init__(self, n_hid: int = 256, n_blk_per_group: int = 2, input_channels: int = 3, vocab_size: int = 8192, group_count: int = 4):
        super().__init__()
        self.vocab_size = vocab_size
        self.input_channels = input_channels
        n_layers = group_count * n_blk_per_group
        widths = [n_hid * 2**g for g in range(group_count)]
        groups = [("input", nn.Conv2d(input_channels, n_hid, 7, padding=3))]
        previous = n_hid
        for g, width in enumerate(widths):
            layers = []
            for i in range(n_blk_per_group):
                layers.append((f"block_{i + 1}", DalleEncoderBlock(previous if i == 0 else width, width, n_layers)))
            previous = width
            if g < group_count - 1:
                layers.append(("pool", nn.MaxPool2d(kernel_size=2)))
            groups.append((f"group_{g + 1}", nn.Sequential(OrderedDict(layers))))
        groups.append(("output", nn.Sequential(OrderedDict([("relu", nn.ReLU()), ("conv", nn.Conv2d(previous, vocab_size, 1))]))))
        self.blocks = nn.Sequential(OrderedDict(groups))
        self.downsample = 2 ** (group_count - 1)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always in eval mode: a fixed target
        return super().train(False)

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dim() != 4 or pixels.shape[1] != self.input_channels:
            raise ValueError(f"expected images [B, {self.input_channels}, H, W] in [0, 1], got shape {tuple(pixels.shape)}")
        weight = self.blocks.input.weight
        return self.blocks(map_pixels(pixels.to(device=weight.device, dtype=torch.float32)))

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.logits(pixels).argmax(dim=1)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], source: str = "<state dict>") -> "DalleTokenizer":
        """Build from a state dict with the original names (`blocks.input.w`, ...) or ours
        (`blocks.input.weight`); sizes are read from the shapes."""
        state = {re.sub(r"\.w$", ".weight", re.sub(r"\.b$", ".bias", k)): v for k, v in state.items()}
        first, last = state.get("blocks.input.weight"), state.get("blocks.output.conv.weight")
        if first is None or last is None or first.dim() != 4 or last.dim() != 4:
            raise CheckpointError(f"{source}: not a DALL-E dVAE encoder (no 4-d 'blocks.input.w' and 'blocks.output.conv.w')")
        n_hid, channels = first.shape[:2]
        vocab = last.shape[0]
        groups = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.group_(\d+)\.", k))})
        per_group = len({m.group(1) for k in state if (m := re.match(r"blocks\.group_1\.block_(\d+)\.", k))})
        model = cls(n_hid=n_hid, n_blk_per_group=per_group, input_channels=channels, vocab_size=vocab, group_count=len(groups))
        ours = model.state_dict()
        missing = sorted(set(ours) - set(state))
        unexpected = sorted(set(state) - set(ours))
        mismatched = sorted(k for k in set(ours) & set(state) if ours[k].shape != state[k].shape)
        if missing or unexpected or mismatched:
            raise CheckpointError(f"{source}: cannot load the dVAE encoder: missing {missing[:10]}, unexpected {unexpected[:10]}, "
                                  f"mis-shaped {mismatched[:10]}")
        model.load_state_dict({k: v.float() for k, v in state.items()})
        return model

    @classmethod
    def from_original(cls, path: str) -> "DalleTokenizer":
        """Load OpenAI's `encoder.pkl` (read safely, see the module docstring), or a state dict
        file (`.pt`/`.pth`/`.safetensors`) of the encoder."""
        return cls.from_state_dict(load_dalle_state_dict(path), path)


# ----------------------------------------------------------------------------------------------
# Reading a pickled `dall_e.encoder.Encoder` without running it
# ----------------------------------------------------------------------------------------------

_MODULE_PREFIXES = ("dall_e.", "torch.nn.modules.")


class _ModuleUnpickler(RestrictedUnpickler):
    """The project's restricted unpickler, plus inert stand-ins for the module classes a pickled
    `nn.Module` names (`dall_e.*`, `torch.nn.modules.*`). Everything else stays refused."""

    def find_class(self, module: str, name: str):
        if module.startswith(_MODULE_PREFIXES):
            return inert_class(module, name)
        return super().find_class(module, name)


class _ModulePickle(RestrictedPickleModule):
    Unpickler = _ModuleUnpickler
    __name__ = "mim_hub_module_pickle"


def _collect_parameters(module, prefix: str, out: dict, depth: int = 0) -> None:
    """Walk an unpickled module's `_modules` / `_parameters` (plain dicts here) into `out`."""
    if depth > 32 or not isinstance(module, dict):
        return
    for name, value in (module.get("_parameters") or {}).items():
        if torch.is_tensor(value):
            out[prefix + name] = value.detach()
    for name, child in (module.get("_modules") or {}).items():
        _collect_parameters(child, f"{prefix}{name}.", out, depth + 1)


def load_dalle_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The parameters of a dVAE encoder file by their original names (`blocks.input.w`, ...)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        with warnings.catch_warnings():  # legacy-format files ask to compare module sources: stand-ins have none
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=_ModulePickle)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refusing to load: {error}") from None
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable dVAE encoder file ({type(error).__name__}: {str(error)[:200]})") from None
    if isinstance(obj, dict) and "_modules" in obj:  # a pickled module: its parameter tree
        state: dict[str, torch.Tensor] = {}
        _collect_parameters(obj, "", state)
        return state
    if isinstance(obj, dict):  # a state dict
        return {k: v for k, v in obj.items() if torch.is_tensor(v)}
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a dVAE encoder")


__all__ = ["DalleTokenizer", "map_pixels", "load_dalle_state_dict"]
