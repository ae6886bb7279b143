"""SimMIM: parity with the original (ViT and Swin, pre-training and fine-tuned classifiers), the
mask generator bit for bit, relative position tables, other configurations through an independent
reference, round trips, Auto classes, errors, training."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    AutoModelForPreTraining,
)

import reference_simmim as ref
from conftest import FIXTURES, assert_close, load_fixture
from mim_hub import SimMIMConfig, SimMIMForImageClassification, SimMIMForPreTraining, SimMIMImageProcessor, SimMIMModel
from mim_hub.conversion import CheckpointError, convert_checkpoint
from mim_hub.masking import SimMIMMaskGenerator

TINY_VIT = dict(backbone="vit", image_size=32, patch_size=4, mask_patch_size=8, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=64)
TINY_SWIN = dict(backbone="swin", image_size=32, patch_size=2, mask_patch_size=8, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                 window_size=4)


def _strip(sd):
    return {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}


# ------------------------------------------------------------------------------------ golden fixtures


@pytest.mark.parametrize("variant", ["vit-pretrain", "swin-pretrain"])
def test_pretrain_fixture_parity(variant):
    path, inputs, expected, meta = load_fixture("simmim", variant)
    model, processor = convert_checkpoint("simmim", path, meta["bars_overrides"])
    assert isinstance(model, SimMIMForPreTraining) and model.config.backbone == variant.split("-")[0]
    with torch.no_grad():
        out = model(inputs["pixel_values"], bool_masked_pos=inputs["bool_masked_pos"])
        again = model(inputs["pixel_values"], bool_masked_pos=inputs["mask"])  # the int [B, h, w] mask of the original
    assert_close(out.loss, expected["loss"], "loss")
    assert_close(out.reconstruction, expected["x_rec"], "x_rec")
    assert out.logits is out.reconstruction
    assert_close(out.last_hidden_state, expected["last_hidden_state"], "last_hidden_state")
    assert torch.equal(out.mask, inputs["bool_masked_pos"].float())
    assert torch.equal(again.loss, out.loss) and torch.equal(again.reconstruction, out.reconstruction)
    # the independent reference agrees with the original too (it is then trusted on other configs)
    sd = torch.load(path, weights_only=True)["model"]
    heads = meta["bars_overrides"].get("num_heads", meta["bars_overrides"].get("num_attention_heads"))
    loss, x_rec, z = ref.simmim_pretrain(sd, inputs["pixel_values"], inputs["mask"], backbone=model.config.backbone, heads=heads,
                                         window=meta["model_builder"]["encoder_kwargs"].get("window_size"))
    assert_close(loss, expected["loss"], "reference loss")
    assert_close(x_rec, expected["x_rec"], "reference x_rec")
    assert_close(z, expected["encoder_output"], "reference encoder output")
    assert processor.crop_size == {"height": 32, "width": 32}


@pytest.mark.parametrize("variant", ["vit-finetune", "swin-finetune"])
def test_finetune_fixture_parity(variant):
    path, inputs, expected, meta = load_fixture("simmim", variant)
    model, _ = convert_checkpoint("simmim", path, meta["bars_overrides"])
    assert isinstance(model, SimMIMForImageClassification)
    with torch.no_grad():
        logits = model(inputs["pixel_values"]).logits
        encoded = model.simmim(inputs["pixel_values"])
    assert_close(logits, expected["logits"], "logits")
    assert_close(encoded.pooler_output, expected["pooled_output"], "pooled_output")
    assert_close(encoded.last_hidden_state, expected["last_hidden_state"], "last_hidden_state")
    sd = torch.load(path, weights_only=True)["model"]
    if model.config.backbone == "vit":
        ref_logits, _, _ = ref.vit_classify(sd, inputs["pixel_values"], 4)
    else:
        ref_logits, _, _ = ref.swin_classify(sd, inputs["pixel_values"], 4, [2, 4])
    assert_close(ref_logits, expected["logits"], "reference logits")


def test_heads_are_read_from_the_relative_tables():
    """Without --config the head counts come from the tables' widths (one column per head)."""
    for variant, check in (("vit-finetune", lambda c: c.num_attention_heads == 4), ("swin-pretrain", lambda c: c.num_heads == [2, 4])):
        path, _, _, _ = load_fixture("simmim", variant)
        model, _ = convert_checkpoint("simmim", path, {})
        assert check(model.config), variant
    path, _, _, _ = load_fixture("simmim", "vit-pretrain")
    assert convert_checkpoint("simmim", path, {})[0].config.encoder_stride == 4  # from the decoder's channels


