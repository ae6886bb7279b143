"""CRATE-MAE and CRATE: parity with the original code, the blocks' math, white-box tools,
parameter count against MAE, round trips and errors."""

import argparse

import pytest
import torch
from transformers import AutoModel, AutoModelForImageClassification, AutoModelForPreTraining

from mim_hub import CrateMAEConfig, CrateMAEForImageClassification, CrateMAEForPreTraining, CrateMAEModel, MAEConfig, MAEForPreTraining
from mim_hub.conversion import CheckpointError, convert_checkpoint
from mim_hub.models.crate_mae.modeling_crate_mae import ISTA, MSSA
from mim_hub.models.crate_mae.whitebox import attention_maps, attention_picture, layer_statistics

from conftest import assert_close, load_fixture

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2)


def test_pretrain_fixture_parity():
    path, inputs, expected, meta = load_fixture("crate_mae", "pretrain-full")
    model, _ = convert_checkpoint("crate_mae", path, meta["bars_overrides"])
    assert isinstance(model, CrateMAEForPreTraining) and model.config.ista_lambda == 0.5
    with torch.no_grad():
        out = model(inputs["pixel_values"], noise=inputs["noise"], output_hidden_states=True)
        unmasked = model.crate(inputs["pixel_values"]).last_hidden_state
    assert_close(out.loss, expected["loss"], "loss")
    assert_close(out.logits, expected["pred"], "pred")
    assert torch.equal(out.mask, expected["mask"].float())
    assert torch.equal(out.ids_restore, expected["ids_restore"])
    assert_close(out.last_hidden_state, expected["latent"], "latent (every position)")
    for i in range(3):
        assert_close(out.hidden_states[i], expected["encoder_hidden_states"][i], f"encoder hidden {i}")
        assert_close(out.decoder_hidden_states[i], expected["decoder_hidden_states"][i], f"decoder hidden {i}")
    assert_close(unmasked, expected["latent_mask_ratio_0"], "features without masking")
    model.config.norm_pix_loss = True
    with torch.no_grad():
        assert_close(model(inputs["pixel_values"], noise=inputs["noise"]).loss, expected["loss_norm_pix_true"], "norm_pix loss")


def test_crate_classifier_fixture_parity():
    path, inputs, expected, meta = load_fixture("crate_mae", "crate-classifier")
    model, _ = convert_checkpoint("crate_mae", path, meta["bars_overrides"])
    assert isinstance(model, CrateMAEForImageClassification) and model.config.variant == "crate"
    assert model.config.ista_lambda == 0.1
    with torch.no_grad():
        out = model.crate(inputs["pixel_values"], output_hidden_states=True)
        assert_close(model(inputs["pixel_values"]).logits, expected["logits"], "logits")
    assert_close(out.last_hidden_state, expected["last_hidden_state"], "last layer (no final norm)")
    assert_close(out.pooler_output, expected["pooled"], "pooled cls token")
    for i in range(3):
        assert_close(out.hidden_states[i], expected["hidden_states"][i], f"hidden {i}")


def test_ista_and_mssa_by_hand():
    torch.manual_seed(0)
    ista = ISTA(4, step_size=0.1, lambd=0.5)
    ista.weight.data = torch.randn(4, 4)
    x = torch.randn(3, 4)
    d = ista.weight
    expected = torch.relu(x + 0.1 * (x @ d - x @ d.T @ d) - 0.05)
    assert torch.allclose(ista(x), expected)
    assert (ista(x) >= 0).all()  # no residual around it: a ReLU output
    mssa = MSSA(6, num_heads=2, head_size=3)
    z = torch.randn(1, 5, 6)
    w = mssa.qkv_proj(z).reshape(1, 5, 2, 3).transpose(1, 2)
    attn = torch.softmax(w @ w.transpose(-1, -2) * 3**-0.5, -1)
    manual = mssa.o_proj((attn @ w).transpose(1, 2).reshape(1, 5, 6))
    assert torch.allclose(mssa(z)[0], manual, atol=1e-6)
    assert isinstance(MSSA(6, 1, 6).o_proj, torch.nn.Identity)  # one head spanning the width: no projection


