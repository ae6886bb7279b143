"""How people load big models: in bf16/fp16, built on the meta device, dispatched with a
device map that offloads to disk. Every method, every class (base, pre-training, classifier)."""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny_models import TINY, tiny
from transformers import AutoModel, AutoModelForImageClassification, AutoModelForPreTraining

import mim_hub

AUTOS = {"base": AutoModel, "pretraining": AutoModelForPreTraining, "classifier": AutoModelForImageClassification}


def _crate_classifier():
    config = mim_hub.CrateMAEConfig(variant="crate", image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, num_labels=3)
    return config, {}


CASES = [(key, kind) for key in TINY for kind in AUTOS] + [("crate_classifier", "base"), ("crate_classifier", "classifier")]


def _case(key):
    return _crate_classifier() if key == "crate_classifier" else tiny(key)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(key, kind) -> a folder holding a saved model of that class (saved once per module)."""
    folders = {}

    def get(key, kind):
        if (key, kind) not in folders:
            config, _ = _case(key)
            torch.manual_seed(0)
            folder = tmp_path_factory.mktemp(f"{key}-{kind}")
            AUTOS[kind].from_config(config).save_pretrained(folder)
            folders[key, kind] = folder
        return folders[key, kind]

    return get


def _inputs(key, kind):
    config, extra = _case(key)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # float32, as a processor gives
    return pixels, (extra if kind == "pretraining" else {})


def _main_output(output):
    return output.logits if getattr(output, "logits", None) is not None else output.last_hidden_state


@pytest.mark.parametrize("dtype_arg", ["dtype", "torch_dtype"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("key,kind", CASES)
def test_from_pretrained_in_half_precision_runs(saved, key, kind, dtype, dtype_arg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch_dtype is deprecated in favour of dtype)
        model = AUTOS[kind].from_pretrained(saved(key, kind), **{dtype_arg: dtype})
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    wrong = {name: t.dtype for name, t in tensors.items() if t.is_floating_point() and t.dtype != dtype}
    assert not wrong, f"tensors not in {dtype}: {wrong}"
    pixels, extra = _inputs(key, kind)
    with torch.no_grad():
        output = model(pixels, **extra)  # float32 pixel values are cast to the weights' dtype
    assert _main_output(output).dtype == dtype
    assert torch.isfinite(_main_output(output).float()).all()
    if getattr(output, "loss", None) is not None:
        assert torch.isfinite(output.loss)


@pytest.mark.parametrize("key,kind", CASES)
def test_builds_on_the_meta_device(key, kind):
    config, _ = _case(key)
    config.drop_path_rate = 0.1  # (stochastic-depth rates are computed when the blocks are built)
    with torch.device("meta"):
        model = AUTOS[kind].from_config(config)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    off_meta = sorted(name for name, t in tensors.items() if t.device.type != "meta")
    assert not off_meta, f"built off the meta device: {off_meta}"


@pytest.mark.parametrize("key,kind", CASES)
def test_from_pretrained_recomputes_what_the_file_does_not_hold(saved, key, kind):
    """from_pretrained builds on the meta device: non-persistent buffers (relative position
    indices, CAE's zero k bias) must come out as a model built in the ordinary way has them."""
    folder = saved(key, kind)
    loaded = AUTOS[kind].from_pretrained(folder)
    config, _ = _case(key)
    built = AUTOS[kind].from_config(config)
    expected = dict(built.named_buffers())
    assert set(dict(loaded.named_buffers())) == set(expected)
    for name, buffer in loaded.named_buffers():
        assert torch.equal(buffer, expected[name]), name


@pytest.mark.parametrize("key,kind", CASES)
def test_disk_offload_matches_the_model_in_memory(saved, key, kind, tmp_path):
    folder = saved(key, kind)
    pixels, extra = _inputs(key, kind)
    reference = AUTOS[kind].from_pretrained(folder).eval()
    offloaded = AUTOS[kind].from_pretrained(folder, device_map="auto", max_memory={"cpu": 20_000}, offload_folder=str(tmp_path)).eval()
    assert "disk" in set(offloaded.hf_device_map.values())
    assert any(p.device.type == "meta" for p in offloaded.parameters())  # really offloaded
    with torch.no_grad():
        expected = _main_output(reference(pixels, **extra))
        actual = _main_output(offloaded(pixels, **extra))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_half_precision_students_with_their_frozen_targets(tmp_path):
    """MR-MAE's teachers and CAE's tokenizer are not submodules: they keep their own dtype and
    take the student's float32 pixels, while the bf16 student trains against their targets."""
    from transformers import ViTConfig, ViTModel

    from mim_hub.models.cae.tokenizer_dalle import DalleTokenizer

    config, extra = tiny("mr_mae")
    mr_mae = AutoModelForPreTraining.from_config(config)
    mr_mae.save_pretrained(tmp_path / "mr_mae")
    student = AutoModelForPreTraining.from_pretrained(tmp_path / "mr_mae", dtype=torch.bfloat16)
    torch.manual_seed(0)
    student.set_teachers([ViTModel(ViTConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                                             image_size=32, patch_size=8), add_pooling_layer=False)])
    out = student(torch.randn(2, 3, 32, 32), **extra)
    assert torch.isfinite(out.loss) and out.mimic_losses.shape == (1,) and torch.isfinite(out.mimic_losses).all()
    out.loss.backward()
    assert {p.grad.dtype for p in student.parameters() if p.grad is not None} == {torch.bfloat16}

    config, extra = tiny("cae")
    AutoModelForPreTraining.from_config(config).save_pretrained(tmp_path / "cae")
    cae = AutoModelForPreTraining.from_pretrained(tmp_path / "cae", dtype=torch.bfloat16)
    tokenizer = DalleTokenizer(n_hid=8, n_blk_per_group=1, vocab_size=config.vocab_size, group_count=2)  # downsamples by 2
    cae.set_tokenizer(tokenizer)
    out = cae(torch.randn(2, 3, 32, 32), bool_masked_pos=extra["bool_masked_pos"], tokenizer_pixel_values=torch.rand(2, 3, 16, 16))
    assert torch.isfinite(out.loss)
    assert next(tokenizer.parameters()).dtype == torch.float32
