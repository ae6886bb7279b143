"""MR-MAE / ConvMAE: parity with the original code (ConvMAE's pre-training, encoder-only and
fine-tuned files), the general converter, masked convolution, round trips, Auto classes, errors."""

import argparse

import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoModelForPreTraining

from mim_hub import MRMAEConfig, MRMAEForImageClassification, MRMAEForPreTraining, MRMAEImageProcessor, MRMAEModel
from mim_hub.conversion import CheckpointError, convert_checkpoint

from conftest import assert_close, load_fixture

# a tiny hybrid: 32x32 images, stages 16 -> 8 -> 4x4 tokens
TINY = dict(image_size=32, patch_size=8, conv_hidden_sizes=[8, 12], conv_depths=[1, 1], conv_patch_sizes=[2, 2],
            conv_intermediate_sizes=[16, 24], hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32)


@pytest.fixture(scope="module")
def pretrain_fixture():
    path, inputs, expected, meta = load_fixture("mr_mae", "pretrain-full")
    model, processor = convert_checkpoint("mr_mae", path, meta["bars_overrides"])
    return model, processor, path, inputs, expected, meta


def test_pretrain_fixture_parity(pretrain_fixture):
    model, processor, _, inputs, expected, meta = pretrain_fixture
    assert isinstance(model, MRMAEForPreTraining) and model.config.backbone == "convvit" and not model.config.use_cls_token
    assert model.config.conv_hidden_sizes == [16, 24] and model.config.patch_size == 16 and model.config.norm_pix_loss
    captured = {}
    hooks = [model.mr_mae.embeddings.fusion[i].register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i, out.flatten(2).transpose(1, 2)))
             for i in (0, 1)]
    with torch.no_grad():
        out = model(inputs["pixel_values"], noise=inputs["noise"], output_hidden_states=True)
        encoded = model.mr_mae(inputs["pixel_values"], noise=inputs["noise"])
    for hook in hooks:
        hook.remove()
    assert_close(out.loss, expected["loss"], "loss")
    assert_close(out.reconstruction_loss, expected["loss"], "reconstruction_loss")
    assert out.mimic_loss.item() == 0.0 and out.mimic_losses is None  # no teachers: no terms
    assert_close(out.logits, expected["pred"], "pred")
    assert torch.equal(out.mask, expected["mask"].float())
    assert torch.equal(out.ids_restore, expected["ids_restore"])
    assert torch.equal(encoded.ids_keep, expected["ids_keep"])
    assert_close(out.last_hidden_state, expected["latent"], "latent")
    # the last transformer block's output, before the fusion and the norm
    assert_close(out.hidden_states[model.config.num_hidden_layers], expected["blocks3_output_visible"], "blocks3")
    assert_close(captured[0], expected["stage1_embed_full"], "stage1_output_decode")
    assert_close(captured[1], expected["stage2_embed_full"], "stage2_output_decode")
    assert processor.crop_size == {"height": 224, "width": 224}


def test_encoder_only_fixture_parity():
    path, inputs, expected, meta = load_fixture("mr_mae", "pretrain-encoder-only")
    model, _ = convert_checkpoint("mr_mae", path, meta["bars_overrides"])
    assert type(model) is MRMAEModel and model.embeddings.fusion is None
    with torch.no_grad():
        out = model(inputs["pixel_values"], output_hidden_states=True)
    assert_close(out.last_hidden_state, expected["last_hidden_state"], "last_hidden_state")
    assert_close(out.hidden_states[-1], expected["blocks3_output"], "blocks3")
    assert_close(out.pooler_output, expected["pooled_token0"], "forward_features")
    assert_close(out.hidden_states[-1].mean(1), expected["mean_pooled_prenorm"], "mean")


def test_finetune_fixture_parity():
    path, inputs, expected, meta = load_fixture("mr_mae", "finetune-classifier")
    model, _ = convert_checkpoint("mr_mae", path, meta["bars_overrides"])
    assert isinstance(model, MRMAEForImageClassification) and model.config.use_mean_pooling and model.config.num_labels == 10
    assert model.mr_mae.embeddings.pos_embed.requires_grad  # learnable in fine-tuning
    with torch.no_grad():
        out = model(inputs["pixel_values"], labels=inputs["labels"], output_hidden_states=True)
        encoded = model.mr_mae(inputs["pixel_values"])
    assert_close(out.logits, expected["logits"], "logits")
    assert_close(out.loss, expected["loss_ce"], "loss")
    assert_close(encoded.pooler_output, expected["pooled_features"], "features")
    assert_close(out.hidden_states[-1], expected["blocks3_output"], "blocks3")


