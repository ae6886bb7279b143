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
