"""CAE's tokenizers (the DALL-E dVAE encoder port, read from a pickled module without running it;
the colour stand-in), the pre-training recipe and `mim-hub pretrain --method cae`."""

import argparse
import json
import math
import os
import subprocess
import sys
import types
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mim_hub import CAEConfig, CAEForPreTraining, CAEImageProcessor
from mim_hub.conversion import CheckpointError
from mim_hub.models.cae.tokenizer_dalle import DalleTokenizer, load_dalle_state_dict, map_pixels
from mim_hub.models.cae.tokenizers import PatchColorTokenizer

TINY = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            decoder_hidden_size=32, regressor_num_hidden_layers=1, regressor_num_attention_heads=2, decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2, decoder_intermediate_size=64, vocab_size=64, num_masking_patches=24,
            min_mask_patches_per_block=4)


def _fake_dall_e_modules():
    """Stand-ins for the `dall_e` package's module classes, with the original's parameter names
    (`w`, `b`), module tree and forward math, so that `torch.save(encoder)` writes the same kind of
    pickle as OpenAI's `encoder.pkl`."""
    utils = types.ModuleType("dall_e.utils")
    encoder = types.ModuleType("dall_e.encoder")

    class Conv2d(nn.Module):
        def __init__(self, n_in, n_out, kw):
            super().__init__()
            self.kw = kw
            self.w = nn.Parameter(torch.randn(n_out, n_in, kw, kw) / math.sqrt(n_in * kw * kw))
            self.b = nn.Parameter(torch.randn(n_out) * 0.1)

        def forward(self, x):
            return F.conv2d(x, self.w, self.b, padding=(self.kw - 1) // 2)

    class EncoderBlock(nn.Module):
        def __init__(self, n_in, n_out, n_layers):
            super().__init__()
            hid = n_out // 4
            self.post_gain = 1 / n_layers**2
            self.id_path = Conv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
            self.res_path = nn.Sequential(OrderedDict([
                ("relu_1", nn.ReLU()), ("conv_1", Conv2d(n_in, hid, 3)), ("relu_2", nn.ReLU()), ("conv_2", Conv2d(hid, hid, 3)),
                ("relu_3", nn.ReLU()), ("conv_3", Conv2d(hid, hid, 3)), ("relu_4", nn.ReLU()), ("conv_4", Conv2d(hid, n_out, 1))]))

        def forward(self, x):
            return self.id_path(x) + self.post_gain * self.res_path(x)

    class Encoder(nn.Module):
        def __init__(self, n_hid=8, per_group=2, vocab=32):
            super().__init__()
            self.vocab_size = vocab
            n_layers = 4 * per_group
            groups = [("input", Conv2d(3, n_hid, 7))]
            widths, prev = [n_hid, 2 * n_hid, 4 * n_hid, 8 * n_hid], n_hid
            for g, width in enumerate(widths):
                blocks = [(f"block_{i + 1}", EncoderBlock(prev if i == 0 else width, width, n_layers)) for i in range(per_group)]
                prev = width
                if g < 3:
                    blocks.append(("pool", nn.MaxPool2d(kernel_size=2)))
                groups.append((f"group_{g + 1}", nn.Sequential(OrderedDict(blocks))))
            groups.append(("output", nn.Sequential(OrderedDict([("relu", nn.ReLU()), ("conv", Conv2d(prev, vocab, 1))]))))
            self.blocks = nn.Sequential(OrderedDict(groups))

        def forward(self, x):
            return self.blocks(x)

    for cls, module in ((Conv2d, utils), (EncoderBlock, encoder), (Encoder, encoder)):
        cls.__module__, cls.__qualname__ = module.__name__, cls.__name__
        setattr(module, cls.__name__, cls)
    return types.ModuleType("dall_e"), encoder, utils


@pytest.mark.parametrize("zipfile", [True, False])  # OpenAI's file predates torch's zip format
def test_dalle_encoder_pickle_is_read_without_running_it_and_the_port_matches(tmp_path, monkeypatch, zipfile):
    package, encoder_module, utils_module = _fake_dall_e_modules()
    monkeypatch.setitem(sys.modules, "dall_e", package)
    monkeypatch.setitem(sys.modules, "dall_e.encoder", encoder_module)
    monkeypatch.setitem(sys.modules, "dall_e.utils", utils_module)
    original = encoder_module.Encoder(n_hid=8, per_group=2, vocab=32).eval()
    original.device = torch.device("cpu")  # attrs fields of the original are plain attributes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(original, tmp_path / "encoder.pkl", _use_new_zipfile_serialization=zipfile)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = original(map_pixels(images))
    # the `dall_e` package is not importable while we read the file
    for name in ("dall_e", "dall_e.encoder", "dall_e.utils"):
        monkeypatch.delitem(sys.modules, name)
    state = load_dalle_state_dict(str(tmp_path / "encoder.pkl"))
    assert "blocks.group_1.block_1.res_path.conv_1.w" in state and "dall_e.encoder" not in sys.modules
    tokenizer = DalleTokenizer.from_original(str(tmp_path / "encoder.pkl"))
    assert tokenizer.vocab_size == 32 and tokenizer.downsample == 8
    torch.testing.assert_close(tokenizer.logits(images), want, rtol=1e-5, atol=1e-5)
    ids = tokenizer(images)
    assert ids.shape == (2, 4, 4) and torch.equal(ids, want.argmax(1))
    assert not any(p.requires_grad for p in tokenizer.parameters())
    tokenizer.train()
    assert not tokenizer.training
    # a state-dict file of it works as well
    torch.save(tokenizer.state_dict(), tmp_path / "enc_state.pt")
    assert torch.equal(DalleTokenizer.from_original(str(tmp_path / "enc_state.pt"))(images), ids)


def test_a_malicious_tokenizer_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"_modules": {}, "x": Evil()}, tmp_path / "evil.pkl")
    with pytest.raises(CheckpointError, match="refusing"):
        load_dalle_state_dict(str(tmp_path / "evil.pkl"))
    assert not (tmp_path / "pwned").exists()
    torch.save({"blocks.input.w": torch.zeros(3)}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="not a DALL-E dVAE encoder"):
        DalleTokenizer.from_original(str(tmp_path / "partial.pt"))