def test_mask_generator_reproduces_the_original_bit_for_bit():
    folder = os.path.join(FIXTURES, "simmim", "mask-generator")
    inputs = torch.load(os.path.join(folder, "inputs.pt"), weights_only=True)
    expected = torch.load(os.path.join(folder, "expected.pt"), weights_only=True)
    rng = np.random.RandomState(int(inputs["seed"]))
    for i, (size, mask_patch, model_patch) in enumerate(inputs["settings_int"].tolist()):
        gen = SimMIMMaskGenerator(size, mask_patch, model_patch, float(inputs["mask_ratio"][i]))
        got = np.stack([gen(rng) for _ in range(int(inputs["num_calls"]))])
        assert got.dtype == np.int64 and np.array_equal(got, expected[f"masks_{i}"].numpy()), i
    # gen() draws from numpy's global legacy RNG, exactly as the original
    np.random.seed(int(inputs["seed"]))
    gen = SimMIMMaskGenerator(32, 8, 4, 0.6)
    assert np.array_equal(np.stack([gen() for _ in range(3)]), expected["masks_0"].numpy())
    # the fixtures' model masks came from the same procedure
    _, model_inputs, _, _ = load_fixture("simmim", "vit-pretrain")
    rng = np.random.RandomState(4)
    assert np.array_equal(np.stack([gen.gen(rng), gen.gen(rng)]), model_inputs["mask"].numpy())


