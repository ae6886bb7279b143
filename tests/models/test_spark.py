"""SparK: parity with the original code (golden fixtures, eval and training mode), conversion of
every released kind, the sparse encoder's invariants, the transformers export, and the public
surface (Auto classes, backbone, recipes, reconstruction, training)."""

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from transformers import (AutoBackbone, AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoModelForPreTraining,
                          ConvNextBackbone, ResNetBackbone)

import mim_hub
from mim_hub import SparKBackbone, SparKConfig, SparKForImageClassification, SparKForPreTraining, SparKImageProcessor, SparKModel
from mim_hub.conversion import CheckpointError, convert_checkpoint
from mim_hub.models.spark.export_transformers import to_transformers
from mim_hub.models.spark.modeling_spark import visible_cells

from conftest import assert_close, load_fixture

RESNET = dict(backbone="resnet", image_size=64, depths=[1, 2, 1, 1], hidden_sizes=[16, 32, 64, 64], embedding_size=8, decoder_hidden_size=64,
              drop_path_rate=0.0)
BASIC = dict(RESNET, layer_type="basic", depths=[2, 1, 1, 1], hidden_sizes=[8, 16, 32, 32])
CONVNEXT = dict(backbone="convnext", image_size=64, depths=[1, 2, 1, 1], hidden_sizes=[8, 16, 32, 64], decoder_hidden_size=64,
                drop_path_rate=0.0)
LAYOUTS = {"resnet": RESNET, "basic": BASIC, "convnext": CONVNEXT}


def _randomised(model, seed=0):
    """Weights away from their init (BatchNorm statistics, affine, layer scale, mask tokens)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dtype.is_floating_point:
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
    return model.eval()


def original_state(model: SparKForPreTraining) -> dict:
    """Our pre-training model's weights in the original `SparK.state_dict(with_config=True)` layout."""
    renames = (("spark.encoder.", "sparse_encoder.sp_cnn."), ("decoder.blocks.", "dense_decoder.dec."), ("decoder.proj.", "dense_decoder.proj."),
               ("densify.norms.", "densify_norms."), ("densify.projs.", "densify_projs."), ("densify.mask_tokens.", "mask_tokens."))
    state = {}
    for key, value in model.state_dict().items():
        old = next(o for n, o in renames if key.startswith(n))
        state[old + key[len(next(n for n, o in renames if key.startswith(n))):]] = value.clone()
    size = model.config.image_hw[0]
    state.update(imn_m=torch.zeros(1, 3, 1, 1), imn_s=torch.ones(1, 3, 1, 1), norm_black=torch.zeros(1, 3, size, size))
    state["config"] = {"mask_ratio": model.config.mask_ratio, "densify_norm_str": model.config.densify_norm, "sbn": False, "hierarchy": 4,
                       "sparse_encoder.input_size": size, "dense_decoder.width": model.config.decoder_hidden_size}
    return state


# ---- parity with the original code's outputs (golden fixtures) ----

@pytest.mark.parametrize("variant", ["resnet-pretrain-full", "convnext-pretrain-full"])
def test_pretrain_fixture_parity_eval_and_train(variant):
    path, inputs, expected, meta = load_fixture("spark", variant)
    model, processor = convert_checkpoint("spark", path, meta["bars_overrides"])
    assert isinstance(model, SparKForPreTraining) and model.config.densify_norm == meta["tiny_config"]["densify_norm"]
    assert model.config.mask_ratio == 0.6 and model.config.image_size == 64 and isinstance(processor, SparKImageProcessor)
    with torch.no_grad():
        by_noise = model(inputs["pixel_values"], noise=inputs["noise"], output_hidden_states=True)
        by_mask = model(inputs["pixel_values"], bool_masked_pos=inputs["bool_masked_pos"])
        densified = model.densify(list(by_noise.hidden_states[1:]), mim_hub.models.spark.sparse.VisibleMask(inputs["active_b1ff"]))
    for out in (by_noise, by_mask):
        assert_close(out.loss, expected["loss"], "loss")
        assert_close(out.reconstruction, expected["rec"], "rec")
        assert torch.equal(out.mask, expected["mask"])
    for stage, stride in enumerate((4, 8, 16, 32)):
        assert_close(by_noise.hidden_states[stage + 1], expected[f"sparse_feat_s{stride}"], f"sparse_feat_s{stride}")
    for index, stride in enumerate((32, 16, 8, 4)):
        assert_close(densified[index], expected[f"densified_s{stride}"], f"densified_s{stride}")
    # masked input and the pasted reconstruction of the original's vis=True
    visible = inputs["active_b1ff"].repeat_interleave(32, 2).repeat_interleave(32, 3)
    assert_close(inputs["pixel_values"] * visible, expected["masked_input"], "masked_input")
    # training mode: BatchNorm statistics of the visible positions only
    trained = copy.deepcopy(model).train()
    out = trained(inputs["pixel_values"], noise=inputs["noise"])
    assert_close(out.loss.detach(), expected["loss_train_mode"], "loss_train_mode")
    out.loss.backward()
    assert all(p.grad is not None for p in trained.parameters() if p.requires_grad)