def test_colour_tokenizer_ids_and_model_side_labels():
    tok = PatchColorTokenizer((8, 8), vocab_size=64)
    assert tok.levels == 4
    images = torch.zeros(1, 3, 32, 32)
    images[:, 0, :4, :4] = 1.0  # a red top-left patch
    ids = tok(images)
    assert ids.shape == (1, 8, 8) and ids[0, 0, 0] == 3 * 16 and ids[0, 0, 1] == 0 and int(tok(torch.ones(1, 3, 32, 32)).max()) == 63
    model = CAEForPreTraining(CAEConfig(**TINY)).eval()
    x, mask = torch.randn(2, 3, 32, 32), None
    mask = model.draw_mask(2)
    model.set_tokenizer(tok)
    pixels = torch.rand(2, 3, 32, 32)
    out = model(x, bool_masked_pos=mask, tokenizer_pixel_values=pixels)
    direct = model(x, bool_masked_pos=mask, labels=tok(pixels).flatten(1)[mask])
    assert torch.equal(out.loss, direct.loss)
    assert "_tokenizer" not in " ".join(model.state_dict())  # never saved


def test_recipe_draws_reproducible_block_masks_and_tokenizer_views():
    from mim_hub.training.recipes import build_recipe, configure_model

    model = CAEForPreTraining(CAEConfig(**TINY))
    options = argparse.Namespace(tokenizer=None, num_mask_patches=20)
    configure_model("cae", model, options, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    recipe = build_recipe("cae", model, options, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert model.config.num_masking_patches == 20 and isinstance(recipe.tokenizer, PatchColorTokenizer)
    assert model.tokenizer is None  # the recipe holds the tokenizer, not the model
    samples = [{"pixel_values": torch.randn(3, 32, 32), **recipe.sample_inputs(np.random.default_rng(i))} for i in range(3)]
    again = recipe.sample_inputs(np.random.default_rng(0))
    assert torch.equal(samples[0]["bool_masked_pos"], again["bool_masked_pos"])
    batch = recipe.collate(samples)
    assert batch["bool_masked_pos"].shape == (3, 64) and (batch["bool_masked_pos"].sum(1) == 20).all()
    torch.testing.assert_close(batch["tokenizer_pixel_values"], (batch["pixel_values"] * 0.25 + 0.5).clamp(0, 1))
    inputs = recipe.model_inputs(batch)
    assert "tokenizer_pixel_values" not in inputs and inputs["labels"].shape == (3 * 20,)
    out = model(**inputs)
    assert torch.isfinite(out.loss) and out.loss_main is not None
    model.set_tokenizer(recipe.tokenizer)  # the model's own convenience gives the same loss
    assert torch.equal(model(**batch).loss, out.loss)


@pytest.mark.slow
def test_pretrain_command(tmp_path):
    model = CAEForPreTraining(CAEConfig(**TINY))
    model.save_pretrained(tmp_path / "m")
    CAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(tmp_path / "m")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mim_hub", "pretrain", "--method", "cae", "--model", str(tmp_path / "m"),
                           "--output-dir", str(tmp_path / "run"), "--dataset", "digits", "--max-steps", "3", "--batch-size", "8",
                           "--save-every", "0", "--log-every", "1", "--num-mask-patches", "20"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(math.isfinite(r["loss"]) for r in log)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model_type"] == "cae" and saved["num_masking_patches"] == 20


def test_the_tokenizer_view_is_the_same_crop_and_flip_resized_with_lanczos():
    """CAE's second view (RandomResizedCropAndInterpolationWithTwoPic): one box, one flip, two sizes."""
    from PIL import Image

    from mim_hub.training.recipes import get_recipe
    from mim_hub.training.transforms import RandomResizedCropFlip, RandomResizedCropTwoViews

    height, width = 60, 80
    ramp = np.tile(np.linspace(0, 255, width), (height, 1))  # left-right ramp: a flip of one view only would show
    image = Image.fromarray(np.stack([ramp, np.full_like(ramp, 128), ramp[:, ::-1]], -1).astype(np.uint8))
    two = RandomResizedCropTwoViews(32, 16, (0.5,) * 3, (0.25,) * 3, scale=(0.3, 1.0))
    flips = set()
    for seed in range(8):
        views = two(image, np.random.default_rng(seed))
        first, second = views["pixel_values"] * 0.25 + 0.5, views["tokenizer_pixel_values"]
        assert second.shape == (3, 16, 16) and second.dtype == np.float32 and second.min() >= 0 and second.max() <= 1
        assert np.abs(first.reshape(3, 16, 2, 16, 2).mean((2, 4)) - second).max() < 0.03
        flips.add(bool(second[0, :, -1].mean() < second[0, :, 0].mean()))
    assert flips == {True, False}  # both flipped and unflipped samples were checked
    # the encoder's view is exactly the single-view augmentation's, from the same draws
    single = RandomResizedCropFlip(32, (0.5,) * 3, (0.25,) * 3, scale=(0.3, 1.0))
    np.testing.assert_array_equal(two(image, np.random.default_rng(3))["pixel_values"], single(image, np.random.default_rng(3)))
    # the recipe's transform gives the tokenizer its own input size
    recipe = get_recipe("cae")(CAEConfig(**TINY), mean=(0.5,) * 3, std=(0.25,) * 3)
    views = recipe.train_transform()(image, np.random.default_rng(0))
    size = recipe.tokenizer_size
    assert views["pixel_values"].shape == (3, 32, 32) and views["tokenizer_pixel_values"].shape == (3, *size)