def test_training_checkpoint_with_namespace_and_a_plain_vit_in_mae_layout(tmp_path):
    # a ConvMAE training checkpoint: model + optimizer-like entries + an argparse Namespace
    path, inputs, expected, _ = load_fixture("mr_mae", "pretrain-full")
    state = torch.load(path, weights_only=True)["model"]
    args = argparse.Namespace(model="convmae_convvit_base_patch16", norm_pix_loss=True, mask_ratio=0.75, input_size=224)
    target = tmp_path / "checkpoint-399.pth"
    torch.save({"model": state, "epoch": 399, "args": args, "optimizer": {"state": {}}}, target)
    model, _ = convert_checkpoint("mr_mae", str(target), {"num_attention_heads": 4, "decoder_num_attention_heads": 4})
    assert model.config.norm_pix_loss and model.config.mask_ratio == 0.75
    with torch.no_grad():
        assert_close(model(inputs["pixel_values"], noise=inputs["noise"]).loss, expected["loss"], "loss")
    # MR-MAE's plain ViT: MAE's layout, MAE's numbers
    path, inputs, expected, meta = load_fixture("mae", "pretrain-full")
    model, _ = convert_checkpoint("mr_mae", path, meta["bars_overrides"])
    assert isinstance(model, MRMAEForPreTraining) and model.config.backbone == "vit"
    with torch.no_grad():
        out = model(inputs["pixel_values"], noise=inputs["noise"])
    assert_close(out.loss, expected["loss"], "vit loss")
    assert_close(out.logits, expected["pred"], "vit pred")


def _convmae_v2_state():
    """An encoder-only ConvMAE-v2 / MR-MCMAE-style file: fusion layers, mask token and a cls token kept."""
    path, inputs, _, _ = load_fixture("mr_mae", "pretrain-full")
    state = torch.load(path, weights_only=True)["model"]
    state = {k: v for k, v in state.items() if not k.startswith(("decoder_", "norm_pix"))}
    state["cls_token"] = torch.randn(1, 1, 32) * 0.02
    return state, inputs


def test_convmae_v2_encoder_with_cls_token_and_fusion(tmp_path):
    state, inputs = _convmae_v2_state()
    target = tmp_path / "convmae_v2_base.pth"
    torch.save({"model": state}, target)
    model, _ = convert_checkpoint("mr_mae", str(target), {"num_attention_heads": 4})
    assert type(model) is MRMAEModel and model.config.use_cls_token and model.config.use_multiscale_fusion
    table = model.embeddings.pos_embed
    assert table.shape == (1, 197, 32) and torch.equal(table[0, 0], torch.zeros(32)) and torch.equal(table[:, 1:], state["pos_embed"])
    with torch.no_grad():
        full = model(inputs["pixel_values"])
        masked = model(inputs["pixel_values"], noise=inputs["noise"])
    assert full.last_hidden_state.shape == (2, 197, 32)
    assert masked.last_hidden_state.shape == (2, 1 + 49, 32)
    assert_close(full.pooler_output, full.last_hidden_state[:, 0], "cls")
    # the fusion layers only act in the pre-training path
    model.embeddings.fusion = None
    with torch.no_grad():
        assert_close(model(inputs["pixel_values"]).last_hidden_state, full.last_hidden_state, "no fusion without masking")


