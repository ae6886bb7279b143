"""The masked-image-reconstruction pipeline in batches, and offered by a model saved with its code
where mim_hub is not installed (transformers' `custom_pipelines`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import method_of, tiny
from transformers import pipeline

from mim_hub.auto import method_classes
from mim_hub.hub.remote_code import save_with_code
from mim_hub.reconstruction import reconstruct

PIXEL_RECONSTRUCTING = ["mae", "color_mae", "crate_mae", "mr_mae", "simmim", "simmim_swin"]


def _images(count=3):
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8)) for i in range(count)]


def _save(key, folder, *, with_code=False):
    config, _ = tiny(key)
    classes = method_classes(method_of(key))
    torch.manual_seed(0)
    model = classes["pretraining"](config).eval()
    processor = classes["image_processor"](size={"height": 32, "width": 32}, do_center_crop=False)
    if with_code:
        save_with_code(model, processor, str(folder))
    else:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return model, processor


def _same(a, b):
    assert torch.equal(a["mask"], b["mask"])
    assert abs(a["loss"] - b["loss"]) < 1e-5
    diff = np.abs(np.asarray(a["reconstruction"], dtype=np.int16) - np.asarray(b["reconstruction"], dtype=np.int16))
    assert diff.max() <= 1  # (uint8 rounding of float outputs that differ by ~1e-7)
    assert a["picture"].size == b["picture"].size


@pytest.mark.parametrize("key", PIXEL_RECONSTRUCTING)
def test_batched_reconstruction_equals_one_image_at_a_time(key, tmp_path):
    _save(key, tmp_path)
    reconstructor = pipeline("masked-image-reconstruction", model=str(tmp_path))
    images = _images(3)
    alone = [reconstructor(image, seed=4, mask_ratio=0.5) for image in images]
    batched = reconstructor(images, seed=4, mask_ratio=0.5, batch_size=2)  # batches of 2 and 1
    assert len(batched) == 3
    for a, b in zip(alone, batched):
        _same(a, b)
    # per-image seeds travel with their images through the batches
    seeded = reconstructor([{"image": image, "seed": 10 + i} for i, image in enumerate(images)], mask_ratio=0.5, batch_size=2)
    for i, image in enumerate(images):
        _same(seeded[i], reconstructor(image, seed=10 + i, mask_ratio=0.5))
    assert not torch.equal(seeded[0]["mask"], seeded[1]["mask"])


def test_reconstruct_with_a_seed_per_image_masks_each_image_as_alone(tmp_path):
    model, _ = _save("mae", tmp_path)
    pixels = torch.randn(3, 3, 32, 32)
    batch = reconstruct(model, pixels, seed=[5, 6, 7])
    for i, seed in enumerate([5, 6, 7]):
        alone = reconstruct(model, pixels[i:i + 1], seed=seed)
        assert torch.equal(batch.mask[i], alone.mask[0])
        torch.testing.assert_close(batch.reconstruction[i], alone.reconstruction[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one seed per image"):
        reconstruct(model, pixels, seed=[1, 2])


REMOTE_PIPELINE = textwrap.dedent(
    """
    import json, sys
    sys.path = [p for p in sys.path if not p.endswith("/src") and "__editable__" not in p]
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower() and "editable" not in repr(f).lower()]
    try:
        import mim_hub
        raise SystemExit("mim_hub is importable: the check would prove nothing")
    except ImportError:
        pass
    import numpy as np
    from PIL import Image
    from transformers import pipeline
    results = {}
    for folder in sys.argv[1:]:
        reconstructor = pipeline(model=folder, trust_remote_code=True)  # the task comes from custom_pipelines
        rng = np.random.RandomState(0)
        images = [Image.fromarray(rng.randint(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8)) for i in range(3)]
        batched = reconstructor(images, seed=4, mask_ratio=0.5, batch_size=2)
        alone = [reconstructor(image, seed=4, mask_ratio=0.5) for image in images]
        results[folder] = {"task": reconstructor.task, "class": type(reconstructor).__name__, "module": type(reconstructor).__module__,
                           "batched": [o["loss"] for o in batched], "alone": [o["loss"] for o in alone],
                           "masks": [o["mask"].tolist() for o in batched]}
    assert "mim_hub" not in sys.modules
    print(json.dumps(results))
    """
)


@pytest.mark.slow
def test_model_saved_with_code_offers_reconstruction_without_mim_hub(tmp_path):
    expected, folders = {}, {}
    for key in ("mae", "simmim"):
        folder = folders[key] = tmp_path / f"{key}-with-code"
        _save(key, folder, with_code=True)
        entry = json.loads((folder / "config.json").read_text())["custom_pipelines"]["masked-image-reconstruction"]
        assert entry["impl"] == "mimhub_pipelines.MaskedImageReconstructionPipeline" and entry["pt"] == ["AutoModelForPreTraining"]
        assert (folder / "mimhub_pipelines.py").is_file()
        # what mim_hub itself gives with the same weights, for comparison
        _save(key, tmp_path / f"{key}-plain")
        local = pipeline("masked-image-reconstruction", model=str(tmp_path / f"{key}-plain"))
        expected[key] = [local(image, seed=4, mask_ratio=0.5) for image in _images(3)]
    script = tmp_path / "check.py"
    script.write_text(REMOTE_PIPELINE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(script), *map(str, folders.values())], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for key, folder in folders.items():
        result = results[str(folder)]
        assert result["task"] == "masked-image-reconstruction" and result["class"] == "MaskedImageReconstructionPipeline"
        assert not result["module"].startswith("mim_hub")
        np.testing.assert_allclose(result["batched"], result["alone"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result["alone"], [o["loss"] for o in expected[key]], rtol=1e-5, atol=1e-6)
        assert result["masks"] == [o["mask"].tolist() for o in expected[key]]


def test_only_pixel_predicting_models_carry_the_pipeline(tmp_path):
    config, _ = tiny("mae")
    classes = method_classes("mae")
    processor = classes["image_processor"](size={"height": 32, "width": 32}, do_center_crop=False)
    save_with_code(classes["classification"](config), processor, str(tmp_path / "classifier"))
    assert "custom_pipelines" not in json.loads((tmp_path / "classifier" / "config.json").read_text())
    cae, _ = tiny("cae")
    cae_classes = method_classes("cae")
    save_with_code(cae_classes["pretraining"](cae), cae_classes["image_processor"](size={"height": 32, "width": 32}), str(tmp_path / "cae"))
    assert "custom_pipelines" not in json.loads((tmp_path / "cae" / "config.json").read_text())