@pytest.mark.parametrize("heads,lam,norm_pix,ratio", [(1, 0.3, True, 0.5), (4, 0.1, False, 0.9)])
def test_other_configurations_round_trip_through_the_original_layout(tmp_path, heads, lam, norm_pix, ratio):
    """Our model exported under the original keys converts back to the same numbers."""
    torch.manual_seed(1)
    config = CrateMAEConfig(**{**TINY, "num_attention_heads": heads, "decoder_num_attention_heads": heads, "ista_lambda": lam,
                               "norm_pix_loss": norm_pix, "mask_ratio": ratio})
    ours = CrateMAEForPreTraining(config).eval()
    original = {}
    for key, value in ours.state_dict().items():
        k = key.replace("crate.embeddings.patch_embed.projection.", "patch_embed.proj.").replace("crate.embeddings.pos_embed", "decoder_pos_embed")
        k = k.replace("crate.embeddings.", "").replace("crate.layernorm.", "norm.")
        for a, b in (("norm1", "layers.0.0.norm"), ("attn.qkv_proj", "layers.0.0.fn.qkv"), ("attn.o_proj", "layers.0.0.fn.to_out.0"),
                     ("norm2", "layers.0.1.norm"), ("ista", "layers.0.1.fn")):
            k = re_sub(r"^crate\.layers\.(\d+)\." + a.replace(".", r"\."), rf"blocks.\1.{b}", k)
        for a, b in (("norm1", "layers.0.0.norm"), ("dictionary", "layers.0.0.fn.weight"), ("norm2", "layers.0.1.norm"),
                     ("attn.qkv_proj", "layers.0.1.fn.qkv"), ("attn.o_proj", "layers.0.1.fn.to_out.0")):
            k = re_sub(r"^decoder\.layers\.(\d+)\." + a.replace(".", r"\."), rf"decoder_blocks.\1.{b}", k)
        original[k.replace("decoder.decoder_", "decoder_")] = value
    original["pos_embed"] = original["decoder_pos_embed"].clone()
    original["decoder_embed.weight"], original["decoder_embed.bias"] = torch.zeros(32, 32), torch.zeros(32)
    torch.save({"model": original, "args": argparse.Namespace(norm_pix_loss=norm_pix, mask_ratio=ratio)}, tmp_path / "c.pth")
    model, _ = convert_checkpoint("crate_mae", str(tmp_path / "c.pth"), {"num_attention_heads": heads, "decoder_num_attention_heads": heads, "ista_lambda": lam})
    assert model.config.norm_pix_loss is norm_pix and model.config.mask_ratio == ratio
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        assert_close(model(x, noise=noise).loss, ours(x, noise=noise).loss)


def re_sub(pattern, repl, text):
    import re

    return re.sub(pattern, repl, text)


def test_parameter_count_against_mae_at_base_size():
    """CRATE-MAE-Base has roughly 30% of the parameters of MAE with the same configuration."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        crate = CrateMAEForPreTraining(CrateMAEConfig())
        mae = MAEForPreTraining(MAEConfig(decoder_hidden_size=768, decoder_num_hidden_layers=12, decoder_num_attention_heads=12,
                                          decoder_intermediate_size=3072))
    ratio = sum(p.numel() for p in crate.parameters()) / sum(p.numel() for p in mae.parameters())
    assert 0.2 < ratio < 0.35, ratio


def test_white_box_tools():
    torch.manual_seed(0)
    model = CrateMAEForPreTraining(CrateMAEConfig(**TINY)).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = attention_maps(model, x)
    assert maps.shape == (2, 2, 2, 4, 4)
    # the cls token's attention to the patches: probabilities, the rest going to the cls token itself
    assert torch.isfinite(maps).all() and (maps >= 0).all() and (maps.sum((-1, -2)) < 1).all()
    stats = layer_statistics(model, x)
    assert len(stats) == 2 and all(0 <= s["sparsity"] <= 1 for s in stats)
    assert all(s["coding_rate"] > 0 and s["compressed_coding_rate"] > 0 for s in stats)
    assert stats[0]["sparsity"] > 0  # ISTA's ReLU zeroes coordinates
    picture = attention_picture(maps)
    assert picture.size == (2 * 50, 2 * 50)


def test_round_trip_auto_classes_and_errors(tmp_path):
    model = CrateMAEForPreTraining(CrateMAEConfig(**TINY))
    model.save_pretrained(tmp_path)
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is CrateMAEForPreTraining
    encoder = AutoModel.from_pretrained(tmp_path)
    assert type(encoder) is CrateMAEModel
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert_close(encoder(x).last_hidden_state, model.crate(x).last_hidden_state)
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3)
    out = classifier(x, labels=torch.tensor([1]))
    assert out.logits.shape == (1, 3) and out.loss.requires_grad
    with pytest.raises(ValueError, match="variant"):
        CrateMAEConfig(variant="vit")
    with pytest.raises(ValueError, match="decoder"):
        CrateMAEForPreTraining(CrateMAEConfig(**TINY, variant="crate"))
    with pytest.raises(ValueError, match="channels"):
        encoder(torch.randn(1, 1, 32, 32))
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 8)}}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        convert_checkpoint("crate_mae", str(tmp_path / "bad.pth"), {})