def test_unknown_and_missing_keys_are_refused(tmp_path):
    path, _, _, _ = load_fixture("mr_mae", "pretrain-encoder-only")
    state = torch.load(path, weights_only=True)["model"]
    broken = dict(state)
    del broken["blocks2.0.conv1.weight"]
    broken["blocks3.0.attn.extra"] = torch.zeros(3)
    torch.save({"model": broken}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as error:
        convert_checkpoint("mr_mae", str(tmp_path / "bad.pth"), {"num_attention_heads": 4})
    assert "blocks3.0.attn.extra" in str(error.value)
    del broken["blocks3.0.attn.extra"]
    torch.save({"model": broken}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="stages.1.blocks.0.conv1.weight"):
        convert_checkpoint("mr_mae", str(tmp_path / "bad.pth"), {"num_attention_heads": 4})
    full = torch.load(load_fixture("mr_mae", "pretrain-full")[0], weights_only=True)["model"]
    del full["decoder_pred.weight"]
    torch.save({"model": full}, tmp_path / "no_pred.pth")
    with pytest.raises(CheckpointError, match="decoder_pred.weight"):
        convert_checkpoint("mr_mae", str(tmp_path / "no_pred.pth"), {"num_attention_heads": 4, "decoder_num_attention_heads": 4})
    torch.save({"model": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a ConvMAE"):
        convert_checkpoint("mr_mae", str(tmp_path / "other.pth"), {})
    with pytest.raises(ValueError, match="num_attention_heads"):
        convert_checkpoint("mr_mae", path, {"num_attention_heads": 5})
    with pytest.raises(ValueError, match="does not have"):
        convert_checkpoint("mr_mae", path, {"num_heads": 4})


def to_convmae_key(key: str) -> str:
    """Our key -> ConvMAE's name (the inverse of the converter's renaming, written independently)."""
    import re

    key = key[len("mr_mae."):] if key.startswith("mr_mae.") else key
    rules = [
        (r"^embeddings\.stages\.(\d)\.patch_embed\.projection\.", lambda m: f"patch_embed{int(m[1]) + 1}.proj."),
        (r"^embeddings\.stages\.(\d)\.patch_embed\.norm\.", lambda m: f"patch_embed{int(m[1]) + 1}.norm."),
        (r"^embeddings\.stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"blocks{int(m[1]) + 1}.{m[2]}."),
        (r"^embeddings\.patch_embed\.projection\.", lambda m: "patch_embed3.proj."),
        (r"^embeddings\.patch_embed\.norm\.", lambda m: "patch_embed3.norm."),
        (r"^embeddings\.patch_proj\.", lambda m: "patch_embed4."),
        (r"^embeddings\.fusion\.(\d)\.", lambda m: f"stage{int(m[1]) + 1}_output_decode."),
        (r"^embeddings\.", lambda m: ""),
        (r"^encoder\.layers\.(\d+)\.", lambda m: f"blocks3.{m[1]}."),
        (r"^decoder\.transformer\.layers\.(\d+)\.", lambda m: f"decoder_blocks.{m[1]}."),
        (r"^decoder\.", lambda m: ""),
        (r"^layernorm\.", lambda m: "norm."),
    ]
    for pattern, repl in rules:
        key, count = re.subn(pattern, repl, key)
        if count:
            break
    return key.replace(".dwconv.", ".attn.").replace("attn.qkv_proj.", "attn.qkv.").replace("attn.o_proj.", "attn.proj.")


OTHER_GEOMETRIES = {
    # 48 px, patches 2x2x2, odd widths, mlp ratio 3, no qkv bias, 7x7 depthwise kernel, empty stage 2
    "pretraining": (MRMAEForPreTraining, dict(image_size=48, patch_size=8, conv_hidden_sizes=[6, 10], conv_depths=[2, 0], conv_patch_sizes=[2, 2],
                                              conv_intermediate_sizes=[18, 40], conv_kernel_size=7, hidden_size=20, num_hidden_layers=3,
                                              num_attention_heads=5, intermediate_size=60, qkv_bias=False, decoder_hidden_size=12,
                                              decoder_num_hidden_layers=2, decoder_num_attention_heads=3, decoder_intermediate_size=18,
                                              mask_ratio=0.6, norm_pix_loss=False)),
    # 64 px, patches 4x2x2, token-0 classifier (final norm, no fc_norm), mlp ratio 2
    "classifier-token0": (MRMAEForImageClassification, dict(image_size=64, patch_size=16, conv_hidden_sizes=[8, 8], conv_depths=[1, 2],
                                                            conv_patch_sizes=[4, 2], conv_intermediate_sizes=[16, 16], hidden_size=24,
                                                            num_hidden_layers=2, num_attention_heads=3, intermediate_size=48, num_labels=5)),
    # 32 px, patches 2x4x1, mean pooling + fc_norm, 1 head
    "classifier-mean": (MRMAEForImageClassification, dict(image_size=32, patch_size=8, conv_hidden_sizes=[4, 8], conv_depths=[1, 1],
                                                          conv_patch_sizes=[2, 4], conv_intermediate_sizes=[8, 32], hidden_size=16,
                                                          num_hidden_layers=1, num_attention_heads=1, intermediate_size=16, num_labels=2,
                                                          use_mean_pooling=True)),
}


@pytest.mark.parametrize("name", sorted(OTHER_GEOMETRIES))
def test_other_geometries_convert_back_and_forth(name, tmp_path):
    """Our model -> ConvMAE keys (+ a Namespace) -> the converter -> the same config and numbers."""
    model_class, fields = OTHER_GEOMETRIES[name]
    config = MRMAEConfig(**fields)
    torch.manual_seed(1)
    model = model_class(config).eval()
    for param in model.parameters():
        param.data.add_(torch.randn_like(param) * 0.05)
    state = {to_convmae_key(k): v for k, v in model.state_dict().items()}
    assert len(state) == len(model.state_dict())
    args = argparse.Namespace(norm_pix_loss=False, mask_ratio=fields.get("mask_ratio", 0.75))
    torch.save({"model": state, "args": args, "epoch": 9}, tmp_path / "ckpt.pth")
    heads = {"num_attention_heads": fields["num_attention_heads"]}
    if "decoder_num_attention_heads" in fields:
        heads["decoder_num_attention_heads"] = fields["decoder_num_attention_heads"]
    converted, processor = convert_checkpoint("mr_mae", str(tmp_path / "ckpt.pth"), heads)
    assert type(converted) is model_class
    for field, value in fields.items():
        assert getattr(converted.config, field) == value, field
    side = fields["image_size"]
    pixels, noise = torch.randn(2, 3, side, side), torch.rand(2, (side // fields["patch_size"]) ** 2)
    with torch.no_grad():
        if model_class is MRMAEForPreTraining:
            a, b = model(pixels, noise=noise), converted(pixels, noise=noise)
            assert_close(b.loss, a.loss, "loss")
            assert b.last_hidden_state.shape == (2, int(noise.shape[1] * 0.4), 20)
        else:
            a, b = model(pixels), converted(pixels)
        assert_close(b.logits, a.logits, "logits")
    assert processor.crop_size == {"height": side, "width": side}


def test_masked_convolution_hides_the_masked_patches():
    """Every visible latent depends on visible pixels only: changing the masked patches changes nothing."""
    torch.manual_seed(0)
    model = MRMAEModel(MRMAEConfig(**TINY)).eval()
    pixels, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    with torch.no_grad():
        out = model(pixels, noise=noise)
        mask = out.mask.reshape(1, 1, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)
        changed = pixels + 5 * torch.randn_like(pixels) * mask
        again = model(changed, noise=noise)
        unmasked_path = model(changed)  # without a mask the convolutions see everything
        baseline = model(pixels)
    assert_close(again.last_hidden_state, out.last_hidden_state, "latent")
    assert not torch.allclose(unmasked_path.last_hidden_state, baseline.last_hidden_state)


def test_features_without_a_mask_are_every_patch_in_order():
    torch.manual_seed(0)
    config = MRMAEConfig(**TINY, use_multiscale_fusion=False)
    model = MRMAEModel(config).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(pixels)
        ordered = model(pixels, noise=torch.arange(16.0).expand(2, 16), mask_ratio=0.0)
    assert full.last_hidden_state.shape == (2, 16, 16) and full.mask is None
    assert_close(ordered.last_hidden_state, full.last_hidden_state, "in order")
    assert_close(full.pooler_output, full.last_hidden_state[:, 0], "token 0")


def test_round_trip_auto_classes_and_processor(tmp_path):
    torch.manual_seed(0)
    model = MRMAEForPreTraining(MRMAEConfig(**TINY, num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    MRMAEImageProcessor.for_image_size(32).save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "mr_mae"
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), MRMAEImageProcessor)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MRMAEForPreTraining)
    assert not loaded.mr_mae.embeddings.pos_embed.requires_grad
    pixels, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        assert torch.equal(loaded(pixels, noise=noise).logits, model(pixels, noise=noise).logits)
        encoder = AutoModel.from_pretrained(tmp_path).eval()
        assert type(encoder) is MRMAEModel and encoder.embeddings.fusion is not None
        assert torch.equal(encoder(pixels, noise=noise).last_hidden_state, model.mr_mae(pixels, noise=noise).last_hidden_state)
        classifier = AutoModelForImageClassification.from_pretrained(tmp_path)
        assert isinstance(classifier, MRMAEForImageClassification) and classifier(pixels).logits.shape == (2, 3)
    # the plain-ViT backbone, same classes
    vit = MRMAEForPreTraining(MRMAEConfig(backbone="vit", image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32, decoder_hidden_size=16,
                                          decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32))
    vit.save_pretrained(tmp_path / "vit")
    again = AutoModelForPreTraining.from_pretrained(tmp_path / "vit")
    assert again.config.use_cls_token and again(pixels).logits.shape == (2, 16, 192)


def test_clear_errors_for_inputs_and_configs():
    model = MRMAEModel(MRMAEConfig(**TINY)).eval()
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(1, 3, 36, 36), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="does not match"):
        model(torch.randn(1, 3, 48, 48))
    assert model(torch.randn(1, 3, 48, 48), interpolate_pos_encoding=True).last_hidden_state.shape == (1, 36, 16)
    with pytest.raises(ValueError, match="noise must be"):
        model(torch.randn(1, 3, 32, 32), noise=torch.rand(1, 15))
    for bad in ({"backbone": "swin"}, {"num_attention_heads": 3}, {"conv_patch_sizes": [4, 4]}, {"conv_depths": [1]},
                {"image_size": 36}, {"mask_ratio": 1.0}, {"conv_kernel_size": 4}, {"mimic_loss": "l3"}):
        with pytest.raises(ValueError):
            MRMAEConfig(**{**TINY, **bad})


def test_pretraining_loss_trains_a_tiny_model():
    torch.manual_seed(0)
    model = MRMAEForPreTraining(MRMAEConfig(**TINY))
    model.train()
    pixels = torch.nn.functional.interpolate(torch.randn(4, 3, 4, 4), size=32, mode="bilinear")  # smooth images
    noise = torch.rand(4, 16)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(10):
        loss = model(pixels, noise=noise).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    stage1 = model.mr_mae.embeddings.stages[0].blocks[0].dwconv.weight
    assert stage1.grad is not None and stage1.grad.abs().sum() > 0
    assert model.mr_mae.embeddings.fusion[0].weight.grad.abs().sum() > 0
    assert loss.item() < 0.9 * first


def test_pipelines_remote_code_and_the_converted_folder(tmp_path):
    import json

    import numpy as np
    from PIL import Image
    from transformers import pipeline

    from mim_hub.conversion import convert
    from mim_hub.hub.remote_code import save_with_code

    config = MRMAEConfig(**TINY, num_labels=3)
    processor = MRMAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False)
    classifier = MRMAEForImageClassification(config).eval()
    assert not classifier.config.use_multiscale_fusion and config.use_multiscale_fusion is False
    classifier.save_pretrained(tmp_path / "cls")
    processor.save_pretrained(tmp_path / "cls")
    image = Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8))
    assert np.array(pipeline("image-feature-extraction", model=str(tmp_path / "cls"))(image, pool=True)).shape == (1, 16)
    assert len(pipeline("image-classification", model=str(tmp_path / "cls"))(image, top_k=3)) == 3
    pre = MRMAEForPreTraining(MRMAEConfig(**TINY)).eval()
    pre.save_pretrained(tmp_path / "pre")
    processor.save_pretrained(tmp_path / "pre")
    out = pipeline("masked-image-reconstruction", model=str(tmp_path / "pre"))(image, seed=0)
    assert out["loss"] > 0
    save_with_code(classifier, processor, str(tmp_path / "code"))
    assert json.loads((tmp_path / "code" / "config.json").read_text())["auto_map"]["AutoModelForImageClassification"].endswith("MRMAEForImageClassification")
    # the converter's folder: weights, processor and the MR-MAE card
    path, _, _, meta = load_fixture("mr_mae", "finetune-classifier")
    convert("mr_mae", path, str(tmp_path / "converted"), config=meta["bars_overrides"])
    card = (tmp_path / "converted" / "README.md").read_text()
    assert "Mimic before Reconstruct" in card and "{{" not in card and "MRMAEForImageClassification" in card
    assert json.loads((tmp_path / "converted" / "config.json").read_text())["architectures"] == ["MRMAEForImageClassification"]