@pytest.mark.parametrize("variant", ["resnet-encoder-timm-style", "convnext-encoder-official-style"])
def test_encoder_fixture_parity(variant):
    path, inputs, expected, meta = load_fixture("spark", variant)
    model, _ = convert_checkpoint("spark", path, meta["bars_overrides"])
    assert type(model) is SparKModel
    with torch.no_grad():
        out = model(inputs["pixel_values"], output_hidden_states=True)
    assert_close(out.last_hidden_state, expected["last_hidden_state"], "last_hidden_state")
    assert len(out.hidden_states) == 5  # the stem, then the four stages (ConvNextModel's convention)
    for stage, stride in enumerate((4, 8, 16, 32)):
        assert_close(out.hidden_states[stage + 1], expected[f"feat_s{stride}"], f"feat_s{stride}")
    assert_close(out.pooler_output, expected["last_hidden_state"].mean((-2, -1)) if "resnet" in variant
                 else torch.nn.functional.layer_norm(expected["last_hidden_state"].mean((-2, -1)), (64,), eps=1e-6), "pooler")


def test_the_original_mask_is_drawn_from_torch_rand_on_the_cpu():
    _, inputs, expected, meta = load_fixture("spark", "resnet-pretrain-full")
    assert torch.equal(visible_cells(inputs["noise"], 0.6).view(2, 1, 2, 2), inputs["active_b1ff"])
    model = SparKForPreTraining(SparKConfig(**dict(RESNET, hidden_sizes=[32, 64, 128, 128]))).eval()
    torch.manual_seed(meta["seed"] + 1)  # the fixture's draw: torch.manual_seed(seed + 1) right before model(x)
    assert torch.equal(model(inputs["pixel_values"]).mask, expected["mask"])


# ---- conversion of other configurations (held-out shapes) ----

@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("wrapped", [True, False])
def test_pretraining_file_of_any_layout_wrapped_or_bare(layout, wrapped, tmp_path):
    torch.manual_seed(0)
    ours = _randomised(SparKForPreTraining(SparKConfig(**LAYOUTS[layout], mask_ratio=0.5)))
    state = original_state(ours)
    path = tmp_path / "x_withdecoder_1kpretrained_spark_style.pth"
    torch.save({"args": "Namespace-as-a-string", "input_size": 64, "arch": layout, "epoch": 3, "module": state, "optimizer": {"state": {}},
                "is_pretrain": True} if wrapped else state, path)
    model, _ = convert_checkpoint("spark", str(path))  # no --config: sizes from shapes, mask ratio and size from the file
    assert model.config.mask_ratio == 0.5 and model.config.image_size == 64 and model.config.depths == LAYOUTS[layout]["depths"]
    pixels, noise = torch.randn(2, 3, 64, 64), torch.rand(2, 4)
    with torch.no_grad():
        a, b = ours(pixels, noise=noise), model(pixels, noise=noise)
    assert torch.equal(a.reconstruction, b.reconstruction) and torch.equal(a.loss, b.loss)


