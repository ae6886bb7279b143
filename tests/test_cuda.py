"""What only a GPU exercises: half-precision loading, the attention kernels, compiled and CUDA-graph
steps, normalisation on the device, fused AdamW, a one-rank FSDP2 step, the backbone under
UperNet, and `mim-hub pretrain` end to end on the device.

Marked `cuda`: `pytest -m cuda` (benchmarks/gpu/run.sh runs them first). Without a GPU they are
deselected (tests/conftest.py), unless MIM_HUB_CUDA_TESTS_ON_CPU=1 (the GPU run's dry run, and `test_gpu_run.py`), which
runs the same checks on the CPU with the CPU's stand-ins (the aot_eager backend instead of
inductor, gloo instead of NCCL), so that this file cannot rot between the sessions that have a GPU.
"""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch

import mim_hub
from mim_hub.auto import method_classes
from tiny_models import TINY, method_of, tiny

ON_CPU_ENV = "MIM_HUB_CUDA_TESTS_ON_CPU"
pytestmark = pytest.mark.cuda
# every method on a GPU; on the CPU stand-in two (a ViT and a Swin), which is enough to keep the
# checks themselves from rotting, in the dry run's few seconds
METHODS = sorted(TINY) if torch.cuda.is_available() else ["mae", "simmim_swin"]


@pytest.fixture(scope="module")
def device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get(ON_CPU_ENV) == "1":
        return "cpu"
    pytest.skip("no GPU (MIM_HUB_CUDA_TESTS_ON_CPU=1 runs these checks on the CPU)")


def compile_backend(device: str) -> str:
    """inductor on a GPU (what `--compile` uses); aot_eager on the CPU stand-in (no C++ build)."""
    return "inductor" if device == "cuda" else "aot_eager"


def on_device(extra: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in extra.items()}


def pixels(config, device: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.num_channels, config.image_size, config.image_size, generator=g).to(device)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("method", METHODS)
def test_half_precision_loading_and_forward(method, dtype, device, tmp_path):
    """from_pretrained(dtype=...) on the device: every floating tensor in that dtype, and the
    forward (float32 pixels in) close to the float32 model's."""
    config, extra = tiny(method)
    classes = method_classes(method_of(method))
    torch.manual_seed(0)
    classes["pretraining"](config).save_pretrained(tmp_path)
    reference = classes["model"].from_pretrained(tmp_path).to(device).eval()
    half = classes["model"].from_pretrained(tmp_path, dtype=dtype).to(device).eval()
    floating = [t for t in [*half.parameters(), *half.buffers()] if t.is_floating_point()]
    assert floating and all(t.dtype == dtype for t in floating)
    x = pixels(config, device)
    with torch.no_grad():
        expected = reference(x).last_hidden_state
        actual = half(x).last_hidden_state
        pretraining = classes["pretraining"].from_pretrained(tmp_path, dtype=dtype).to(device).eval()
        loss = pretraining(x, **on_device(extra, device)).loss
    assert actual.dtype == dtype and torch.isfinite(actual).all() and torch.isfinite(loss)
    scale = expected.abs().max().item()
    assert (actual.float() - expected).abs().max().item() < 0.06 * max(1.0, scale)


