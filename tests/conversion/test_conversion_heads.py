"""Head counts that tensor shapes cannot tell: a guess for a size no release has is said out loud
(a GuessedHeadsWarning naming the field, the value and the --config that overrides it), in every
converter that guesses, in Python and on the command line; released sizes, counts read from
shapes and counts given in --config stay silent."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

from conftest import load_fixture
from mim_hub.conversion import convert_checkpoint
from mim_hub.conversion.heads import GuessedHeadsWarning
from mim_hub.conversion.loading import CheckpointError

# every fixture whose converter guesses heads (SimMIM's ViT and Swin read them from their tables)
GUESSING = [("mae", "pretrain-full"), ("mae", "finetune-classifier"), ("color_mae", "pretrain-full"),
            ("mr_mae", "pretrain-full"), ("mr_mae", "pretrain-encoder-only"), ("crate_mae", "pretrain-full"),
            ("crate_mae", "crate-classifier"), ("cae", "pretrain-full")]


def _guesses(method, path, overrides):
    """{field: warning text} of the GuessedHeadsWarnings one conversion raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            convert_checkpoint(method, path, overrides)
        except CheckpointError:  # a wrong guess may not fit the weights; it was still announced first
            pass
    found = {}
    for w in caught:
        if issubclass(w.category, GuessedHeadsWarning):
            field = str(w.message).split(": ", 1)[1].split(" ", 1)[0]
            found[field] = str(w.message)
    return found


@pytest.mark.parametrize("method,variant", GUESSING, ids=lambda v: v)
def test_every_guessed_head_count_is_warned_about_with_its_override(method, variant):
    path, _, _, meta = load_fixture(method, variant)
    given = meta["bars_overrides"]
    head_fields = sorted(k for k in given if k.endswith("heads"))
    assert head_fields
    found = _guesses(method, path, {k: v for k, v in given.items() if k not in head_fields})
    assert sorted(found) == head_fields
    for field, message in found.items():
        assert path in message and "guessed 1" in message  # these tiny widths (64 and less) get width // 64 = 1
        assert f"--config '{{\"{field}\": N}}'" in message
    # each count given is taken silently; the others are still announced
    for field in head_fields:
        assert sorted(_guesses(method, path, {k: v for k, v in given.items() if k != field})) == [field]
    assert _guesses(method, path, given) == {}


def test_released_widths_and_counts_read_from_shapes_are_not_warned_about(tmp_path):
    from reference_mae import random_original_state

    path = tmp_path / "large.pth"
    torch.save({"model": random_original_state(dim=1024, depth=1, mlp=1, img=16, patch=16, seed=0)}, path)
    assert _guesses("mae", str(path), {}) == {}  # ViT-L: 16 heads, released
    for variant in ("vit-pretrain", "swin-pretrain"):  # SimMIM: relative position tables hold one column per head
        checkpoint, _, _, meta = load_fixture("simmim", variant)
        assert _guesses("simmim", checkpoint, {k: v for k, v in meta["bars_overrides"].items() if "heads" not in k}) == {}
    checkpoint, _, _, _ = load_fixture("cae", "finetune-classifier")
    model_heads = convert_checkpoint("cae", checkpoint, {})[0].config.num_attention_heads
    assert _guesses("cae", checkpoint, {}) == {} and model_heads == 4  # CAE: from the relative position table too


def test_simmim_vit_without_position_tables_warns(tmp_path):
    checkpoint, _, _, _ = load_fixture("simmim", "vit-pretrain")
    state = torch.load(checkpoint, weights_only=True)
    state = state.get("model", state)
    state = {k: v for k, v in state.items() if "relative_position" not in k}
    hidden = state["encoder.patch_embed.proj.weight"].shape[0]
    state["encoder.pos_embed"] = torch.zeros(1, 1 + 64, hidden)
    path = tmp_path / "abs.pth"
    torch.save({"model": state}, path)
    found = _guesses("simmim", str(path), {"encoder_stride": 4})
    assert list(found) == ["num_attention_heads"] and "--config '{\"num_attention_heads\": N}'" in found["num_attention_heads"]


def test_cli_convert_prints_the_guess_on_stderr(tmp_path):
    path, _, _, _ = load_fixture("mae", "finetune-classifier")
    out = tmp_path / "converted"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": ""}
    proc = subprocess.run([sys.executable, "-m", "mim_hub", "convert", "--method", "mae", "--checkpoint", path, "--output", str(out)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "GuessedHeadsWarning" in proc.stderr and "num_attention_heads cannot be read from tensor shapes" in proc.stderr
    assert "guessed 1" in proc.stderr and "--config '{\"num_attention_heads\": N}'" in proc.stderr
    # the same command with the count given is silent (in-process: the subprocess start is the slow part)
    from mim_hub.cli import main

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["convert", "--method", "mae", "--checkpoint", path, "--output", str(out), "--overwrite",
                     "--config", '{"num_attention_heads": 4}']) == 0
    assert not [w for w in caught if issubclass(w.category, GuessedHeadsWarning)]
