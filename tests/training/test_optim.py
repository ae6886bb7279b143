"""The optimisers and schedules of training/optim.py: LAMB against the update rule written out in
float64, the weight decay's cosine, and both resumed from their saved state."""

from __future__ import annotations

import math

import pytest
import torch

from mim_hub.training.optim import Lamb, build_optimizer, cosine_with_warmup


def _lamb_reference(weights, grads_per_step, *, lr, betas, eps, decays, max_grad_norm):
    """LAMB step by step in float64, from the paper's rule as FusedLAMB applies it (the global
    gradient norm clipped first; the trust ratio only where there is weight decay)."""
    weights = [w.double().clone() for w in weights]
    first = [torch.zeros_like(w) for w in weights]
    second = [torch.zeros_like(w) for w in weights]
    for step, grads in enumerate(grads_per_step, start=1):
        grads = [g.double() for g in grads]
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
        scale = max_grad_norm / norm if norm > max_grad_norm else 1.0
        for i, (weight, grad) in enumerate(zip(weights, grads)):
            grad = grad * scale
            first[i] = betas[0] * first[i] + (1 - betas[0]) * grad
            second[i] = betas[1] * second[i] + (1 - betas[1]) * grad * grad
            m_hat, v_hat = first[i] / (1 - betas[0] ** step), second[i] / (1 - betas[1] ** step)
            update = m_hat / (v_hat.sqrt() + eps)
            if decays[i]:
                update = update + decays[i] * weight
                update = update * (weight.norm() / update.norm())
            weights[i] = weight - lr * update
    return weights


def test_lamb_follows_the_update_rule_with_clipping_and_trust_ratio():
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(4, 3, generator=generator), torch.randn(3, generator=generator), torch.randn(2, 2, generator=generator)]
    grads = [[10 * torch.randn(w.shape, generator=generator) for w in weights] for _ in range(3)]  # norms above 5: clipped
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    optimizer = Lamb([{"params": [params[0], params[2]], "weight_decay": 0.04}, {"params": [params[1]], "weight_decay": 0.0}],
                     lr=0.1, betas=(0.9, 0.95), eps=1e-6, max_grad_norm=5.0)
    for step_grads in grads:
        for param, grad in zip(params, step_grads):
            param.grad = grad.clone()
        optimizer.step()
    expected = _lamb_reference(weights, grads, lr=0.1, betas=(0.9, 0.95), eps=1e-6, decays=[0.04, 0.0, 0.04], max_grad_norm=5.0)
    for param, want in zip(params, expected):
        torch.testing.assert_close(param.detach().double(), want, rtol=1e-5, atol=1e-6)
    # the gradients the caller holds are not rescaled (SparK's copy scales them in place)
    assert torch.equal(params[0].grad, grads[-1][0])


def test_lamb_moves_a_decayed_weight_by_lr_times_its_norm():
    param = torch.nn.Parameter(torch.full((10,), 3.0))
    optimizer = Lamb([param], lr=0.01, weight_decay=0.1, max_grad_norm=None)
    param.grad = torch.randn(10)
    before = param.detach().clone()
    optimizer.step()
    assert (param.detach() - before).norm().item() == pytest.approx(0.01 * before.norm().item(), rel=1e-5)


def test_lamb_refuses_bad_settings_and_unknown_optimizers_are_named():
    param = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="max_grad_norm"):
        Lamb([param], max_grad_norm=0)
    with pytest.raises(ValueError, match="betas"):
        Lamb([param], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; known: adamw, lamb"):
        build_optimizer("sgd", [{"params": [param]}], lr=1e-3)
    assert isinstance(build_optimizer("lamb", [{"params": [param]}], lr=1e-3, max_grad_norm=5.0), Lamb)


def _model_and_optimizer(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    groups = [{"params": [model[0].weight, model[2].weight], "weight_decay": 0.04},
              {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}]
    optimizer = build_optimizer(name, groups, lr=1e-2, betas=(0.9, 0.95), max_grad_norm=5.0)
    return model, optimizer, cosine_with_warmup(optimizer, 2, 10, weight_decay_end=0.2)


def _train(model, optimizer, scheduler, steps, start=0):
    decays = []
    for step in range(start, start + steps):
        inputs = torch.randn(16, 4, generator=torch.Generator().manual_seed(step))
        decays.append([group["weight_decay"] for group in optimizer.param_groups])
        model(inputs).square().mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return decays


def test_the_weight_decay_follows_a_cosine_from_start_to_end_and_none_stays_none():
    model, optimizer, scheduler = _model_and_optimizer("adamw")
    decays = _train(model, optimizer, scheduler, 10)
    for step, (decayed, not_decayed) in enumerate(decays):  # SparK's lr_wd_annealing: step i of n
        assert decayed == pytest.approx(0.2 + (0.04 - 0.2) * 0.5 * (1 + math.cos(math.pi * step / 9)))
        assert not_decayed == 0.0
    assert decays[0][0] == pytest.approx(0.04) and decays[-1][0] == pytest.approx(0.2)


@pytest.mark.parametrize("name", ["lamb", "adamw"])
def test_resumed_from_saved_states_the_run_continues_exactly(name):
    model, optimizer, scheduler = _model_and_optimizer(name)
    _train(model, optimizer, scheduler, 10)
    straight = [p.detach().clone() for p in model.parameters()]

    model, optimizer, scheduler = _model_and_optimizer(name)
    _train(model, optimizer, scheduler, 4)
    saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    model, optimizer, scheduler = _model_and_optimizer(name)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    _train(model, optimizer, scheduler, 6, start=4)
    for want, got in zip(straight, model.parameters()):
        assert torch.equal(want, got.detach())