def test_densify_projection_is_the_identity_where_widths_match(tmp_path):
    """ConvNeXt-S (768 wide) with the 768-wide decoder has no densify_projs.0 in its file."""
    config = SparKConfig(**dict(CONVNEXT, hidden_sizes=[8, 16, 32, 64], decoder_hidden_size=64))
    model = SparKForPreTraining(config)
    assert isinstance(model.densify.projs[0], torch.nn.Identity)
    state = original_state(_randomised(model))
    assert not any(k.startswith("densify_projs.0.") for k in state)
    torch.save({"module": state}, tmp_path / "c.pth")
    converted, _ = convert_checkpoint("spark", str(tmp_path / "c.pth"))
    assert isinstance(converted.densify.projs[0], torch.nn.Identity)


def test_densify_norm_none_and_overrides(tmp_path):
    model = _randomised(SparKForPreTraining(SparKConfig(**RESNET, densify_norm="none")))
    torch.save({"module": original_state(model)}, tmp_path / "n.pth")
    converted, _ = convert_checkpoint("spark", str(tmp_path / "n.pth"), {"mask_ratio": 0.75})
    assert converted.config.densify_norm == "none" and converted.config.mask_ratio == 0.75
    assert converted(torch.randn(1, 3, 64, 64)).mask.sum() == 3  # round(4 * 0.25) = 1 visible


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_encoder_and_classifier_files(layout, tmp_path):
    torch.manual_seed(0)
    classifier = _randomised(SparKForImageClassification(SparKConfig(**LAYOUTS[layout], num_labels=5)))
    convnext = layout == "convnext"
    encoder = {k[len("spark.encoder."):]: v for k, v in classifier.state_dict().items() if k.startswith("spark.encoder.")}
    torch.save(encoder, tmp_path / "encoder.pth")
    model, _ = convert_checkpoint("spark", str(tmp_path / "encoder.pth"), {"image_size": 64})
    assert type(model) is SparKModel and model.config.layer_type == LAYOUTS[layout].get("layer_type", "bottleneck")
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(pixels).last_hidden_state, classifier.spark(pixels).last_hidden_state)
    full = dict(encoder, **({"norm.weight": classifier.spark.fc_norm.weight, "norm.bias": classifier.spark.fc_norm.bias} if convnext else {}))
    full.update({("head." if convnext else "fc.") + k: v for k, v in classifier.head.state_dict().items()})
    torch.save({"model": full}, tmp_path / "classifier.pth")
    converted, _ = convert_checkpoint("spark", str(tmp_path / "classifier.pth"), {"image_size": 64})
    assert type(converted) is SparKForImageClassification and converted.config.num_labels == 5
    with torch.no_grad():
        assert torch.equal(converted(pixels).logits, classifier(pixels).logits)