@pytest.mark.parametrize("method", METHODS)
def test_attention_implementations_agree(method, device, monkeypatch):
    """sdpa, flex_attention (and flash_attention_2 where installed and applicable) give eager's
    outputs on the device (flex compiled on a GPU; on the CPU stand-in uncompiled, torch's reference
    path, as tests/layers/test_attention.py runs it: inductor's CPU build of it takes minutes)."""
    torch._dynamo.reset()
    if device == "cpu":
        import transformers.integrations.flex_attention as flex
        from torch.nn.attention.flex_attention import flex_attention

        monkeypatch.setattr(flex, "compile_friendly_flex_attention", lambda q, k, v, training=False, **kw: flex_attention(q, k, v, **kw))
    config, _ = tiny(method)
    classes = method_classes(method_of(method))
    torch.manual_seed(0)
    model = classes["model"](config).to(device).eval()
    x = pixels(config, device)
    implementations = ["sdpa"]
    if getattr(config, "backbone", None) == "swin":  # stage i: embed_dim * 2**i channels over num_heads[i] heads
        head_dim = min(config.embed_dim * 2**i // heads for i, heads in enumerate(config.num_heads))
    else:
        head_dim = config.hidden_size // config.num_attention_heads
    if device == "cpu" or head_dim >= 16:  # flex's Triton kernel needs heads of 16 or more (the tiny Swin's and MR-MAE's have 8)
        implementations.append("flex_attention")
    if device == "cuda" and _flash_attention_installed() and method in ("mae", "color_mae", "crate_mae", "mr_mae"):
        implementations.append("flash_attention_2")  # refused with an error by models with an additive bias
    outputs = {}
    with torch.no_grad():
        for implementation in ["eager", *implementations]:
            model.set_attn_implementation(implementation)
            outputs[implementation] = model(x).last_hidden_state.float()
    for implementation in implementations:
        tolerance = 2e-2 if implementation == "flash_attention_2" else 1e-4  # flash runs in half precision
        torch.testing.assert_close(outputs[implementation], outputs["eager"], rtol=tolerance, atol=tolerance,
                                   msg=lambda m, i=implementation: f"{i} vs eager: {m}")


def _flash_attention_installed() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def _steps(model, x, extra, optimizer, count: int) -> list[float]:
    losses = []
    for _ in range(count):
        optimizer.zero_grad(set_to_none=True)
        loss = model(x, **extra).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"] if torch.cuda.is_available() else ["default"],
                         ids=["compiled", "cuda-graphs"][: 2 if torch.cuda.is_available() else 1])
def test_compiled_pretraining_steps_match_eager(mode, device):
    """`--compile`'s per-block compilation (and CUDA graphs, `--compile-mode reduce-overhead`) trains
    as eager does: the same losses over three optimizer steps."""
    from mim_hub.training.compiling import compile_blocks

    torch._dynamo.reset()
    config, extra = tiny("mae")  # the throughput step compiles every method at base size
    pretraining = method_classes("mae")["pretraining"]
    torch.manual_seed(0)
    eager = pretraining(config).to(device).train()
    eager.config.drop_path_rate = 0.0
    compiled = copy.deepcopy(eager)
    assert compile_blocks(compiled, backend=compile_backend(device), mode=mode) > 0
    x, extra = pixels(config, device), on_device(extra, device)
    expected = _steps(eager, x, extra, torch.optim.AdamW(eager.parameters(), lr=1e-3), 3)
    actual = _steps(compiled, x, extra, torch.optim.AdamW(compiled.parameters(), lr=1e-3), 3)
    assert actual == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_normalize_on_device_equals_the_cpu_path(device):
    """Workers' uint8 crops normalised on the device equal the float pixels normalised in the workers."""
    import numpy as np
    from PIL import Image

    from mim_hub.training.transforms import RandomResizedCropFlip

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40 + 3 * i, 50, 3), dtype=np.uint8)) for i in range(4)]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    floats = RandomResizedCropFlip(32, mean, std)
    uint8 = RandomResizedCropFlip(32, mean, std, uint8=True)
    expected = torch.stack([torch.from_numpy(floats(image, np.random.default_rng(i))) for i, image in enumerate(images)])
    crops = torch.stack([torch.from_numpy(np.ascontiguousarray(uint8(image, np.random.default_rng(i)))) for i, image in enumerate(images)])
    assert crops.dtype == torch.uint8
    actual = uint8.normalize.batch(crops.to(device))
    assert actual.device.type == device
    torch.testing.assert_close(actual.cpu(), expected, rtol=0, atol=1e-6)


