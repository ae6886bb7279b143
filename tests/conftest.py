import json
import os
import sys

# The Hub cannot be reached from CI: everything runs on local data.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from hypothesis import HealthCheck, settings

# hypothesis's clocks (a per-example deadline, the too_slow health check) never decide a verdict
settings.register_profile("mim_hub", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mim_hub")

TESTS = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(TESTS, "fixtures")
# the tests mirror the source layout (tests/data/, tests/training/, ...); the helpers they share
# (tiny_models.py, kill_loop.py, reference_*.py, hostile_inputs*.py) and this file stay here
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


def load_fixture(method: str, variant: str):
    """(checkpoint path, inputs, expected, meta) of a golden fixture."""
    folder = os.path.join(FIXTURES, method, variant)
    meta = json.load(open(os.path.join(folder, "meta.json")))
    inputs = torch.load(os.path.join(folder, "inputs.pt"), weights_only=True)
    expected = torch.load(os.path.join(folder, "expected.pt"), weights_only=True)
    checkpoint = next(
        (os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith((".pth", ".pth.tar", ".bin")) and f not in ("inputs.pt", "expected.pt")),
        None,
    )
    return checkpoint, inputs, expected, meta


def assert_close(actual, expected, name=""):
    torch.testing.assert_close(actual.float(), expected.float(), rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- tiny models and data, built once per session ----------------------------------------------
# The tiny MAE most training tests run (32 px, patch 8, one block, a one-block decoder): a saved
# pre-training folder with its image processor (a plain 32 x 32 resize, as the digits preset).
TINY_MAE = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64)


def save_tiny_mae(folder, **config) -> str:
    """Save a tiny MAEForPreTraining (seed 0; `config` overrides TINY_MAE) and its processor to `folder`."""
    from mim_hub import MAEConfig, MAEForPreTraining, MAEImageProcessor

    torch.manual_seed(0)
    MAEForPreTraining(MAEConfig(**{**TINY_MAE, **config})).save_pretrained(folder)
    MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_mae_dir(tmp_path_factory) -> str:
    """A saved tiny MAE pre-training folder (TINY_MAE), shared by the tests that only read it."""
    return save_tiny_mae(tmp_path_factory.mktemp("tiny-mae"))


@pytest.fixture(scope="session")
def digits():
    """The bundled digits' (train, test) splits (1347 / 450 images, 32 px)."""
    from mim_hub.data import load_digits_dataset

    return load_digits_dataset("train"), load_digits_dataset("test")


def pytest_collection_modifyitems(config, items):
    """The `cuda` tests (tests/test_cuda.py) need a GPU: without one they are deselected, not
    skipped (MIM_HUB_CUDA_TESTS_ON_CPU=1 runs them on the CPU's stand-ins, as the GPU run's dry run
    does, which tests/test_gpu_run.py runs)."""
    if torch.cuda.is_available() or os.environ.get("MIM_HUB_CUDA_TESTS_ON_CPU") == "1":
        return
    kept = [item for item in items if item.get_closest_marker("cuda") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("cuda") is not None])
        items[:] = kept