def test_converter_refuses_and_writes_nothing(tmp_path):
    state = original_state(SparKForPreTraining(SparKConfig(**RESNET)))
    state["dense_decoder.extra.weight"] = torch.zeros(3)
    torch.save({"module": state}, tmp_path / "bad.pth")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "mim_hub", "convert", "--method", "spark", "--checkpoint", str(tmp_path / "bad.pth"),
                           "--output", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2 and "dense_decoder.extra.weight" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    del state["dense_decoder.extra.weight"], state["sparse_encoder.sp_cnn.layer2.1.bn2.running_var"]
    torch.save({"module": state}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing keys .*layer2\.1\.bn2\.running_var"):
        convert_checkpoint("spark", str(tmp_path / "missing.pth"))
    torch.save({"model": {"blocks.0.weight": torch.zeros(2)}}, tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match="not a SparK checkpoint"):
        convert_checkpoint("spark", str(tmp_path / "vit.pth"))


# ---- the sparse encoder ----

@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_masked_cells_stay_zero_and_do_not_leak(layout):
    model = _randomised(SparKModel(SparKConfig(**LAYOUTS[layout])))
    pixels = torch.randn(2, 3, 64, 64)
    masked = torch.tensor([[True, False, False, True], [False, True, True, True]])
    changed = pixels.clone()
    changed[0, :, :32, :32] += 5  # a masked cell of image 0
    with torch.no_grad():
        a = model(pixels, bool_masked_pos=masked, output_hidden_states=True)
        b = model(changed, bool_masked_pos=masked, output_hidden_states=True)
        dense = model(pixels)
    for map_a, map_b in zip(a.hidden_states, b.hidden_states):
        assert torch.equal(map_a, map_b)  # what is masked never reaches the encoder
        grid = masked.view(2, 1, 2, 2).repeat_interleave(map_a.shape[-1] // 2, 2).repeat_interleave(map_a.shape[-1] // 2, 3)
        assert not map_a.masked_select(grid.expand_as(map_a)).any()
    assert torch.equal(a.mask, masked.float()) and dense.mask is None
    assert not torch.allclose(a.last_hidden_state, dense.last_hidden_state)


def test_sparse_batchnorm_trains_on_visible_positions_only():
    """Against the original's formulation: BatchNorm1d on the gathered visible vectors."""
    from mim_hub.models.spark.sparse import MaskedBatchNorm2d, VisibleMask

    norm, reference = MaskedBatchNorm2d(6).train(), torch.nn.BatchNorm1d(6).train()
    x = torch.randn(3, 6, 8, 8) * 3 + 1
    visible = torch.rand(3, 1, 2, 2) > 0.4
    mask = VisibleMask(visible)
    out = norm(mask.apply(x), mask)
    where = mask.at(8, 8).squeeze(1)
    expected = torch.zeros_like(x.permute(0, 2, 3, 1))
    expected[where] = reference(x.permute(0, 2, 3, 1)[where])
    assert_close(out, expected.permute(0, 3, 1, 2), "train output")
    assert_close(norm.running_mean, reference.running_mean, "running_mean")
    assert_close(norm.running_var, reference.running_var, "running_var")
    assert norm.num_batches_tracked == reference.num_batches_tracked == 1


def test_mask_arguments_are_checked():
    model = SparKForPreTraining(SparKConfig(**RESNET)).eval()
    pixels = torch.randn(2, 3, 64, 64)
    noise = torch.rand(2, 4)
    agreeing = ~visible_cells(noise, 0.6)
    assert torch.equal(model(pixels, noise=noise, bool_masked_pos=agreeing).mask, agreeing.float())
    with pytest.raises(ValueError, match="different masks"):
        model(pixels, noise=noise, bool_masked_pos=~agreeing)
    with pytest.raises(ValueError, match=r"noise must be \[batch, cells\] = \[2, 4\]"):
        model(pixels, noise=torch.rand(2, 16))
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(2, 3, 48, 64))
    assert model(pixels, mask_ratio=0.75).mask.sum(1).tolist() == [3, 3]
    assert model(torch.randn(1, 3, 96, 64)).mask.shape == (1, 6)  # other sizes: the grid follows the input


@pytest.mark.parametrize("bad, match", [
    (dict(depths=[1, 1, 1]), "4 stages"), (dict(image_size=48), "not divisible"), (dict(decoder_hidden_size=48), "divisible by 32"),
    (dict(hidden_sizes=[6, 16, 32, 64]), "multiples of 4"), (dict(backbone="vit"), "backbone must be"),
])
def test_config_refuses_impossible_combinations(bad, match):
    with pytest.raises(ValueError, match=match):
        SparKConfig(**{**RESNET, **bad})


def test_config_defaults_are_the_released_models():
    resnet, convnext = SparKConfig(), SparKConfig(backbone="convnext")
    assert (resnet.depths, resnet.hidden_sizes, resnet.densify_norm, resnet.decoder_hidden_size) == ([3, 4, 6, 3], [256, 512, 1024, 2048], "bn", 768)
    assert (convnext.depths, convnext.hidden_sizes, convnext.densify_norm) == ([3, 3, 27, 3], [96, 192, 384, 768], "ln")
    assert resnet.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"] and resnet.hidden_size == 2048


def test_layer_ids_are_the_original_fine_tuning_groups():
    """downstream_imagenet/models/__init__.py: ResNet-50 ids 0..7, ConvNeXt-S ids 0..13."""
    with torch.device("meta"):
        resnet = SparKForImageClassification(SparKConfig(num_labels=10))
        convnext = SparKForImageClassification(SparKConfig(backbone="convnext", num_labels=10))
    assert resnet.num_layers_for_decay() == 7 and convnext.num_layers_for_decay() == 13
    ids = {name: resnet.layer_id(name) for name, _ in resnet.named_parameters()}
    assert ids["spark.encoder.conv1.weight"] == 0 and ids["spark.encoder.layer1.2.conv1.weight"] == 1
    assert [ids[f"spark.encoder.layer2.{b}.conv1.weight"] for b in range(4)] == [2, 2, 3, 3]
    assert [ids[f"spark.encoder.layer3.{b}.conv1.weight"] for b in range(6)] == [4, 4, 4, 5, 5, 5]
    assert ids["spark.encoder.layer4.0.conv1.weight"] == 6 and ids["head.weight"] == 7
    ids = {name: convnext.layer_id(name) for name, _ in convnext.named_parameters()}
    assert ids["spark.encoder.downsample_layers.0.0.weight"] == 0 and ids["spark.encoder.downsample_layers.2.1.weight"] == 3
    assert ids["spark.encoder.stages.2.26.dwconv.weight"] == 3 + 26 // 3 and ids["spark.encoder.stages.3.0.gamma"] == 12
    assert ids["spark.fc_norm.weight"] == 13 and ids["head.weight"] == 13


# ---- interop: transformers' own ConvNextModel / ResNetModel ----

@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_export_to_transformers_gives_equal_outputs(layout, tmp_path):
    classifier = _randomised(SparKForImageClassification(SparKConfig(**LAYOUTS[layout], num_labels=3)))
    exported = to_transformers(classifier)
    assert type(exported).__name__ == ("ConvNextModel" if layout == "convnext" else "ResNetModel")
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = classifier.spark(pixels, output_hidden_states=True), exported(pixels, output_hidden_states=True)
    assert_close(theirs.last_hidden_state, ours.last_hidden_state, "last_hidden_state")
    assert_close(theirs.pooler_output.flatten(1), ours.pooler_output, "pooler_output")
    for a, b in zip(theirs.hidden_states, ours.hidden_states, strict=True):
        assert_close(a, b, "hidden_states")
    # it drops into transformers' backbones (UperNet, Mask2Former, DETR read these) with the same maps as ours
    exported.save_pretrained(tmp_path / "hf")
    backbone_class = ConvNextBackbone if layout == "convnext" else ResNetBackbone
    stages = ["stage1", "stage2", "stage3", "stage4"]
    theirs = backbone_class.from_pretrained(tmp_path / "hf", out_features=stages).eval()
    classifier.save_pretrained(tmp_path / "ours")
    ours = SparKBackbone.from_pretrained(tmp_path / "ours", out_features=stages).eval()
    with torch.no_grad():
        for a, b in zip(theirs(pixels).feature_maps, ours(pixels).feature_maps, strict=True):
            if layout == "convnext":  # ConvNextBackbone adds a new LayerNorm (identity-initialised) on each returned map
                b = torch.nn.functional.layer_norm(b.permute(0, 2, 3, 1), b.shape[1:2], eps=1e-6).permute(0, 3, 1, 2)
            assert_close(a, b, "feature map")


# ---- the public surface ----

def test_round_trip_auto_classes_and_backbone(tmp_path):
    model = _randomised(SparKForPreTraining(SparKConfig(**CONVNEXT)))
    model.save_pretrained(tmp_path)
    SparKImageProcessor.for_image_size(64).save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is SparKConfig
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is SparKImageProcessor
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    pixels, noise = torch.randn(2, 3, 64, 64), torch.rand(2, 4)
    with torch.no_grad():
        assert torch.equal(loaded(pixels, noise=noise).reconstruction, model(pixels, noise=noise).reconstruction)
        base = AutoModel.from_pretrained(tmp_path).eval()
        assert torch.equal(base(pixels).last_hidden_state, model.spark(pixels).last_hidden_state)
    assert type(AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=4)) is SparKForImageClassification
    backbone = SparKBackbone.from_pretrained(tmp_path, out_indices=[1, 2, 3, 4]).eval()
    maps = backbone(pixels).feature_maps
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)]  # strides 4..32
    assert backbone.channels == [8, 16, 32, 64]
    assert type(AutoBackbone.from_config(AutoConfig.from_pretrained(tmp_path))) is SparKBackbone


