"""MAE's linear-probe protocol: LARS as MAE's util/lars.py, its lr schedule, the probe and the command."""

import json
import math
import sys

import pytest
import torch

from mim_hub.training.probe_mae import LARS, lr_at, mae_linear_probe


def test_lars_step_matches_its_definition():
    torch.manual_seed(0)
    w, b = torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(3))
    gw, gb = torch.randn(3, 4), torch.randn(3)
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt = LARS([w, b], lr=0.5, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)
    for step in range(2):
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
    # by hand: matrices get weight decay and the trust ratio, 1-D parameters neither
    mu_w, mu_b, ww, bb = torch.zeros(3, 4), torch.zeros(3), w0.clone(), b0.clone()
    for step in range(2):
        dw = gw + 0.1 * ww
        dw = dw * (0.001 * ww.norm() / dw.norm())
        mu_w = 0.9 * mu_w + dw
        ww = ww - 0.5 * mu_w
        mu_b = 0.9 * mu_b + gb
        bb = bb - 0.5 * mu_b
    assert torch.allclose(w, ww, atol=1e-6) and torch.allclose(b, bb, atol=1e-6)
    zero = torch.nn.Parameter(torch.zeros(2, 2))
    zero.grad = torch.ones(2, 2)
    LARS([zero], lr=1.0).step()  # |w| = 0: the ratio is 1
    assert torch.allclose(zero, -torch.ones(2, 2))


def test_lr_schedule_warmup_then_cosine():
    assert lr_at(0, lr=1.0, epochs=90, warmup_epochs=10) == 0.0
    assert lr_at(5, lr=1.0, epochs=90, warmup_epochs=10) == pytest.approx(0.5)
    assert lr_at(10, lr=1.0, epochs=90, warmup_epochs=10) == pytest.approx(1.0)
    assert lr_at(50, lr=1.0, epochs=90, warmup_epochs=10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(90, lr=1.0, epochs=90, warmup_epochs=10) == pytest.approx(0.0, abs=1e-12)


def test_probe_learns_separable_features_with_accumulation():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    y = torch.arange(400) % 4
    x = centres[y] + torch.randn(400, 16, generator=g)
    result = mae_linear_probe(x[:300], y[:300], x[300:], y[300:], effective_batch=256, batch_size=64, epochs=30, warmup_epochs=3)
    assert result["linear_mae_accumulation"] == 4 and result["linear_mae_effective_batch"] == 256
    assert result["linear_mae_lr"] == pytest.approx(0.1)
    assert result["linear_mae"] > 0.9
    # a dataset smaller than the effective batch: the batch is the dataset
    small = mae_linear_probe(x[:300], y[:300], x[300:], y[300:], epochs=2, warmup_epochs=1)
    assert small["linear_mae_effective_batch"] <= 300
    with pytest.raises(ValueError):
        mae_linear_probe(x, y, x, y, batch_size=1)


@pytest.mark.slow
def test_eval_command_with_the_mae_probe(tmp_path):
    from mim_hub import MAEConfig, MAEForPreTraining, MAEImageProcessor
    from mim_hub.cli import main

    folder = tmp_path / "tiny"
    torch.manual_seed(0)
    MAEForPreTraining(MAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                                decoder_intermediate_size=64)).save_pretrained(folder)
    MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(folder)
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(folder), "--protocol", "linear", "--probe", "mae", "--linear-epochs", "3",
                 "--probe-batch-size", "256", "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    assert 0 <= results["linear_mae"] <= 1 and results["linear_mae_effective_batch"] == 1280 and results["linear_mae_accumulation"] == 5
    assert results["linear_mae_lr"] == pytest.approx(0.1 * 1280 / 256)
