"""torch.compile captures every model in one graph (no graph breaks), and bf16 autocast runs."""

import pytest
import torch

from mim_hub.auto import method_classes
from tiny_models import TINY, method_of, tiny


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(TINY))
@pytest.mark.parametrize("role", ["model", "pretraining", "classification"])
def test_fullgraph_compile_matches_eager(method, role):
    torch._dynamo.reset()
    config, extra = tiny(method)
    model = method_classes(method_of(method))[role](config).eval()
    x = torch.randn(2, config.num_channels, 32, 32)
    kwargs = extra if role == "pretraining" else {}
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        eager_out, compiled_out = model(x, **kwargs), compiled(x, **kwargs)
    key = {"model": "last_hidden_state", "pretraining": "loss", "classification": "logits"}[role]
    torch.testing.assert_close(compiled_out[key], eager_out[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", sorted(TINY))
def test_bf16_autocast_pretraining_step(method):
    """A bf16-autocast step runs (the default attention, SDPA) and its gradients follow the float32 step's."""
    torch.manual_seed(0)
    config, extra = tiny(method)
    model = method_classes(method_of(method))["pretraining"](config).train()
    x = torch.randn(2, config.num_channels, 32, 32)
    grads = {}
    for bf16 in (False, True):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same masks and dropout draws in both steps
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, **extra).loss
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        grads[bf16] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys()
    largest = max(g.norm() for g in grads[False].values())
    for name, reference in grads[False].items():
        if reference.norm() > 1e-3 * largest:  # (some gradients are zero up to rounding, e.g. a bias before a softmax)
            error = (grads[True][name] - reference).norm() / reference.norm()
            assert error < 0.15, f"{name}: bf16 gradient {error:.3f} away from float32's"


def test_compile_blocks_compiles_each_block_in_place_and_keeps_parameter_names():
    from mim_hub.training.compiling import compile_blocks

    for method in ("mae", "simmim_swin"):
        config, _ = tiny(method)
        model = method_classes(method_of(method))["pretraining"](config)
        names = list(model.state_dict())
        count = compile_blocks(model, backend="aot_eager")
        compiled = [m for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None]
        assert count == len(compiled) > 0
        assert all(not any(isinstance(inner, torch.nn.ModuleList) for inner in m.modules()) for m in compiled)  # blocks, not stages
        assert list(model.state_dict()) == names  # checkpoints and save_pretrained are an eager model's
    with pytest.raises(ValueError, match="--compile-backend"):
        compile_blocks(model, backend="tensorrt")


@pytest.mark.slow
def test_pretrain_compile_matches_eager_and_resumes_to_the_same_weights(tmp_path):
    """--compile gives the eager losses (fp32, to 1e-5) step by step, states its compile time in the
    log, and a compiled run resumed from its checkpoint ends on the uninterrupted compiled run's
    weights. aot_eager: the graph capture and AOT autograd that --compile adds, without inductor's
    C++ build (minutes on 2 loaded cores); benchmarks/run.py measures inductor."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file

    from mim_hub import MAEConfig, MAEForPreTraining, MAEImageProcessor

    model_dir = tmp_path / "tiny"
    torch.manual_seed(0)
    MAEForPreTraining(MAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                                decoder_intermediate_size=64)).save_pretrained(model_dir)
    MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(model_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    common = ["--model", str(model_dir), "--dataset", "digits", "--batch-size", "8", "--max-steps", "3", "--save-every", "2",
              "--log-every", "1", "--lr", "1e-3"]
    compile_flags = ["--compile", "--compile-backend", "aot_eager"]

    def run(folder, *extra):
        proc = subprocess.run([sys.executable, "-m", "mim_hub", "pretrain", "--output-dir", str(folder), *common, *extra],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc, [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]

    _, eager = run(tmp_path / "eager")
    proc, compiled = run(tmp_path / "compiled", *compile_flags)
    assert [r["step"] for r in compiled] == [1, 2, 3]
    for a, b in zip(eager, compiled):
        assert abs(a["loss"] - b["loss"]) <= 1e-5, (a, b)
    assert compiled[0]["compiled_blocks"] == 3 and compiled[0]["first_step_s"] > 0  # 2 encoder blocks + 1 decoder block
    assert "--compile: 3 blocks compiled (aot_eager)" in proc.stderr
    a, b = load_file(tmp_path / "eager" / "model.safetensors"), load_file(tmp_path / "compiled" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-5)
    # resume a compiled run from its step-2 checkpoint, compiled: the uninterrupted compiled run's weights
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "compiled" / "checkpoints", resumed / "checkpoints")
    _, log = run(resumed, *compile_flags, "--resume")
    assert [r["step"] for r in log] == [3] and log[0]["loss"] == compiled[2]["loss"]
    final = load_file(resumed / "model.safetensors")
    assert all(torch.equal(final[key], b[key]) for key in b)