def test_timm_style_hooks():
    model = _randomised(SparKForImageClassification(SparKConfig(**RESNET, num_labels=3)))
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(pixels)
        assert features.shape == (2, 64, 2, 2) and model.num_features == 64 and model.num_prefix_tokens == 0
        assert torch.equal(model.forward_head(features), model(pixels).logits)
        maps = model.forward_intermediates(pixels, intermediates_only=True)
        assert [m.shape[-1] for m in maps] == [16, 8, 4, 2]
        tokens = model.forward_intermediates(pixels, indices=1, output_fmt="NLC", intermediates_only=True)
        assert tokens[0].shape == (2, 4, 64)
    model.reset_classifier(7)
    assert model(pixels).logits.shape == (2, 7)


def test_image_processor_is_the_fine_tuning_eval_transform():
    processor = SparKImageProcessor()
    assert processor.size.shortest_edge == 235 and processor.crop_size.height == 224  # timm: floor(224 / 0.95), crop_pct 0.95
    assert SparKImageProcessor.for_image_size(384).size.shortest_edge == 404
    from PIL import Image
    image = Image.fromarray((torch.rand(300, 400, 3) * 255).byte().numpy())
    assert processor(image, return_tensors="pt").pixel_values.shape == (1, 3, 224, 224)


def test_reconstruct_and_probe_features():
    from mim_hub.reconstruction import reconstruct
    from mim_hub.training.evaluate import extract_features
    from mim_hub.data import load_images

    model = _randomised(SparKForPreTraining(SparKConfig(**RESNET)))
    pixels = torch.randn(2, 3, 64, 64)
    result = reconstruct(model, pixels, seed=[1, 2])
    assert result.reconstruction.shape == pixels.shape and result.mask.sum(1).tolist() == [2, 2]
    assert torch.equal(result.pasted * (1 - result.mask.view(2, 1, 2, 2).repeat_interleave(32, 2).repeat_interleave(32, 3)),
                       result.masked)
    images = load_images("digits", split="test")
    processor = SparKImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False)
    features = extract_features(model, processor, images, batch_size=64)
    assert features.shape == (len(images), 64) and torch.isfinite(features).all()


