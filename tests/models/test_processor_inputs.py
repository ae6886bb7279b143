"""Every kind of image input gives the numbers of the 8-bit image it stands for (floats in [0, 1]
are not divided by 255 a second time), inputs without a known scale or with no image are refused,
and the work one image can cause is bounded."""

import numpy as np
import pytest
import torch
from PIL import Image

import mim_hub
from mim_hub.models import image_processing_common as common

PROCESSORS = [mim_hub.MAEImageProcessor, mim_hub.SimMIMImageProcessor]


def _rgb():
    return np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)


def _kinds(u8):
    chw = np.ascontiguousarray(u8.transpose(2, 0, 1))
    return {
        "hwc uint8": u8, "hwc float32 [0,1]": u8.astype(np.float32) / 255, "hwc float64 [0,1]": u8 / 255.0,
        "hwc float16 [0,1]": (u8 / 255.0).astype(np.float16), "hwc float [0,255]": u8.astype(np.float32),
        "hwc int64": u8.astype(np.int64), "hwc uint16": u8.astype(np.uint16) * 257, "chw numpy float": chw / 255.0,
        "chw tensor uint8": torch.from_numpy(chw), "chw tensor float": torch.from_numpy(chw).float() / 255,
        "chw tensor double": torch.from_numpy(chw).double() / 255, "hwc tensor float": torch.from_numpy(u8).float() / 255,
    }


@pytest.mark.parametrize("processor_class", PROCESSORS, ids=lambda c: c.__name__)
def test_every_input_kind_matches_the_uint8_image(processor_class):
    processor = processor_class()
    u8 = _rgb()
    expected = processor(Image.fromarray(u8), return_tensors="pt").pixel_values
    for name, image in _kinds(u8).items():
        got = processor(image, return_tensors="pt").pixel_values
        assert torch.equal(got, expected), f"{name}: differs by {(got - expected).abs().max():.3f}"
    batch = list(_kinds(u8).values())
    got = processor(batch, return_tensors="pt").pixel_values
    assert torch.equal(got, expected.expand(len(batch), -1, -1, -1))
    stacked = torch.from_numpy(np.ascontiguousarray(u8.transpose(2, 0, 1)))[None].float().div(255).repeat(2, 1, 1, 1)
    assert torch.equal(processor(stacked, return_tensors="pt").pixel_values, expected.expand(2, -1, -1, -1))


def test_grey_inputs_match_the_grey_uint8_image():
    processor = mim_hub.MAEImageProcessor()
    grey = _rgb()[..., 0]
    expected = processor(Image.fromarray(grey).convert("RGB"), return_tensors="pt").pixel_values
    for name, image in {"2-D uint8": grey, "2-D float [0,1]": grey / 255.0, "2-D tensor float": torch.from_numpy(grey).float() / 255,
                        "PIL F [0,1]": Image.fromarray((grey / 255.0).astype(np.float32), mode="F"),
                        "PIL I": Image.fromarray(grey.astype(np.int32), mode="I"),
                        "HW1 float": (grey / 255.0)[..., None], "1HW tensor": torch.from_numpy(grey)[None]}.items():
        got = processor(image, return_tensors="pt").pixel_values
        assert torch.equal(got, expected), f"{name}: differs by {(got - expected).abs().max():.3f}"


@pytest.mark.parametrize("image", [
    np.full((8, 8, 3), -0.5, np.float32), torch.randn(3, 8, 8), np.full((8, 8, 3), 300.0), np.full((8, 8, 3), -1, np.int16),
    np.full((8, 8, 3), 70000, np.int64),
], ids=["negative float", "normalised tensor", "float above 255", "negative int", "int above 65535"])
def test_images_without_a_known_scale_are_refused(image):
    with pytest.raises(ValueError, match="no known scale"):
        mim_hub.MAEImageProcessor()(image)


def test_already_normalised_input_passes_with_every_step_off():
    image = torch.randn(3, 8, 8)
    out = mim_hub.MAEImageProcessor()(image, do_resize=False, do_center_crop=False, do_rescale=False, do_normalize=False,
                                      return_tensors="pt").pixel_values
    assert torch.allclose(out[0], image)


@pytest.mark.parametrize("mode, values", [("F", np.linspace(-1, 1, 64)), ("I", np.arange(-32, 32))], ids=["F", "I"])
def test_pil_modes_with_negative_values_are_refused_not_clipped(mode, values):
    image = Image.fromarray(values.reshape(8, 8).astype(np.float32 if mode == "F" else np.int32), mode=mode)
    with pytest.raises(ValueError, match="negative values"):
        mim_hub.MAEImageProcessor()(image)


@pytest.mark.parametrize("images", [[], (), np.zeros((0, 3, 8, 8), np.uint8), torch.zeros(0, 3, 8, 8)], ids=["list", "tuple", "array", "tensor"])
def test_no_images_is_an_error(images):
    with pytest.raises(ValueError, match="no images given"):
        mim_hub.MAEImageProcessor()(images)


@pytest.mark.parametrize("processor_class", PROCESSORS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("size", [(1, 1_000_000), (200_000, 3), (5, 600)], ids=["1x1M", "200kx3", "5x600"])
def test_extreme_aspect_ratios_are_refused_before_resizing(processor_class, size):
    width, height = size
    with pytest.raises(ValueError, match="aspect ratio"):
        processor_class()(Image.new("RGB", (width, height)))


def test_moderate_aspect_ratio_is_accepted():
    out = mim_hub.MAEImageProcessor()(Image.new("RGB", (640, 8)), return_tensors="pt").pixel_values
    assert out.shape == (1, 3, 224, 224)


@pytest.mark.parametrize("kwargs", [
    {"size": {"shortest_edge": 100_000}}, {"size": {"height": 100_000, "width": 100_000}, "do_center_crop": False},
    {"crop_size": {"height": 50_000, "width": 50_000}}, {"size": {"shortest_edge": 4097}, "crop_size": {"height": 4097, "width": 4097}},
], ids=["shortest_edge", "height_width", "crop", "just_over"])
def test_huge_output_sizes_are_refused(kwargs):
    with pytest.raises(ValueError, match="MAX_OUTPUT_PIXELS"):
        mim_hub.MAEImageProcessor(**kwargs)(Image.new("RGB", (16, 16)))
    with pytest.raises(ValueError, match="MAX_OUTPUT_PIXELS"):
        mim_hub.MAEImageProcessor()(Image.new("RGB", (16, 16)), **kwargs)


def test_output_size_bound_is_the_documented_constant(monkeypatch):
    monkeypatch.setattr(common, "MAX_OUTPUT_PIXELS", 100 * 100)
    with pytest.raises(ValueError, match="MAX_OUTPUT_PIXELS"):
        mim_hub.MAEImageProcessor()(Image.new("RGB", (16, 16)))
    monkeypatch.setattr(common, "MAX_OUTPUT_PIXELS", 256 * 256)
    assert mim_hub.MAEImageProcessor()(Image.new("RGB", (16, 16)), return_tensors="pt").pixel_values.shape == (1, 3, 224, 224)


def test_a_custom_rescale_factor_leaves_the_scale_to_the_caller():
    u16 = np.full((8, 8, 3), 65535, np.uint16)
    processor = mim_hub.MAEImageProcessor(rescale_factor=1 / 65535, do_normalize=False, do_resize=False, do_center_crop=False)
    out = processor(u16, return_tensors="pt").pixel_values
    assert torch.allclose(out, torch.ones_like(out))
