"""Every field of every config is checked for type and range when the config is built (by
`Config(...)`, config.json, `--config` or `from_pretrained(..., field=value)`), with an error
naming the field; broken config.json files are refused with a ValueError naming the file, and
with exit code 2 and one line from the command line."""

import dataclasses
import json
import os

import pytest
import torch
from transformers import AutoConfig, AutoModel, PreTrainedConfig

import mim_hub
from mim_hub.auto import METHODS, method_classes
from mim_hub.cli import main as cli
from tiny_models import _mae

BASE_FIELDS = {f.name for f in dataclasses.fields(PreTrainedConfig)}
CONFIGS = [method_classes(m)["config"] for m in METHODS]


def _own_fields(config_class):
    return [f.name for f in dataclasses.fields(config_class) if f.name not in BASE_FIELDS]


def _bad_values(rule):
    """Values of the wrong type, and out of range, for a field's rule."""
    wrong_type = {"int": ["12", 3.5, True, [1]], "float": ["0.5", [0.1], True, float("nan")], "bool": ["false", "true", 1, None],
                  "str": [3, ["a"]], "choice": ["no-such-value", 1.5, ["x"]], "size": ["224", -1, [1, 2, 3], 0, True],
                  "ints": ["1,2", 3, [1.5], [True]], "floats": ["0.5", [None], 1.0], "strs": ["a", [1]],
                  "channels": ["0.5", [None], [0.1, "x"], True]}[rule.kind]
    bad = [v for v in wrong_type if not (v is None and rule.optional)]
    if rule.low is not None:
        below = rule.low if rule.low_open else rule.low - 1
        bad.append([below] if rule.kind in ("ints", "floats", "channels") else below)
    if rule.high is not None:
        bad.append(rule.high if rule.high_open else rule.high + 1)
    return bad


def test_every_field_of_every_config_has_a_rule():
    for config_class in CONFIGS:
        missing = set(_own_fields(config_class)) - set(config_class.FIELD_RULES)
        assert not missing, f"{config_class.__name__}: no rule for {sorted(missing)}"
        assert not set(config_class.FIELD_RULES) - set(_own_fields(config_class))


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_refuses_wrong_types_and_ranges_naming_it(config_class):
    config_class()  # the defaults are valid
    for field, rule in config_class.FIELD_RULES.items():
        for value in _bad_values(rule):
            with pytest.raises(ValueError, match=rf"{config_class.__name__}: {field} must be") as caught:
                config_class(**{field: value})
            assert repr(value) in str(caught.value) or field in str(caught.value)
            config = config_class()
            with pytest.raises(ValueError, match=rf"{field} must be"):  # set afterwards (from_pretrained's kwargs)
                setattr(config, field, value)


def test_the_reported_cases():
    with pytest.raises(ValueError, match="norm_pix_loss must be a bool"):
        mim_hub.MAEConfig(norm_pix_loss="false")
    with pytest.raises(ValueError, match="layer_norm_eps must be a number > 0"):
        mim_hub.MAEConfig(layer_norm_eps=-1e-6)
    with pytest.raises(ValueError, match="mask_ratio must be a number"):
        mim_hub.MAEConfig(mask_ratio="0.75")
    with pytest.raises(ValueError, match="drop_path_rate must be a number"):
        mim_hub.SimMIMConfig(drop_path_rate=[0.1])
    with pytest.raises(ValueError, match="hidden_act must be one of"):
        mim_hub.CAEConfig(hidden_act="gelux")
    with pytest.raises(ValueError, match="num_hidden_layers must be an int >= 0"):
        mim_hub.CrateMAEConfig(num_hidden_layers=-1)


def test_valid_values_of_json_types_are_kept():
    """JSON has no float/int distinction for whole numbers: 0 is a valid dropout; lists stand for tuples."""
    config = mim_hub.MAEConfig(drop_path_rate=0, layer_norm_eps=1, mask_ratio=0, image_size=[32, 48], patch_size=16)
    assert config.drop_path_rate == 0 and config.image_size == [32, 48]
    assert mim_hub.MRMAEConfig(conv_depths=(0, 1), mimic_loss_weights=None).conv_depths == [0, 1]
    assert mim_hub.SimMIMConfig(backbone="swin").layer_norm_eps == 1e-5  # None: the backbone's value


