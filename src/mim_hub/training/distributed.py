"""FSDP2 (torch's `fully_shard`) for pre-training and fine-tuning the large models (ViT-L/H).

- `fsdp_plugin()`: Accelerate's `FullyShardedDataParallelPlugin(fsdp_version=2)` for
  `mim-hub pretrain --fsdp`: every transformer block (the model's `_no_split_modules`) is a
  shard unit, parameters are resharded after forward, checkpoints are sharded
  (`SHARDED_STATE_DICT`: each process writes its own shard; `--resume` reads them back);
- `trainer_fsdp_arguments()`: the same through transformers' `TrainingArguments(fsdp=...,
  fsdp_config=...)` for `mim-hub finetune --fsdp`;
- `shard_model(model, mesh)`: `fully_shard` applied by hand (each block, then the root), for a
  loop of one's own and for the CPU test (Accelerate ignores an FSDP plugin on CPU and runs DDP).

FSDP needs GPUs (or an explicit CPU device mesh with gloo, as the test does); the equivalent
`accelerate config` is in docs/training.md.
"""

from __future__ import annotations

import torch
from accelerate import FullyShardedDataParallelPlugin
from torch.distributed.fsdp import fully_shard


def cpu_only() -> bool:
    """True when torch sees no accelerator (CUDA, XPU, MPS, ...). The processes of a launch
    (`torchrun`, `accelerate launch --multi_gpu`) then run on CPU and join one another over gloo:
    Accelerate does that only when told `cpu=True`; without it every process trains alone, as a
    world of one, on the same output folder."""
    accelerator = getattr(torch, "accelerator", None)
    return not (accelerator.is_available() if accelerator is not None else torch.cuda.is_available())


def block_classes(model) -> set[type]:
    """The classes of the model's transformer blocks (its `_no_split_modules`)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    if not names:
        raise ValueError(f"{type(model).__name__} names no transformer blocks (_no_split_modules) to shard")
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def shard_model(model, mesh=None, *, reshard_after_forward: bool = True):
    """Apply FSDP2's `fully_shard` to each transformer block, then to the whole model."""
    classes = block_classes(model)
    for module in list(model.modules()):
        if type(module) in classes:
            fully_shard(module, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)


def fsdp_plugin(*, cpu_offload: bool = False):
    """Accelerate's FSDP2 plugin, wrapping the blocks named by each model's `_no_split_modules`."""
    return FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap", reshard_after_forward=True,
                                          state_dict_type="SHARDED_STATE_DICT", cpu_ram_efficient_loading=False,
                                          cpu_offload=cpu_offload)


def trainer_fsdp_arguments(model) -> dict:
    """`TrainingArguments` keywords for FSDP2 with the model's blocks as shard units."""
    return {"fsdp": True,
            "fsdp_config": {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "transformer_layer_cls_to_wrap": sorted(c.__name__ for c in block_classes(model)),
                            "reshard_after_forward": True, "state_dict_type": "SHARDED_STATE_DICT", "cpu_ram_efficient_loading": False}}