@pytest.mark.parametrize("size,mask_patch,patch,ratio", [(192, 32, 4, 0.6), (224, 32, 16, 0.6), (32, 16, 2, 0.3), (64, 16, 16, 1.0)])
def test_mask_generator_counts_and_blocks(size, mask_patch, patch, ratio):
    gen = SimMIMMaskGenerator(size, mask_patch, patch, ratio)
    mask = gen(np.random.RandomState(1))
    scale = mask_patch // patch
    assert mask.shape == (size // patch, size // patch) and gen.grid_size == size // patch
    blocks = mask[::scale, ::scale]
    assert blocks.sum() == int(np.ceil((size // mask_patch) ** 2 * ratio))
    assert np.array_equal(np.kron(blocks, np.ones((scale, scale), dtype=np.int64)), mask)


def test_mask_generator_errors():
    with pytest.raises(ValueError, match="not a multiple of mask_patch_size"):
        SimMIMMaskGenerator(30, 8, 4, 0.6)
    with pytest.raises(ValueError, match="not a multiple of model_patch_size"):
        SimMIMMaskGenerator(32, 8, 3, 0.6)
    with pytest.raises(ValueError, match="mask_ratio"):
        SimMIMMaskGenerator(32, 8, 4, 1.5)


# -------------------------------------------------------------------------- relative position tables


def test_relative_position_index_and_bias_match_the_original_layout():
    from mim_hub.layers.relative_position import RelativePositionBias, relative_position_index

    for wh, ww in ((3, 3), (2, 4), (5, 1)):
        assert torch.equal(relative_position_index((wh, ww), cls_token=True), ref.rel_index(wh, ww, 1))
        assert torch.equal(relative_position_index((wh, ww), cls_token=False), ref.rel_index(wh, ww, 0))
    bias = RelativePositionBias((3, 4), num_heads=2)
    with torch.no_grad():
        bias.relative_position_bias_table.normal_()
    assert bias().shape == (2, 13, 13)
    assert torch.equal(bias(), ref.rel_bias(bias.relative_position_bias_table, 3, 4, 1))
    sd = torch.load(load_fixture("simmim", "vit-pretrain")[0], weights_only=True)["model"]
    assert torch.equal(sd["encoder.rel_pos_bias.relative_position_index"], relative_position_index(8))
    assert "relative_position_index" not in bias.state_dict()  # follows from the window


@pytest.mark.parametrize("old,new", [(6, 7), (7, 6), (12, 14), (3, 5), (8, 4)])
def test_table_resizing_equals_the_originals_bicubic_spline(old, new):
    """The original used scipy's interp2d(kind='cubic') (removed from scipy); on a grid that is
    FITPACK's interpolating bicubic spline, RectBivariateSpline(s=0), evaluated with clamping."""
    from scipy.interpolate import RectBivariateSpline

    from mim_hub.layers.relative_position import geometric_source_positions, resize_relative_position_table

    src, dst = 2 * old - 1, 2 * new - 1
    table = torch.randn(src * src + 3, 3, generator=torch.Generator().manual_seed(old * new))
    out = resize_relative_position_table(table, old, new, cls_token=True)
    assert out.shape == (dst * dst + 3, 3) and torch.equal(out[-3:], table[-3:])
    x = geometric_source_positions(src, dst).numpy()
    targets = np.clip(np.arange(-(dst // 2), dst // 2 + 0.1, 1.0), x[0], x[-1])
    for head in range(3):
        z = table[:-3, head].double().view(src, src).numpy()
        expected = RectBivariateSpline(x, x, z, kx=3, ky=3, s=0)(targets, targets)
        np.testing.assert_allclose(out[:-3, head].view(dst, dst).numpy(), expected, rtol=1e-5, atol=1e-6)
    # Swin tables (no cls entries) and the identity
    swin = torch.randn(src * src, 2)
    assert resize_relative_position_table(swin, old, new, cls_token=False).shape == (dst * dst, 2)
    assert torch.equal(resize_relative_position_table(swin, old, old, cls_token=False), swin)


# ------------------------------------------------------- other configurations through the reference


VIT_CASES = [
    dict(img=48, patch=8, dim=48, depth=3, heads=3, mlp_hidden=96),
    dict(img=32, patch=4, dim=32, depth=2, heads=2, mlp_hidden=48, shared=True, per_block=True, abs_pos=True, gamma=False),
    dict(img=32, patch=8, dim=32, depth=1, heads=4, mlp_hidden=64, shared=False, qv_bias=False),
]


@pytest.mark.parametrize("case", VIT_CASES)
def test_other_vit_pretraining_configurations(case, tmp_path):
    sd = ref.random_original_vit(**case)
    torch.save({"model": sd, "epoch": 3}, tmp_path / "ckpt.pth")
    overrides = {"num_attention_heads": case["heads"]}
    if not (case.get("shared", True) or case.get("per_block") or case.get("abs_pos")):
        overrides["image_size"] = case["img"]  # nothing in the file tells the image size
    model, _ = convert_checkpoint("simmim", str(tmp_path / "ckpt.pth"), overrides)
    assert model.config.image_size == case["img"]
    x = torch.randn(2, 3, case["img"], case["img"])
    side = case["img"] // case["patch"]
    mask = (torch.rand(2, side, side) < 0.5).long()
    with torch.no_grad():
        out = model(x, bool_masked_pos=mask)
    loss, x_rec, _ = ref.simmim_pretrain(sd, x, mask, backbone="vit", heads=case["heads"])
    assert_close(out.loss, loss, "loss")
    assert_close(out.reconstruction, x_rec, "x_rec")


def test_vit_classifier_with_cls_pooling_and_abs_positions(tmp_path):
    sd = ref.random_original_vit(img=32, patch=8, dim=32, depth=2, heads=2, mlp_hidden=64, shared=False, per_block=True, abs_pos=True,
                                 num_classes=5, pretrain=False)
    torch.save({"model": sd}, tmp_path / "ft.pth")
    model, _ = convert_checkpoint("simmim", str(tmp_path / "ft.pth"), {})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x).logits
    assert_close(logits, ref.vit_classify(sd, x, 2)[0], "logits")
    assert not model.config.use_mean_pooling and model.config.use_absolute_position_embeddings


SWIN_CASES = [
    # the last stage (4x4) fits in a window of 4: no shift there; 3 stages
    dict(img=64, patch=4, embed=16, depths=[2, 2, 2], heads=[1, 2, 4], window=4),
    # window 8 > stage resolution 4 of the last stage: the window shrinks to 4
    dict(img=64, patch=2, embed=8, depths=[2, 3, 2], heads=[2, 2, 4], window=8, mlp_ratio=2, ape=True),
    dict(img=32, patch=4, embed=16, depths=[3, 1], heads=[2, 2], window=2, qkv_bias=False, patch_norm=False),
]


@pytest.mark.parametrize("case", SWIN_CASES)
def test_other_swin_pretraining_configurations(case, tmp_path):
    sd = ref.random_original_swin(**case)
    torch.save({"model": sd}, tmp_path / "ckpt.pth")
    model, _ = convert_checkpoint("simmim", str(tmp_path / "ckpt.pth"), {})  # heads from the tables
    assert model.config.num_heads == case["heads"] and model.config.window_size == case["window"]
    assert model.config.image_size == case["img"]
    x = torch.randn(2, 3, case["img"], case["img"])
    side = case["img"] // case["patch"]
    mask = (torch.rand(2, side, side) < 0.5).long()
    with torch.no_grad():
        out = model(x, bool_masked_pos=mask.flatten(1).bool())
    loss, x_rec, _ = ref.simmim_pretrain(sd, x, mask, backbone="swin", heads=case["heads"], window=case["window"])
    assert_close(out.loss, loss, "loss")
    assert_close(out.reconstruction, x_rec, "x_rec")


def test_swin_classifier_other_configuration(tmp_path):
    case = dict(img=48, patch=4, embed=16, depths=[2, 2], heads=[2, 4], window=3, num_classes=7, pretrain=False)
    sd = ref.random_original_swin(**case)
    torch.save({"model": sd}, tmp_path / "ft.pth")
    model, _ = convert_checkpoint("simmim", str(tmp_path / "ft.pth"), {})
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert_close(model(x).logits, ref.swin_classify(sd, x, 3, [2, 4])[0], "logits")


def test_training_checkpoint_with_a_pickled_yacs_config(tmp_path, monkeypatch):
    """SimMIM's save_checkpoint stores the yacs CfgNode: read without running code, it supplies
    what shapes cannot tell (here the heads of a ViT without relative tables, and the image size)."""
    import types

    module = types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    module.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", types.ModuleType("yacs"))
    monkeypatch.setitem(sys.modules, "yacs.config", module)
    config = CfgNode(MODEL=CfgNode(TYPE="vit", VIT=CfgNode(NUM_HEADS=4, INIT_VALUES=0.1), DROP_PATH_RATE=0.1),
                     DATA=CfgNode(IMG_SIZE=32, MASK_PATCH_SIZE=16, MASK_RATIO=0.5))
    sd = ref.random_original_vit(img=32, patch=8, dim=32, depth=1, heads=4, mlp_hidden=64, shared=False)
    torch.save({"model": sd, "config": config, "epoch": 1}, tmp_path / "ckpt_epoch_1.pth")
    with pytest.raises(Exception):
        torch.load(tmp_path / "ckpt_epoch_1.pth", weights_only=True)  # not a plain tensor file
    monkeypatch.delitem(sys.modules, "yacs.config")  # the class need not exist to convert
    model, _ = convert_checkpoint("simmim", str(tmp_path / "ckpt_epoch_1.pth"), {})
    assert (model.config.num_attention_heads, model.config.image_size, model.config.mask_patch_size, model.config.mask_ratio) == (4, 32, 16, 0.5)
    x = torch.randn(1, 3, 32, 32)
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, :2] = 1
    with torch.no_grad():
        assert_close(model(x, bool_masked_pos=mask).loss, ref.simmim_pretrain(sd, x, mask, backbone="vit", heads=4)[0], "loss")


def test_finetuning_at_another_resolution_resizes_and_expands_tables(tmp_path):
    """As the original's load_pretrained: the shared pre-training table is copied into every block
    and resized (geometric spacing, bicubic spline) to the new patch grid."""
    from mim_hub.layers.relative_position import resize_relative_position_table

    path, _, _, _ = load_fixture("simmim", "vit-pretrain")
    shared = torch.load(path, weights_only=True)["model"]["encoder.rel_pos_bias.relative_position_bias_table"]
    overrides = {"image_size": 48, "encoder_stride": 4, "use_relative_position_bias": True, "use_shared_relative_position_bias": False}
    model, processor = convert_checkpoint("simmim", path, overrides)
    expected = resize_relative_position_table(shared, 8, 12)
    for layer in model.simmim.encoder.layers:
        assert torch.equal(layer.relative_position_bias.relative_position_bias_table.data, expected)
    assert model.simmim.relative_position_bias is None and processor.crop_size["height"] == 48
    assert torch.isfinite(model(torch.randn(1, 3, 48, 48)).loss)
    # Swin at another window: every table resized
    path, _, _, meta = load_fixture("simmim", "swin-pretrain")
    model, _ = convert_checkpoint("simmim", path, {"window_size": 2})
    assert model.simmim.encoder.layers[0].blocks[0].relative_position_bias.relative_position_bias_table.shape == (9, 2)
    assert torch.isfinite(model(torch.randn(1, 3, 32, 32)).loss)


def test_running_at_another_resolution():
    torch.manual_seed(0)
    model = SimMIMForImageClassification(SimMIMConfig(**TINY_VIT, num_labels=3, use_relative_position_bias=True)).eval()
    x = torch.randn(1, 3, 48, 48)
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        model(x)
    assert model(x, interpolate_pos_encoding=True).logits.shape == (1, 3)
    swin = SimMIMModel(SimMIMConfig(**TINY_SWIN)).eval()
    assert swin(torch.randn(1, 3, 64, 64), interpolate_pos_encoding=True).last_hidden_state.shape == (1, 256, 32)


# ------------------------------------------------------------------------------------------ the API


@pytest.mark.parametrize("tiny", [TINY_VIT, TINY_SWIN], ids=["vit", "swin"])
def test_round_trip_and_auto_classes(tiny, tmp_path):
    torch.manual_seed(0)
    model = SimMIMForPreTraining(SimMIMConfig(**tiny)).eval()
    model.save_pretrained(tmp_path / "m")
    SimMIMImageProcessor.for_image_size(32).save_pretrained(tmp_path / "m")
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "m"), SimMIMConfig)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path / "m"), SimMIMImageProcessor)
    x = torch.randn(2, 3, 32, 32)
    mask = torch.rand(2, model.config.image_size // model.config.patch_size, model.config.image_size // model.config.patch_size) < 0.5
    loaded = AutoModelForMaskedImageModeling.from_pretrained(tmp_path / "m").eval()
    assert type(loaded) is SimMIMForPreTraining
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path / "m")) is SimMIMForPreTraining
    with torch.no_grad():
        assert torch.equal(model(x, bool_masked_pos=mask).reconstruction, loaded(x, bool_masked_pos=mask).reconstruction)
        base = AutoModel.from_pretrained(tmp_path / "m").eval()
        assert type(base) is SimMIMModel
        assert torch.equal(base(x).last_hidden_state, model.simmim(x).last_hidden_state)
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path / "m", num_labels=4)
    assert type(classifier) is SimMIMForImageClassification and classifier(x).logits.shape == (2, 4)


