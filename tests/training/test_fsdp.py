"""FSDP2 on CPU: our model and loss under torch's `fully_shard` in 2 gloo processes give one
process's loss and gradients (Accelerate itself ignores FSDP on CPU; a GPU run is still to do)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mim_hub import MAEConfig, MAEForPreTraining
from mim_hub.training.distributed import block_classes, fsdp_plugin, trainer_fsdp_arguments

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_fully_shard_in_two_gloo_processes_matches_one_process(tmp_path):
    out = tmp_path / "fsdp.json"
    worker = Path(__file__).parents[1] / "fsdp_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", str(worker), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["is_dtensor"] == "DTensor" and result["checked"] > 10  # really sharded, every gradient compared
    assert result["loss_sharded"] == pytest.approx(result["loss_ref"], rel=1e-5)
    assert result["max_grad_diff"] < 1e-5


def test_fsdp_settings_name_the_blocks():
    model = MAEForPreTraining(MAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                        decoder_num_attention_heads=2, decoder_intermediate_size=64))
    assert {c.__name__ for c in block_classes(model)} == {"ViTBlock"}
    args = trainer_fsdp_arguments(model)
    assert args["fsdp"] is True and args["fsdp_config"]["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert args["fsdp_config"]["version"] == 2 and args["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["ViTBlock"]
    plugin = fsdp_plugin()
    assert plugin.fsdp_version == 2 and "SHARDED" in str(plugin.state_dict_type)


@pytest.mark.slow
def test_pretrain_fsdp_flag_runs_and_finetune_fsdp_on_cpu_is_refused(tmp_path):
    import torch

    from mim_hub import MAEImageProcessor
    from mim_hub.cli import main

    folder = tmp_path / "tiny"
    torch.manual_seed(0)
    MAEForPreTraining(MAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                                decoder_intermediate_size=64)).save_pretrained(folder)
    MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(folder)
    # on CPU Accelerate runs the plugin-less path; the final model is still written whole
    assert main(["pretrain", "--model", str(folder), "--output-dir", str(tmp_path / "pt"), "--batch-size", "16", "--max-steps", "2", "--fsdp"]) == 0
    assert (tmp_path / "pt" / "model.safetensors").exists()
    assert main(["pretrain", "--model", str(folder), "--output-dir", str(tmp_path / "pt2"), "--max-steps", "1", "--fsdp", "--model-ema"]) == 2
    # LAMB's norms would be a shard's: refused before anything is written
    assert main(["pretrain", "--model", str(folder), "--output-dir", str(tmp_path / "pt3"), "--max-steps", "1", "--fsdp", "--optimizer", "lamb"]) == 2
    assert not (tmp_path / "pt3").exists()
    if not torch.cuda.is_available():
        assert main(["finetune", "--model", str(folder), "--output-dir", str(tmp_path / "ft"), "--epochs", "1", "--fsdp"]) == 2
