"""timm-style feature hooks and `num_prefix_tokens` on every encoder (tiny configs)."""

import pytest
import torch
from transformers import AutoModel, AutoModelForImageClassification

import mim_hub
from mim_hub.training.evaluate import extract_features

from tiny_models import TINY, tiny

PREFIX = {"mae": 1, "simmim": 1, "simmim_swin": 0, "color_mae": 1, "crate_mae": 1, "cae": 1, "mr_mae": 0, "hpm": 1}


def _pixels(batch=2, size=32):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("key", sorted(TINY))
def test_num_prefix_tokens(key):
    config, _ = tiny(key)
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    classifier = AutoModelForImageClassification.from_config(config).eval()
    assert model.num_prefix_tokens == PREFIX[key]
    assert classifier.num_prefix_tokens == PREFIX[key]
    with torch.no_grad():
        tokens = model(_pixels()).last_hidden_state
    if key != "simmim_swin":  # plain ViTs: prefix + one token per patch
        side = 32 // config.patch_size
        assert tokens.shape[1] == model.num_prefix_tokens + side * side


def _images(pixels):
    """An ImageDataset of PIL images made from [-1, 1] pixels, as `extract_features` reads them."""
    import numpy as np
    from PIL import Image

    from mim_hub.data import ImageList

    arrays = ((pixels.clamp(-1, 1) + 1) * 127.5).byte().permute(0, 2, 3, 1).numpy()
    return ImageList([Image.fromarray(np.ascontiguousarray(a)) for a in arrays], labels=[0] * len(arrays))


def test_mean_pooling_keeps_every_swin_token():
    """`mim-hub eval`'s mean pooling: SimMIM's Swin has no cls token (its last stage has fewer
    tokens than patches, which the old count-based guess took for a cls token)."""
    from mim_hub import SimMIMImageProcessor
    config, _ = tiny("simmim_swin")
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    processor = SimMIMImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False)
    images = _images(_pixels(3))
    feats = extract_features(model, processor, images, batch_size=2)
    with torch.no_grad():
        expected = model(processor(images.images, return_tensors="pt").pixel_values).last_hidden_state.mean(1)
    torch.testing.assert_close(feats, expected)


@pytest.mark.parametrize("key", sorted(TINY))
def test_forward_intermediates(key):
    config, _ = tiny(key)
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    pixels = _pixels()
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True)
        final, maps = model.forward_intermediates(pixels)
        tokens = model.forward_intermediates(pixels, indices=[-1], output_fmt="NLC", intermediates_only=True)
        last_two = model.get_intermediate_layers(pixels, n=2, reshape=True)
    torch.testing.assert_close(final, out.last_hidden_state)
    stages = len(config.depths) if key == "simmim_swin" else config.num_hidden_layers
    assert len(maps) == stages and len(last_two) == 2
    for fmap in maps:
        assert fmap.dim() == 4 and fmap.shape[0] == 2
    torch.testing.assert_close(last_two[1], maps[-1])
    # NLC: the last block's tokens without the prefix tokens; NCHW: the same on the grid
    batch, channels, height, width = maps[-1].shape
    assert tokens[0].shape == (batch, height * width, channels)
    torch.testing.assert_close(tokens[0].transpose(1, 2).reshape(batch, channels, height, width), maps[-1])
    if key != "simmim_swin":
        torch.testing.assert_close(tokens[0], out.hidden_states[-1][:, model.num_prefix_tokens:])
        assert (height, width) == (32 // config.patch_size,) * 2
    else:  # the stages of a Swin at their own resolutions and widths
        grid = 32 // config.patch_size
        assert [tuple(m.shape[1:]) for m in maps] == [(config.embed_dim * 2**s, grid // 2**s, grid // 2**s) for s in range(stages)]
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(pixels, output_fmt="NHWC")
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(pixels, indices=[stages])


@pytest.mark.parametrize("key", sorted(TINY))
def test_forward_features_head_and_reset_classifier(key):
    config, _ = tiny(key)
    torch.manual_seed(0)
    classifier = AutoModelForImageClassification.from_config(config).eval()
    pixels = _pixels()
    with torch.no_grad():
        logits = classifier(pixels).logits
        features = classifier.forward_features(pixels)
        pooled = classifier.forward_head(features, pre_logits=True)
        torch.testing.assert_close(classifier.forward_head(features), logits)
        torch.testing.assert_close(features, classifier.base_model(pixels).last_hidden_state)
    assert pooled.shape == (2, classifier.num_features)
    classifier.reset_classifier(5)
    assert classifier.config.num_labels == 5
    with torch.no_grad():
        assert classifier(pixels).logits.shape == (2, 5)
    classifier.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(classifier.forward_head(features), pooled)
    base = classifier.base_model
    with pytest.raises(ValueError, match="without a head"):
        base.reset_classifier(3)


def test_convmae_hybrid_exposes_its_convolution_stages():
    config, _ = tiny("mr_mae")
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    with torch.no_grad():
        out = model(_pixels(), output_hidden_states=True)
    c1, c2 = config.conv_hidden_sizes
    p1, p2 = config.conv_patch_sizes
    assert [tuple(m.shape) for m in out.conv_hidden_states] == [(2, c1, 32 // p1, 32 // p1), (2, c2, 32 // p1 // p2, 32 // p1 // p2)]
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert model(_pixels()).conv_hidden_states is None


@pytest.mark.parametrize("key", ["mae", "cae", "crate_mae", "color_mae"])
def test_forward_intermediates_keeps_only_the_chosen_blocks_and_stops_after_the_last(key):
    """timm's `stop_early`: with `intermediates_only` the blocks after the last chosen one never
    run, and only the chosen outputs are held; the values are those of the full forward."""
    config, _ = tiny(key)
    config.num_hidden_layers = 4
    model = getattr(mim_hub, {"mae": "MAEModel", "cae": "CAEModel", "crate_mae": "CrateMAEModel", "color_mae": "ColorMAEModel"}[key])(config).eval()
    pixels = torch.randn(2, 3, 32, 32)
    ran = []
    handles = [block.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, block in enumerate(model._blocks())]
    with torch.no_grad():
        early = model.forward_intermediates(pixels, indices=[0, 1], intermediates_only=True)
        assert ran == [0, 1]
        ran.clear()
        full = model(pixels, output_hidden_states=True)
        final, kept = model.forward_intermediates(pixels, indices=[1])
    for handle in handles:
        handle.remove()
    assert ran[:4] == [0, 1, 2, 3]
    grid = 32 // config.patch_size
    for index, value in zip([0, 1], early):
        expected = full.hidden_states[index + 1][:, model.num_prefix_tokens:]
        torch.testing.assert_close(value, expected.transpose(1, 2).reshape(2, -1, grid, grid))
    torch.testing.assert_close(kept[0], early[1])
    torch.testing.assert_close(final, full.last_hidden_state)
