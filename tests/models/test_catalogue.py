"""One catalogue per method (models/<method>/catalogue.py): the zoo, the cards, the presets and the
CLI read it; and one preprocessing rule (`for_image_size`, a crop ratio) for the converters and
the pre-trainer, chosen by the preset rather than by the image size."""

import argparse
import ast
import importlib
import pathlib

import numpy as np
import pytest
import torch

import mim_hub
from mim_hub import auto
from mim_hub.hub.cards import METHOD_INFO
from mim_hub.models.catalogue import METHODS, MethodCatalogue, Preset, all_presets, catalogues, method_catalogue
from mim_hub.training.presets import PRESETS, preset_config
from mim_hub.data import load_digits_dataset
from mim_hub.training.preprocessing import build_processor, input_normalization, input_statistics
from mim_hub.zoo import catalogue as zoo_rows

from reference_mae import random_original_state

SRC = pathlib.Path(mim_hub.__file__).parent


def test_every_method_has_one_catalogue_beside_it():
    assert auto.METHODS is METHODS
    for method in METHODS:
        entry = method_catalogue(method)
        assert isinstance(entry, MethodCatalogue) and entry.method == method
        assert (SRC / "models" / method / "catalogue.py").is_file()
        assert auto.method_classes(method)["config"].model_type == method
    with pytest.raises(ValueError, match="unknown method 'beit'"):
        method_catalogue("beit")


def test_releases_convert_to_the_methods_own_classes():
    for entry in catalogues():
        classes = {cls.__name__ for cls in auto.method_classes(entry.method).values() if cls is not None}
        assert entry.releases, entry.method
        for release in entry.releases:
            assert release.converts_to in classes, (entry.method, release.file)


def test_presets_cards_and_zoo_read_the_catalogues():
    assert PRESETS == {p.name: (e.method, p.config) for e in catalogues() for p in e.presets}
    assert METHOD_INFO == {e.method: {"name": e.name, "paper": e.paper, "repo": e.repo, "license": e.license} for e in catalogues()}
    rows = {row["method"]: row for row in zoo_rows()}
    assert list(rows) == list(METHODS)
    for entry in catalogues():
        assert [r["file"] for r in rows[entry.method]["releases"]] == [r.file for r in entry.releases]
        assert list(rows[entry.method]["presets"]) == [p.name for p in entry.presets]
    # every preset builds its config (the values are the config class's validation's to check)
    for name, (method, _) in all_presets().items():
        assert preset_config(name)[0] == method
    assert preset_config("mae-tiny-digits")[1].image_size == 32


def test_the_catalogue_types_import_nothing_of_mim_hub():
    """models/catalogue.py is data any floor may read; a method's catalogue imports only it."""
    tree = ast.parse((SRC / "models" / "catalogue.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + \
               [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith("mim_hub") or m.startswith(".")], imported
    for method in METHODS:
        tree = ast.parse((SRC / "models" / method / "catalogue.py").read_text())
        assert {(n.module, n.level) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} == {("catalogue", 2)}
    assert not (SRC / "models" / "simmim" / "releases.py").exists()  # registered itself into the zoo: gone


def test_a_preset_name_is_in_one_catalogue_only(monkeypatch):
    catalogue_module = importlib.import_module("mim_hub.models.catalogue")
    simmim = method_catalogue("simmim")
    clash = MethodCatalogue(**{**simmim.__dict__, "presets": simmim.presets + (Preset("mae-tiny-digits"),)})
    monkeypatch.setattr(importlib.import_module("mim_hub.models.simmim.catalogue"), "CATALOGUE", clash)
    with pytest.raises(ValueError, match="preset 'mae-tiny-digits' is in both mae and simmim"):
        catalogue_module.all_presets()


# ---------------------------------------------------------------- one preprocessing rule

MEAN, STD = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)


def _converted_processor(tmp_path, size):
    from mim_hub.conversion import convert_checkpoint

    path = tmp_path / "ckpt.pth"
    torch.save({"model": random_original_state(img=size, dim=32, depth=1)}, path)
    return convert_checkpoint("mae", str(path), {"num_attention_heads": 2})


def _without_statistics(processor) -> dict:
    return {k: v for k, v in processor.to_dict().items() if k not in ("image_mean", "image_std")}


@pytest.mark.parametrize("size", [32, 224])
def test_a_model_gets_the_same_processor_from_the_converter_and_the_pretrainer(tmp_path, size):
    """Before, a 32-px model's converter processor resized to 37 and cropped (`>= 32`) while the
    pre-trainer's resized plainly (`<= 64`); now both are `for_image_size` with the crop ratio."""
    model, converted = _converted_processor(tmp_path, size)
    pretrained = build_processor("mae", model.config, MEAN, STD, model_spec=str(tmp_path / "no-such-folder"))
    assert _without_statistics(pretrained) == _without_statistics(converted)
    assert dict(converted.size) == {"shortest_edge": round(size / 0.875)} and converted.crop_size["height"] == size
    assert list(pretrained.image_mean) == list(MEAN) and list(pretrained.image_std) == list(STD)


def test_the_digits_preset_states_its_plain_resize():
    """The demo's preprocessing is unchanged (a plain resize to 32 x 32, the images' own
    statistics), and it is the preset that says so, not the image size."""
    method, config = preset_config("mae-tiny-digits")
    processor = build_processor(method, config, MEAN, STD, model_spec="mae-tiny-digits")
    assert dict(processor.size) == {"height": 32, "width": 32} and processor.do_center_crop is False
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    plain = mim_hub.MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False, image_mean=list(MEAN), image_std=list(STD))
    assert np.array_equal(processor(image, return_tensors="np").pixel_values, plain(image, return_tensors="np").pixel_values)
    args = argparse.Namespace(normalization=None, model="mae-tiny-digits")
    assert input_normalization(args, None) == "dataset"
    assert input_normalization(argparse.Namespace(normalization=None, model="mae-vit-base-patch16"), None) == "imagenet"
    # the data may state its own: the digits are normalised with their statistics whatever the model
    digits = load_digits_dataset("test")
    assert input_normalization(argparse.Namespace(normalization=None, model="mae-vit-base-patch16"), None, digits) == "dataset"
    assert input_normalization(argparse.Namespace(normalization="imagenet", model="mae-tiny-digits"), None) == "imagenet"
    # another 32-px preset without a stated crop gets the method's default, whatever its size
    _, small = preset_config("mae-vit-base-patch16", image_size=32, patch_size=4)
    assert dict(build_processor("mae", small, MEAN, STD, model_spec="mae-vit-base-patch16").size) == {"shortest_edge": 37}


