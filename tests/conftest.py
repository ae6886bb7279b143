import json
import os

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

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


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