@pytest.fixture
def saved_mae(tmp_path):
    config, _ = _mae()
    folder = tmp_path / "mae"
    mim_hub.MAEModel(config).save_pretrained(folder)
    mim_hub.MAEImageProcessor.for_image_size(32).save_pretrained(folder)
    return folder


def _write_config(folder, content):
    with open(folder / "config.json", "w") as handle:
        json.dump(content, handle)


BROKEN = {
    "json array": lambda good: [good], "json string": lambda good: "mae", "json null": lambda good: None,
    "negative layers": lambda good: {**good, "num_hidden_layers": -1},
    "unknown activation": lambda good: {**good, "hidden_act": "swishy"},
    "string bool": lambda good: {**good, "norm_pix_loss": "false"},
    "negative eps": lambda good: {**good, "layer_norm_eps": -1e-6},
    "string ratio": lambda good: {**good, "mask_ratio": "0.75"},
    "float layers": lambda good: {**good, "num_hidden_layers": 2.5},
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_config_json_is_a_value_error_naming_the_file(saved_mae, case):
    good = json.loads((saved_mae / "config.json").read_text())
    _write_config(saved_mae, BROKEN[case](good))
    for load in (mim_hub.MAEModel.from_pretrained, mim_hub.MAEConfig.from_pretrained, mim_hub.MAEForPreTraining.from_pretrained):
        with pytest.raises(ValueError) as caught:
            load(saved_mae)
        assert str(saved_mae / "config.json") in str(caught.value), str(caught.value)
    for load in (AutoModel.from_pretrained, AutoConfig.from_pretrained):  # transformers' own reading: still a ValueError
        with pytest.raises((ValueError, TypeError)) as caught:
            load(saved_mae)
        if isinstance(good, dict) and isinstance(BROKEN[case](good), dict):
            assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_config_json_exits_2_with_one_line(saved_mae, case, capsys, tmp_path):
    good = json.loads((saved_mae / "config.json").read_text())
    _write_config(saved_mae, BROKEN[case](good))
    code = cli(["eval", "--model", str(saved_mae), "--dataset", "digits", "--protocol", "knn"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "config.json" in err and "Traceback" not in err, err


def test_from_pretrained_overrides_are_checked(saved_mae):
    with pytest.raises(ValueError, match="drop_path_rate must be"):
        mim_hub.MAEModel.from_pretrained(saved_mae, drop_path_rate="0.1")
    model = mim_hub.MAEModel.from_pretrained(saved_mae, drop_path_rate=0.1)
    assert model.config.drop_path_rate == 0.1


def test_convert_config_override_of_the_wrong_type_exits_2(tmp_path, capsys):
    from reference_mae import random_original_state

    path = tmp_path / "mae.pth"
    torch.save({"model": random_original_state(dim=32, depth=1, num_classes=3, seed=0)}, path)
    for override, phrase in (('{"num_attention_heads": 2, "norm_pix_loss": "false"}', "norm_pix_loss must be a bool"),
                             ('{"num_attention_heads": 2, "mask_ratio": "0.5"}', "mask_ratio must be a number"),
                             ('{"num_attention_heads": 2, "drop_path_rate": [0.1]}', "drop_path_rate must be a number")):
        output = tmp_path / "out"
        assert cli(["convert", "--method", "mae", "--checkpoint", str(path), "--output", str(output), "--config", override]) == 2
        assert phrase in capsys.readouterr().err
        assert not output.exists()


def test_a_directory_as_checkpoint_says_it_is_a_directory(tmp_path, capsys):
    from mim_hub.conversion import CheckpointError, convert

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint-best.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file.*checkpoint-best.pth"):
        convert("mae", str(tmp_path / "run"), str(tmp_path / "out"))
    assert cli(["convert", "--method", "mae", "--checkpoint", str(tmp_path / "run"), "--output", str(tmp_path / "o")]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_a_per_channel_normalisation_takes_one_number_for_every_channel():
    # transformers' common tests set every *_std field to one small number (`_config_zero_init`)
    from mim_hub import MRMAEConfig

    config = MRMAEConfig(image_mean=0.5, image_std=1e-10)
    assert config.image_mean == [0.5] * 3 and config.image_std == [1e-10] * 3
    assert MRMAEConfig.from_dict(config.to_dict()).image_std == [1e-10] * 3
    for bad in (0.0, True, "x", [0.2, 0.0, 0.1]):
        with pytest.raises(ValueError, match="image_std must be a number or a list of numbers"):
            MRMAEConfig(image_std=bad)
