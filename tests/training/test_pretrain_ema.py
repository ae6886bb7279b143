"""Model EMA in `mim-hub pretrain`: saved with each checkpoint (safetensors) and resumed, so that a
resumed run ends with the same EMA weights as the uninterrupted one."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from mim_hub import MAEConfig, MAEForPreTraining

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64)


def pretrain(model, out, *extra):
    from mim_hub.cli import main

    assert main(["pretrain", "--model", str(model), "--output-dir", str(out), "--dataset", "digits", "--batch-size", "16",
                 "--max-steps", "4", "--save-every", "2", "--keep-checkpoints", "5", "--lr", "1e-3", "--model-ema",
                 "--model-ema-decay", "0.5", *extra]) == 0


@pytest.mark.slow
def test_pretrain_ema_resumes_to_the_uninterrupted_weights(tmp_path):
    folder = tmp_path / "tiny"
    torch.manual_seed(0)
    MAEForPreTraining(MAEConfig(**TINY)).save_pretrained(folder)
    full = tmp_path / "full"
    pretrain(folder, full)
    checkpoint = full / "checkpoints" / "step_00000002"
    assert (checkpoint / "ema.safetensors").exists()
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoint, resumed / "checkpoints" / checkpoint.name)
    pretrain(folder, resumed, "--resume")
    expected, got = load_file(str(full / "ema" / "model.safetensors")), load_file(str(resumed / "ema" / "model.safetensors"))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    # the EMA is not the model: decay 0.5 over 4 steps lags behind the weights
    final = load_file(str(full / "model.safetensors"))
    assert any(not torch.equal(final[k], expected[k]) for k in expected if k in final)
    at_two = load_file(str(checkpoint / "ema.safetensors"))
    assert any(not torch.equal(at_two[k], expected[k]) for k in at_two if k in expected)
