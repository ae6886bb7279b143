"""`--compile` of `mim-hub pretrain` and `mim-hub finetune`: torch.compile per block.

Every block of every `nn.ModuleList` in the model (the encoder's, the decoder's, a regressor's) is
compiled in place (`nn.Module.compile`). Blocks of one structure share one compiled graph, so the
compile time is that of one block of each kind, not of the whole network; what is not a block
(patch embedding, masking, the loss) stays eager. In-place compilation keeps every parameter
name, so checkpoints, `--resume` and `save_pretrained` are exactly those of an eager run.
"""

from __future__ import annotations

import torch

BACKENDS = ("inductor", "aot_eager", "eager")
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_blocks(model: torch.nn.Module, *, backend: str = "inductor", mode: str = "default") -> int:
    """Compile every block (an element of a ModuleList holding no ModuleList itself) of `model` in
    place; returns how many."""
    if backend not in BACKENDS:
        raise ValueError(f"--compile-backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if mode not in MODES:
        raise ValueError(f"--compile-mode {mode!r}: expected one of {', '.join(MODES)}")
    options = {"backend": backend}
    if backend == "inductor" and mode != "default":
        options["mode"] = mode
    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList):
            for block in module:
                if any(isinstance(inner, torch.nn.ModuleList) for inner in block.modules()):
                    continue  # a stage of blocks (Swin): its blocks are compiled instead
                block.compile(**options)
                count += 1
    return count


def compile_with(model: torch.nn.Module, settings) -> int:
    """`compile_blocks` as `settings` (a `CompileSettings`) ask; 0 when they do not."""
    if not settings.compile:
        return 0
    return compile_blocks(model, backend=settings.compile_backend, mode=settings.compile_mode)