@pytest.mark.parametrize("tiny", [TINY_VIT, TINY_SWIN], ids=["vit", "swin"])
def test_features_without_a_mask(tiny):
    model = SimMIMForPreTraining(SimMIMConfig(**tiny)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model.simmim(x, output_hidden_states=True, output_attentions=True)
        unmasked = model(x, bool_masked_pos=torch.zeros(2, (32 // tiny["patch_size"]) ** 2, dtype=torch.bool))
        again = model.simmim(x)
        once_more = model.simmim(x)
    assert torch.equal(once_more.last_hidden_state, again.last_hidden_state)  # deterministic, unshuffled
    torch.testing.assert_close(again.last_hidden_state, unmasked.last_hidden_state)
    assert plain.pooler_output.shape == (2, model.config.hidden_size)
    assert len(plain.hidden_states) == model.config.num_hidden_layers + 1 and len(plain.attentions) == model.config.num_hidden_layers
    for weights in plain.attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))
    # SDPA and the eager path (taken when attentions are asked for) agree
    torch.testing.assert_close(plain.last_hidden_state, again.last_hidden_state, rtol=1e-5, atol=1e-5)


def test_image_feature_extraction_pipeline(tmp_path):
    from PIL import Image
    from transformers import pipeline

    model = SimMIMModel(SimMIMConfig(**TINY_VIT, use_mean_pooling=True)).eval()
    model.save_pretrained(tmp_path / "m")
    SimMIMImageProcessor.for_image_size(32).save_pretrained(tmp_path / "m")
    extractor = pipeline("image-feature-extraction", model=str(tmp_path / "m"))
    image = Image.fromarray((np.random.RandomState(0).rand(40, 50, 3) * 255).astype(np.uint8))
    features = extractor(image, pool=True)
    assert np.asarray(features).reshape(-1).shape == (32,)


@pytest.mark.parametrize("tiny", [TINY_VIT, TINY_SWIN], ids=["vit", "swin"])
def test_pretraining_loss_trains_every_parameter(tiny):
    torch.manual_seed(0)
    model = SimMIMForPreTraining(SimMIMConfig(**tiny, drop_path_rate=0.0)).train()
    x = torch.nn.functional.interpolate(torch.randn(4, 3, 4, 4), size=32, mode="bilinear", align_corners=False)  # smooth images
    side = 32 // tiny["patch_size"]
    mask = torch.zeros(4, side, side, dtype=torch.bool)
    mask[:, : side // 2] = True
    model(x, bool_masked_pos=mask).loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = model(x, bool_masked_pos=mask).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.97 * losses[0], losses
    # gradient checkpointing gives the same gradients
    model.zero_grad()
    model(x, bool_masked_pos=mask).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.activation_checkpointing_enable()
    model.zero_grad()
    model(x, bool_masked_pos=mask).loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, plain[name], rtol=1e-4, atol=1e-6, msg=name)
    model.activation_checkpointing_disable()
    # a mask is drawn when none is given: ceil(blocks * ratio) blocks of mask_patch_size pixels
    out = model.eval()(x)
    blocks = (32 // tiny["mask_patch_size"]) ** 2
    scale = tiny["mask_patch_size"] // tiny["patch_size"]
    assert (out.mask.sum(1) == int(np.ceil(blocks * 0.6)) * scale * scale).all()


def test_loss_is_l1_on_masked_pixels_only():
    model = SimMIMForPreTraining(SimMIMConfig(**TINY_VIT)).eval()
    x = torch.randn(1, 3, 32, 32)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2, 3] = True
    out = model(x, bool_masked_pos=mask)
    expected = (x - out.reconstruction).abs()[:, :, 8:12, 12:16].sum() / (16 + 1e-5) / 3
    torch.testing.assert_close(out.loss, expected)


def test_plain_vit_equals_transformers_vit_for_masked_image_modeling(monkeypatch):
    """Configured as a plain ViT, ours is transformers' ViTForMaskedImageModeling (the model the
    benchmark's same-weights row times): the same loss, reconstruction and gradients."""
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
    from simmim_vs_transformers import plain_vit_pair, to_transformers_vit_state

    torch.manual_seed(0)
    dims = {k: v for k, v in TINY_VIT.items() if k not in ("backbone", "mask_patch_size")}
    ours, theirs = plain_vit_pair(dims)
    with torch.no_grad():  # non-zero biases, tokens and positions, so that every mapped tensor matters
        for name, parameter in ours.named_parameters():
            if parameter.dim() < 2 or "token" in name or "pos_embed" in name:
                parameter.normal_(0, 0.1)
    theirs.load_state_dict(to_transformers_vit_state(ours.state_dict()))
    x, mask = torch.randn(2, 3, 32, 32), torch.rand(2, 64) < 0.6
    a, b = ours.train()(x, bool_masked_pos=mask), theirs.train()(x, bool_masked_pos=mask)
    assert_close(a.loss, b.loss, "loss")
    assert_close(a.reconstruction, b.reconstruction, "reconstruction")
    a.loss.backward()
    b.loss.backward()
    assert_close(ours.simmim.embeddings.patch_embed.projection.weight.grad, theirs.vit.embeddings.patch_embeddings.projection.weight.grad, "grad")
    assert_close(ours.simmim.encoder.layers[0].attn.q_bias.grad, theirs.vit.layers[0].attention.q_proj.bias.grad, "q bias grad")


def test_layer_decay_ids_follow_the_original():
    swin = SimMIMForImageClassification(SimMIMConfig(**TINY_SWIN, num_labels=2))
    assert swin.layer_id("simmim.embeddings.patch_embed.projection.weight") == 0
    assert swin.layer_id("simmim.encoder.layers.0.blocks.1.attn.qkv_proj.weight") == 2
    assert swin.layer_id("simmim.encoder.layers.0.downsample.reduction.weight") == 2
    assert swin.layer_id("simmim.encoder.layers.1.blocks.0.mlp.fc1.weight") == 3
    assert swin.layer_id("head.weight") == swin.num_layers_for_decay() == 5
    vit = SimMIMForImageClassification(SimMIMConfig(**TINY_VIT, num_labels=2, use_relative_position_bias=True))
    assert vit.layer_id("simmim.encoder.layers.1.relative_position_bias.relative_position_bias_table") == 2
    assert "simmim.encoder.layers.1.relative_position_bias.relative_position_bias_table" in vit.no_weight_decay()


# ----------------------------------------------------------------------------------------- errors


def test_clear_errors_on_inputs():
    model = SimMIMForPreTraining(SimMIMConfig(**TINY_VIT)).eval()
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="does not match"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="bool_masked_pos must be"):
        model(torch.randn(1, 3, 32, 32), bool_masked_pos=torch.zeros(1, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="use_mask_token"):
        SimMIMModel(SimMIMConfig(**TINY_VIT))(torch.randn(1, 3, 32, 32), bool_masked_pos=torch.zeros(1, 64, dtype=torch.bool))


def test_impossible_configs_are_refused():
    with pytest.raises(ValueError, match="backbone"):
        SimMIMConfig(backbone="convnext")
    with pytest.raises(ValueError, match="encoder_stride"):
        SimMIMConfig(**TINY_VIT, encoder_stride=16)
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        SimMIMConfig(**{**TINY_VIT, "num_attention_heads": 5})
    with pytest.raises(ValueError, match="one entry per stage"):
        SimMIMConfig(**{**TINY_SWIN, "num_heads": [2]})
    with pytest.raises(ValueError, match="patch merging"):
        SimMIMConfig(**{**TINY_SWIN, "image_size": 36, "depths": [2, 2, 2], "num_heads": [1, 2, 4]})
    assert SimMIMConfig(backbone="swin").encoder_stride == 32 and SimMIMConfig().encoder_stride == 16


def test_converter_refuses_bad_checkpoints(tmp_path):
    path, _, _, meta = load_fixture("simmim", "vit-finetune")
    original = torch.load(path, weights_only=True)
    state = dict(original["model"])
    state["blocks.0.attn.extra"] = torch.zeros(2)
    torch.save({"model": state}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \['blocks.0.attn.extra"):
        convert_checkpoint("simmim", str(tmp_path / "extra.pth"), {})
    state = dict(original["model"])
    del state["blocks.1.mlp.fc2.bias"]
    torch.save({"model": state}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        convert_checkpoint("simmim", str(tmp_path / "missing.pth"), {})
    state = dict(original["model"])
    state["blocks.0.attn.relative_position_index"] = state["blocks.0.attn.relative_position_index"].flip(0)
    torch.save({"model": state}, tmp_path / "index.pth")
    with pytest.raises(CheckpointError, match="relative position index"):
        convert_checkpoint("simmim", str(tmp_path / "index.pth"), {})
    torch.save({"model": {"foo.weight": torch.zeros(1)}}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="not a SimMIM checkpoint"):
        convert_checkpoint("simmim", str(tmp_path / "foreign.pth"), {})
    with pytest.raises(ValueError, match="does not have"):
        convert_checkpoint("simmim", path, {"num_layers": 3})
    with pytest.raises(CheckpointError, match="divisible"):
        convert_checkpoint("simmim", path, {"num_attention_heads": 5})
    # a Swin shift mask that is not the one of its geometry
    spath, _, _, _ = load_fixture("simmim", "swin-finetune")
    state = dict(torch.load(spath, weights_only=True)["model"])
    state["layers.0.blocks.1.attn_mask"] = torch.zeros_like(state["layers.0.blocks.1.attn_mask"])
    torch.save({"model": state}, tmp_path / "mask.pth")
    with pytest.raises(CheckpointError, match="attn_mask"):
        convert_checkpoint("simmim", str(tmp_path / "mask.pth"), {})


@pytest.mark.slow
def test_convert_command_writes_a_loadable_folder(tmp_path):
    path, inputs, expected, meta = load_fixture("simmim", "swin-finetune")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mim_hub", "convert", "--method", "simmim", "--checkpoint", path, "--output",
                           str(tmp_path / "out"), "--config", json.dumps(meta["bars_overrides"])], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert_close(model(inputs["pixel_values"]).logits, expected["logits"], "logits")
    assert "SimMIM" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.slow
def test_pretrain_command_and_recipe(tmp_path):
    from mim_hub.training.recipes import get_recipe

    config = SimMIMConfig(**TINY_SWIN)
    recipe = get_recipe("simmim")(config)
    sample = recipe.sample_inputs(np.random.default_rng(0))
    assert sample["bool_masked_pos"].dtype == torch.bool and sample["bool_masked_pos"].shape == (256,)
    assert int(sample["bool_masked_pos"].sum()) == 10 * 16  # ceil(16 * 0.6) blocks of 4x4 patches
    model = SimMIMForPreTraining(config)
    model.save_pretrained(tmp_path / "m")
    SimMIMImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(tmp_path / "m")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mim_hub", "pretrain", "--method", "simmim", "--model", str(tmp_path / "m"),
                           "--output-dir", str(tmp_path / "run"), "--dataset", "digits", "--max-steps", "2", "--batch-size", "8",
                           "--save-every", "0", "--log-every", "1"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(np.isfinite(r["loss"]) for r in log)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["backbone"] == "swin"


def test_encoder_only_checkpoint_converts_to_the_base_model(tmp_path):
    path, inputs, expected, meta = load_fixture("simmim", "vit-pretrain")
    state = {k: v for k, v in torch.load(path, weights_only=True)["model"].items() if k.startswith("encoder.")}
    torch.save({"model": state}, tmp_path / "encoder.pth")
    model, _ = convert_checkpoint("simmim", str(tmp_path / "encoder.pth"), meta["bars_overrides"])
    assert type(model) is SimMIMModel and model.embeddings.mask_token is not None
    with torch.no_grad():
        out = model(inputs["pixel_values"], bool_masked_pos=inputs["bool_masked_pos"])
    assert_close(out.last_hidden_state, expected["last_hidden_state"], "last_hidden_state")


def test_expanding_the_shared_table_keeps_the_function(tmp_path):
    """Pre-training layout -> fine-tuning layout (a table per block) without changing outputs,
    and the result saves and loads as a per-block model."""
    torch.manual_seed(0)
    model = SimMIMForImageClassification(SimMIMConfig(**TINY_VIT, num_labels=3)).eval()
    with torch.no_grad():
        model.simmim.relative_position_bias.relative_position_bias_table.normal_()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x).logits
        model.simmim.expand_relative_position_bias()
        after = model(x).logits
    torch.testing.assert_close(after, before)
    assert model.config.use_relative_position_bias and not model.config.use_shared_relative_position_bias
    model.save_pretrained(tmp_path / "ft")
    loaded = SimMIMForImageClassification.from_pretrained(tmp_path / "ft").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, before)
    with pytest.raises(ValueError, match="shared relative position table"):
        loaded.simmim.expand_relative_position_bias()


@pytest.mark.slow
def test_finetune_expands_the_shared_relative_position_table_per_block(tmp_path):
    """A SimMIM ViT pre-trained with one shared relative position table fine-tunes with a table
    per block, each starting as the shared one (the original's load_pretrained)."""
    from mim_hub import SimMIMConfig, SimMIMForPreTraining, SimMIMImageProcessor
    from mim_hub.data import load_digits_dataset
    from mim_hub.training.finetune import finetune

    config = SimMIMConfig(backbone="vit", image_size=32, patch_size=4, mask_patch_size=8, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=64, use_shared_relative_position_bias=True)
    model = SimMIMForPreTraining(config)
    shared = model.simmim.relative_position_bias
    assert shared is not None
    with torch.no_grad():
        shared.relative_position_bias_table.normal_()
    pre = tmp_path / "pre"
    model.save_pretrained(pre)
    SimMIMImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(pre)
    train, test = load_digits_dataset("train").subset(range(32)), load_digits_dataset("test").subset(range(16))
    trainer, _ = finetune(str(pre), train, test, output_dir=str(tmp_path / "ft"), epochs=1, batch_size=16, base_lr=1e-12,
                          drop_path=0.0, log_to_console=False)  # (lr must be > 0: a step that moves nothing measurable)
    tuned = trainer.model
    assert tuned.config.use_shared_relative_position_bias is False and tuned.config.use_relative_position_bias is True
    for layer in tuned.simmim.encoder.layers:
        torch.testing.assert_close(layer.relative_position_bias.relative_position_bias_table, shared.relative_position_bias_table)