def test_fused_adamw_matches_the_plain_implementation(device):
    """The library's AdamW takes torch's fused kernel on the device, and given the same gradients
    its steps equal the plain loop's."""
    from mim_hub.training.optim import adamw, param_groups

    config, _ = tiny("mae")
    torch.manual_seed(0)
    model = method_classes("mae")["pretraining"](config).to(device)
    plain_model = copy.deepcopy(model)
    fused = adamw(param_groups(model, 0.05), lr=1e-3)
    assert fused.defaults["fused"] is True
    plain = torch.optim.AdamW(param_groups(plain_model, 0.05), lr=1e-3, foreach=False)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for a, b in zip(model.parameters(), plain_model.parameters()):
            a.grad = torch.randn(a.shape, generator=g).to(device)
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    for (name, a), b in zip(model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_one_rank_fsdp2_step_matches_the_unsharded_model(device, tmp_path):
    """FSDP2 (`shard_model`: fully_shard per block, then the model) on one rank (NCCL on a GPU):
    loss, gradients and the fused AdamW step equal the plain model's."""
    import gc

    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", store=store, rank=0, world_size=1)
    try:
        _sharded_and_plain_steps(device)
    finally:  # what holds the group is gone with the helper's frame: destroyed here, not in a destructor later
        gc.collect()
        dist.destroy_process_group()


def _sharded_and_plain_steps(device: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    from mim_hub.training.distributed import shard_model
    from mim_hub.training.optim import adamw, param_groups

    config, extra = tiny("mae")
    torch.manual_seed(0)
    reference = method_classes("mae")["pretraining"](config).to(device)
    sharded = copy.deepcopy(reference)
    shard_model(sharded, init_device_mesh(device, (1,)))
    x, extra = pixels(config, device), on_device(extra, device)
    expected = _steps(reference, x, extra, adamw(param_groups(reference, 0.05), lr=1e-3), 2)
    actual = _steps(sharded, x, extra, adamw(param_groups(sharded, 0.05), lr=1e-3), 2)
    assert actual == pytest.approx(expected, rel=1e-5)
    parameters = dict(sharded.named_parameters())
    assert type(next(iter(parameters.values()))).__name__ == "DTensor"
    for name, param in reference.named_parameters():
        full = parameters[name].full_tensor()
        torch.testing.assert_close(full, param, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_backbone_and_upernet_forward(device, tmp_path):
    """A method's backbone under transformers' UperNet on the device, in bf16 autocast: logits at the
    input's resolution, and a finite loss with gradients reaching the backbone."""
    from mim_hub.training.segmentation import build_upernet

    config, _ = tiny("mae")
    torch.manual_seed(0)
    method_classes("mae")["pretraining"](config).save_pretrained(tmp_path)
    model = build_upernet(str(tmp_path), 5, channels=16, auxiliary_channels=8).to(device).train()
    x = pixels(config, device)
    labels = torch.randint(0, 5, (2, config.image_size, config.image_size)).to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = model(pixel_values=x, labels=labels)
    assert out.logits.shape == (2, 5, config.image_size, config.image_size)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if name.startswith("backbone.") and p.grad is not None}
    assert any("patch_embed" in name for name in grads) and any(".layers." in name for name in grads)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_pretrain_command_on_the_device(device, tmp_path, monkeypatch):
    """`mim-hub pretrain --compile` on the device: bf16 on a GPU, uint8 crops normalised on the
    device, fused AdamW, a finite loss logged and a model saved."""
    from mim_hub.cli import main

    config, _ = tiny("mae")
    torch.manual_seed(0)
    folder = tmp_path / "tiny"
    mim_hub.MAEForPreTraining(config).save_pretrained(folder)
    mim_hub.MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(folder)
    if device == "cpu":
        monkeypatch.setenv("MIM_HUB_NORMALIZE_ON_DEVICE", "1")
    out = tmp_path / "run"
    argv = ["pretrain", "--model", str(folder), "--dataset", "digits", "--output-dir", str(out), "--max-steps", "4",
            "--batch-size", "16", "--num-workers", "2", "--log-every", "2", "--save-every", "0"]
    if device == "cuda":  # on the CPU stand-in the compiled step is test_compiled_pretraining_steps_match_eager's
        argv += ["--compile", "--mixed-precision", "bf16"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert device == "cpu" or records[0]["compiled_blocks"] > 0
    assert (out / "model.safetensors").is_file()
