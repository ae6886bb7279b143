"""Every method's encoder as a transformers backbone: loading from the converted fixtures, the
feature maps, AutoBackbone / load_backbone, and UperNet on top (tiny configs)."""

import logging
import os

import pytest
import torch
import transformers
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForSemanticSegmentation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)
from transformers.backbone_utils import load_backbone

import mim_hub
from mim_hub.conversion import convert_checkpoint

from conftest import FIXTURES, load_fixture
from tiny_models import TINY, method_of, tiny

BACKBONES = {"mae": mim_hub.MAEBackbone, "simmim": mim_hub.SimMIMBackbone, "cae": mim_hub.CAEBackbone, "mr_mae": mim_hub.MRMAEBackbone,
             "color_mae": mim_hub.ColorMAEBackbone, "crate_mae": mim_hub.CrateMAEBackbone, "hpm": mim_hub.HPMBackbone}
CHECKPOINTS = [(method, variant) for method in sorted(BACKBONES) for variant in sorted(os.listdir(os.path.join(FIXTURES, method)))
               if "mask" not in variant]  # (mask-generator folders hold no model)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_warnings():
    """Warnings transformers logs (its logger does not propagate to pytest's caplog)."""
    handler = _Records()
    logger = transformers.utils.logging.get_logger("transformers")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


@pytest.mark.parametrize("method,variant", CHECKPOINTS)
def test_backbone_loads_every_converted_fixture(method, variant, tmp_path, transformers_warnings):
    path, inputs, _, meta = load_fixture(method, variant)
    model, _ = convert_checkpoint(method, path, meta.get("bars_overrides"))
    model.save_pretrained(tmp_path)
    backbone, info = BACKBONES[method].from_pretrained(tmp_path, out_indices=[-2, -1], output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not [m for m in transformers_warnings if "not initialized" in m or "not used" in m], transformers_warnings
    backbone.eval()
    pixels = inputs["pixel_values"][:2]
    encoder = AutoModel.from_pretrained(tmp_path).eval()  # the same checkpoint as a base model
    with torch.no_grad():
        maps = backbone(pixels).feature_maps
        stages, _ = encoder._feature_stages(pixels)
    expected = [stage.as_map() for name, stage in zip(backbone.stage_names, stages) if name in backbone.out_features]
    assert len(maps) == 2 and backbone.out_features == backbone.stage_names[-2:]
    for got, want in zip(maps, expected):
        torch.testing.assert_close(got, want)
    assert backbone.channels == [m.shape[1] for m in maps]


@pytest.mark.parametrize("key", sorted(TINY))
def test_auto_backbone_from_config_and_load_backbone(key, tmp_path):
    config, _ = tiny(key)
    AutoModel.from_config(config).save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path, out_indices=[0, -1])
    backbone = AutoBackbone.from_config(loaded)
    assert isinstance(backbone, BACKBONES[method_of(key)])
    assert backbone.out_features == [loaded.stage_names[0], loaded.stage_names[-1]]
    wrapper = UperNetConfig(backbone_config=loaded.to_dict(), num_labels=3, hidden_size=16, auxiliary_channels=8, use_auxiliary_head=False)
    assert isinstance(load_backbone(wrapper), BACKBONES[method_of(key)])
    # other input sizes than the config's (interpolated positions; CRATE keeps its size)
    size = 32 if key == "crate_mae" else 64
    with torch.no_grad():
        maps = backbone.eval()(torch.randn(1, 3, size, size)).feature_maps
    assert maps[-1].dim() == 4 and maps[-1].shape[0] == 1


def _segmentation_stages(key, config):
    if key == "mr_mae":  # ConvMAE's hybrid: both convolution stages and the last block (strides 2, 4, 8)
        return ["conv1", "conv2", config.stage_names[-1]]
    return list(config.stage_names)  # stem + 2 blocks (ViT) or stem + 2 stages (Swin)


@pytest.mark.parametrize("key", sorted(TINY))
def test_upernet_on_every_backbone_trains_saves_and_reloads(key, tmp_path):
    config, _ = tiny(key)
    config.out_features = _segmentation_stages(key, config)
    upernet_config = UperNetConfig(backbone_config=config, num_labels=4, hidden_size=16, auxiliary_channels=8, pool_scales=[1, 2])
    torch.manual_seed(0)
    model = UperNetForSemanticSegmentation(upernet_config)
    pixels = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 4, (2, 32, 32))
    labels[:, :4] = 255  # ignored
    out = model(pixels, labels=labels)
    assert out.logits.shape == (2, 4, 32, 32) and torch.isfinite(out.loss)
    out.loss.backward()
    encoder = model.backbone.encoder
    assert encoder.get_input_embeddings().projection.weight.grad.abs().sum() > 0 if key != "crate_mae" else True
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("decode_head.") and p.requires_grad)
    model.eval().save_pretrained(tmp_path)
    reloaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded.backbone, BACKBONES[method_of(key)])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels).logits, model(pixels).logits)


def test_vit_feature_pyramid(tmp_path):
    """add_fpn: four blocks rescaled x4, x2, x1, x0.5 (strides 1, 2, 4, 8 for patch 4)."""
    config = mim_hub.MAEConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                               decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                               decoder_intermediate_size=64)
    mim_hub.MAEForPreTraining(config).save_pretrained(tmp_path)
    backbone, info = mim_hub.MAEBackbone.from_pretrained(tmp_path, out_indices=[1, 2, 3, 4], add_fpn=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert all(torch.isfinite(p).all() for p in backbone.neck.state_dict().values())
    with torch.no_grad():
        maps = backbone.eval()(torch.randn(2, 3, 32, 32)).feature_maps
    assert [tuple(m.shape[2:]) for m in maps] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    with pytest.raises(ValueError, match="exactly 4"):
        mim_hub.MAEBackbone(mim_hub.MAEConfig(**{**config.to_dict(), "out_features": None, "out_indices": [1, 2], "add_fpn": True}))
    swin, _ = tiny("simmim_swin")
    swin.add_fpn = True
    with pytest.raises(ValueError, match="already multi-scale"):
        mim_hub.SimMIMBackbone(swin)


def test_dpt_and_mask2former_take_our_backbones():
    from transformers import DPTConfig, DPTForDepthEstimation, Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    vit = mim_hub.MAEConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    depth = DPTForDepthEstimation(DPTConfig(backbone_config=vit, is_hybrid=False, neck_hidden_sizes=[16] * 4, reassemble_factors=[4, 2, 1, 0.5],
                                            fusion_hidden_size=16, image_size=32, patch_size=4, hidden_size=32))
    assert isinstance(depth.backbone, mim_hub.MAEBackbone)
    with torch.no_grad():
        tokens = depth.backbone(torch.randn(2, 3, 32, 32)).feature_maps
        assert [tuple(t.shape) for t in tokens] == [(2, 1 + 64, 32)] * 4  # cls first, then the patches
        predicted = depth(torch.randn(2, 3, 32, 32)).predicted_depth
    assert predicted.dim() == 3 and torch.isfinite(predicted).all()
    swin = mim_hub.SimMIMConfig(backbone="swin", image_size=64, patch_size=2, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                                window_size=2, mask_patch_size=16, out_features=["stage1", "stage2", "stage3", "stage4"])
    panoptic = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(
        backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64, dim_feedforward=64,
        decoder_layers=2, encoder_layers=1, num_queries=5, num_labels=3, num_attention_heads=2))
    with torch.no_grad():
        out = panoptic(torch.randn(2, 3, 64, 64))
    assert out.class_queries_logits.shape == (2, 5, 4) and out.masks_queries_logits.shape[:2] == (2, 5)
