"""Run by tests/training/test_fsdp.py under `torch.distributed.run --nproc_per_node 2` (gloo, CPU): a tiny
MAE sharded with FSDP2 (`shard_model`, explicit CPU mesh), each process on half of a batch; rank 0
compares the loss and the gradients with one unsharded process on the whole batch."""

import gc
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from mim_hub import MAEConfig, MAEForPreTraining
from mim_hub.training.distributed import shard_model

CONFIG = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
              decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64,
              norm_pix_loss=True)


def compare(out_path):
    """The comparison, in its own frame: what holds the process group (the sharded model, its
    mesh, the gradients) is gone when it returns."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    reference = MAEForPreTraining(MAEConfig(**CONFIG))
    sharded = MAEForPreTraining(MAEConfig(**CONFIG))
    sharded.load_state_dict(reference.state_dict())
    g = torch.Generator().manual_seed(1)
    pixels, noise = torch.randn(8, 3, 32, 32, generator=g), torch.rand(8, 16, generator=g)
    # one process, whole batch
    loss_ref = reference(pixel_values=pixels, noise=noise).loss
    loss_ref.backward()
    # FSDP2, half the batch each; the gradients are averaged across processes by the reduce-scatter
    mesh = init_device_mesh("cpu", (world,))
    shard_model(sharded, mesh)
    part = slice(rank * 8 // world, (rank + 1) * 8 // world)
    loss = sharded(pixel_values=pixels[part], noise=noise[part]).loss
    loss.backward()
    losses = [torch.zeros(()) for _ in range(world)]
    dist.all_gather(losses, loss.detach())
    sharded_params = dict(sharded.named_parameters())
    result = {"loss_ref": loss_ref.item(), "loss_sharded": torch.stack(losses).mean().item(), "max_grad_diff": 0.0, "checked": 0,
              "is_dtensor": type(next(iter(sharded_params.values()))).__name__}
    for name, param in reference.named_parameters():
        if param.grad is None:
            continue
        grad = sharded_params[name].grad
        full = grad.full_tensor() if hasattr(grad, "full_tensor") else grad
        result["max_grad_diff"] = max(result["max_grad_diff"], (full - param.grad).abs().max().item())
        result["checked"] += 1
    if rank == 0:
        with open(out_path, "w") as handle:
            json.dump(result, handle)


def main(out_path):
    dist.init_process_group("gloo")
    compare(out_path)
    # the group's holders are freed before the group is destroyed: left to interpreter exit, gloo's
    # threads were torn down from a destructor and a rank aborted ("terminate called without an
    # active exception"), about one run in several under load
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