def test_pretrain_resumes_exactly(tmp_path):
    from kill_loop import run_until_paused
    from safetensors.torch import load_file

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    common = ["--model", "spark-resnet-tiny-digits", "--dataset", "digits", "--batch-size", "8", "--max-steps", "6", "--save-every", "2",
              "--log-every", "1"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([sys.executable, "-m", "mim_hub", "pretrain", "--output-dir", str(straight), *common], check=True, capture_output=True, env=env)
    paused, tail = run_until_paused([sys.executable, "-m", "mim_hub", "pretrain", "--output-dir", str(killed), *common], "step", 3)
    assert paused, tail
    subprocess.run([sys.executable, "-m", "mim_hub", "pretrain", "--output-dir", str(killed), "--resume", *common], check=True,
                   capture_output=True, env=env)
    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and any("running_mean" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    config = json.loads((straight / "config.json").read_text())
    assert config["model_type"] == "spark" and config["architectures"] == ["SparKForPreTraining"]
    # the paper's optimiser: LAMB clipping at 5, the weight decay on its cosine from 0.04 towards 0.2 (step 4 of 6)
    groups = torch.load(straight / "checkpoints" / "step_00000004" / "optimizer.bin", weights_only=True)["param_groups"]
    decayed = [g for g in groups if g["initial_weight_decay"]]
    assert groups and all(g["max_grad_norm"] == 5.0 for g in groups) and all(g["weight_decay"] == 0 for g in groups if g not in decayed)
    assert decayed and all(g["weight_decay"] == pytest.approx(0.2 + (0.04 - 0.2) * 0.5 * (1 + math.cos(math.pi * 4 / 5))) for g in decayed)


def test_public_names():
    for name in ("SparKConfig", "SparKModel", "SparKForPreTraining", "SparKForImageClassification", "SparKImageProcessor", "SparKBackbone"):
        assert name in mim_hub.__all__ and getattr(mim_hub, name)


def test_upernet_on_the_backbone_trains(tmp_path):
    from mim_hub.training.segmentation import build_upernet, param_groups_segmentation

    _randomised(SparKForPreTraining(SparKConfig(**RESNET))).save_pretrained(tmp_path)
    model = build_upernet(str(tmp_path), num_labels=3, channels=16, auxiliary_channels=8).train()
    assert model.config.backbone_config.out_features == ["stage1", "stage2", "stage3", "stage4"] and not model.config.backbone_config.add_fpn
    out = model(torch.randn(2, 3, 64, 64), labels=torch.randint(0, 3, (2, 64, 64)))
    assert out.logits.shape == (2, 3, 64, 64) and torch.isfinite(out.loss)
    out.loss.backward()
    groups = param_groups_segmentation(model, 0.05, 0.7)
    assert {g["layer_id"] for g in groups} == set(range(model.backbone.num_layers_for_decay() + 1))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["resnet", "convnext"])
def test_onnx_export_of_base_model_and_classifier(layout, tmp_path):
    """tests/models/test_onnx.py's check: dynamo export with a dynamic batch, onnxruntime at another batch."""
    import warnings

    onnxruntime = pytest.importorskip("onnxruntime")
    from test_onnx import BaseAndClassifier

    config = SparKConfig(**LAYOUTS[layout], num_labels=3)
    model = BaseAndClassifier(_randomised(SparKModel(config)), _randomised(SparKForImageClassification(config), seed=1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.randn(2, 3, 64, 64),), dynamo=True, input_names=["pixel_values"],
                                    output_names=["last_hidden_state", "pooler_output", "logits"],
                                    dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch")}}, verbose=False)
    program.save(str(tmp_path / "model.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 64, 64)
    got = session.run(None, {"pixel_values": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    for name, ours, reference in zip(("last_hidden_state", "pooler_output", "logits"), got, expected, strict=True):
        assert ours.shape == tuple(reference.shape), name
        torch.testing.assert_close(torch.from_numpy(ours), reference, rtol=1e-4, atol=1e-4, msg=name)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = SparKForPreTraining(SparKConfig(**CONVNEXT)).train()
    pixels, noise = torch.randn(2, 3, 64, 64), torch.rand(2, 4)
    model(pixels, noise=noise).loss.backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(pixels, noise=noise).loss.backward()
    for name, p in model.named_parameters():
        assert_close(p.grad, plain[name], name)
    # timm's ResNet blocks hold BatchNorm, whose running statistics a recomputation would update twice
    with pytest.raises(ValueError, match="gradient checkpointing"):
        SparKForPreTraining(SparKConfig(**RESNET)).gradient_checkpointing_enable()


def test_export_command_writes_a_transformers_folder(tmp_path):
    _randomised(SparKModel(SparKConfig(**RESNET))).save_pretrained(tmp_path / "ours")
    proc = subprocess.run([sys.executable, "-m", "mim_hub.models.spark.export_transformers", str(tmp_path / "ours"), str(tmp_path / "hf")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "resnet"
    proc = subprocess.run([sys.executable, "-m", "mim_hub.models.spark.export_transformers", str(tmp_path / "nothing"), str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "nothing" in proc.stderr and not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.parametrize("size", [32, 64])
def test_fullgraph_compile_matches_eager(size):
    """One graph, no breaks (32 px: a 1x1 mask grid, the densified map going straight into the decoder)."""
    torch._dynamo.reset()
    config = SparKConfig(**dict(CONVNEXT, image_size=size, hidden_sizes=[8, 16, 16, 32], decoder_hidden_size=32, mask_ratio=0.25))
    model = _randomised(SparKForPreTraining(config))
    pixels, noise = torch.randn(2, 3, size, size), torch.rand(2, (size // 32) ** 2)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        assert_close(compiled(pixels, noise=noise).reconstruction, model(pixels, noise=noise).reconstruction, "reconstruction")
