"""Conversion hands the checkpoint's own tensors to the model (one copy in memory, not two)."""

import torch
from safetensors.torch import load_file

import mim_hub
from mim_hub.conversion.common import build_and_load


def _tiny_mae_state():
    config = mim_hub.MAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                               decoder_num_attention_heads=2, decoder_intermediate_size=64)
    torch.manual_seed(0)
    return config, mim_hub.MAEForPreTraining(config).state_dict()


def test_converted_parameters_are_the_checkpoint_tensors_not_copies():
    config, state = _tiny_mae_state()
    state = {k: v.clone() for k, v in state.items()}
    model = build_and_load(mim_hub.MAEForPreTraining, config, state, lambda k: k, "tiny.pth")
    loaded = model.state_dict()
    assert not any(t.is_meta for t in loaded.values())
    shared = [k for k in state if loaded[k].data_ptr() == state[k].data_ptr()]
    assert len(shared) == len(state), "every float32 contiguous tensor should be taken over, not copied"


def test_shared_or_strided_or_other_dtype_tensors_are_copied_and_save(tmp_path):
    config, state = _tiny_mae_state()
    state = {k: v.clone() for k, v in state.items()}
    key_a, key_b = "mae.encoder.layers.0.attn.o_proj.bias", "mae.encoder.layers.0.mlp.fc2.bias"
    state[key_b] = state[key_a]  # two keys, one storage (as a checkpoint with tied tensors)
    weight = "mae.encoder.layers.0.attn.o_proj.weight"
    state[weight] = state[weight].t().contiguous().t()  # a transposed view: not contiguous
    state["decoder.mask_token"] = state["decoder.mask_token"].double()
    model = build_and_load(mim_hub.MAEForPreTraining, config, state, lambda k: k, "tiny.pth")
    loaded = model.state_dict()
    assert loaded[key_a].data_ptr() != loaded[key_b].data_ptr()
    assert loaded[weight].is_contiguous() and torch.equal(loaded[weight], state[weight])
    assert loaded["decoder.mask_token"].dtype == torch.float32
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert torch.equal(saved[key_b], state[key_b]) and torch.equal(saved[key_a], state[key_a])
    reloaded = mim_hub.MAEForPreTraining.from_pretrained(tmp_path)
    x = torch.randn(1, 3, 32, 32)
    noise = torch.rand(1, 16)
    with torch.no_grad():
        assert torch.equal(reloaded(x, noise=noise).logits, model(x, noise=noise).logits)