def test_a_continued_folder_keeps_its_saved_preprocessing(tmp_path):
    from mim_hub.training.preprocessing import saved_processor

    mim_hub.MAEConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64).save_pretrained(tmp_path)
    mim_hub.MAEImageProcessor.for_image_size(32, crop_pct=1.0, crop_mode="squash", image_mean=list(MEAN),
                                             image_std=list(STD)).save_pretrained(tmp_path)
    saved = saved_processor("mae", str(tmp_path))
    assert input_normalization(argparse.Namespace(normalization=None, model=str(tmp_path)), saved) == "saved"
    continued = argparse.Namespace(normalization=None, model=str(tmp_path))
    assert input_statistics(continued, saved, None, measure=None) == (MEAN, STD)
    assert input_statistics(continued, saved, load_digits_dataset("test"), lambda: "measured") == "measured"
    config = mim_hub.MAEConfig(image_size=48, patch_size=4)
    processor = build_processor("mae", config, (0.5,) * 3, (0.25,) * 3, str(tmp_path), saved)
    assert dict(processor.size) == {"height": 48, "width": 48} and processor.do_center_crop is False
    assert list(processor.image_mean) == [0.5] * 3


@pytest.mark.parametrize("cls", [mim_hub.MAEImageProcessor, mim_hub.SimMIMImageProcessor, mim_hub.CAEImageProcessor])
def test_released_sizes_keep_their_preprocessing(cls):
    """256 -> 224, 219 -> 192 (SimMIM's Swin), at the released sizes, as before the crop ratio."""
    assert dict(cls.for_image_size(224).size) == {"shortest_edge": 256}
    assert dict(cls.for_image_size(192).size) == {"shortest_edge": 219}
    assert cls.for_image_size(224).to_dict() == cls().to_dict()


def test_crop_options_are_checked_and_squash_crops_the_whole_image():
    squashed = mim_hub.MAEImageProcessor.for_image_size(32, crop_mode="squash")
    assert dict(squashed.size) == {"height": 37, "width": 37} and squashed.crop_size["height"] == 32 and squashed.do_center_crop
    assert squashed(np.zeros((20, 60, 3), np.uint8), return_tensors="np").pixel_values.shape == (1, 3, 32, 32)
    assert dict(mim_hub.SimMIMImageProcessor.for_image_size(32).size) == {"shortest_edge": 36}  # int(256 / 224 * 32)
    with pytest.raises(ValueError, match=r"crop_pct must be in \(0, 1\], got 1.5"):
        mim_hub.MAEImageProcessor.for_image_size(32, crop_pct=1.5)
    with pytest.raises(ValueError, match="crop_mode must be one of"):
        mim_hub.MAEImageProcessor.for_image_size(32, crop_mode="border")
