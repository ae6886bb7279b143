"""Shared config field groups (models/config_fields.py): a config lists its own fields and takes
the groups it shares; the groups' fields are checked, typed and serialised as its own."""

import dataclasses

import pytest

from mim_hub import CAEConfig, ColorMAEConfig, MAEConfig, MRMAEConfig, SimMIMConfig
from mim_hub.models.config_fields import (BLOCK_NUMERICS_RULES, MAE_DECODER_RULES, VIT_ENCODER_RULES, BlockNumericsFields,
                                          MAEDecoderFields, ViTEncoderFields)

GROUPS = {ViTEncoderFields: VIT_ENCODER_RULES, MAEDecoderFields: MAE_DECODER_RULES, BlockNumericsFields: BLOCK_NUMERICS_RULES}
USERS = {MAEConfig: (ViTEncoderFields, MAEDecoderFields, BlockNumericsFields), ColorMAEConfig: (ViTEncoderFields, MAEDecoderFields, BlockNumericsFields),
         MRMAEConfig: (ViTEncoderFields, MAEDecoderFields, BlockNumericsFields), CAEConfig: (ViTEncoderFields, BlockNumericsFields),
         SimMIMConfig: (ViTEncoderFields, BlockNumericsFields)}
# the shared fields a config declares again, with its own default (and rule)
REDECLARED = {MRMAEConfig: {"num_hidden_layers": 11}, SimMIMConfig: {"image_size": None, "patch_size": None, "layer_norm_eps": None,
                                                                     "drop_path_rate": None}}


@pytest.mark.parametrize("config_class", list(USERS), ids=lambda c: c.__name__)
def test_configs_take_the_shared_groups_with_their_rules(config_class):
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    redeclared = REDECLARED.get(config_class, {})
    for group in USERS[config_class]:
        assert issubclass(config_class, group)
        for field in dataclasses.fields(group):
            assert field.name in fields and field.name in config_class.FIELD_RULES
            if field.name in redeclared:
                assert fields[field.name].default == redeclared[field.name]
            else:
                assert fields[field.name].default == field.default
                assert config_class.FIELD_RULES[field.name] is GROUPS[group][field.name]


def test_a_group_field_is_checked_and_serialised_as_the_configs_own(tmp_path):
    with pytest.raises(ValueError, match="MRMAEConfig: decoder_hidden_size must be an int >= 1, got 0"):
        MRMAEConfig(decoder_hidden_size=0)
    with pytest.raises(ValueError, match="CAEConfig: drop_path_rate must be a number >= 0 and < 1, got 1.5"):
        CAEConfig(drop_path_rate=1.5)
    config = MRMAEConfig(hidden_size=64, num_attention_heads=4, decoder_hidden_size=32, decoder_num_attention_heads=4, mask_ratio=0.5)
    config.save_pretrained(tmp_path)
    loaded = MRMAEConfig.from_pretrained(tmp_path)
    assert (loaded.hidden_size, loaded.decoder_hidden_size, loaded.mask_ratio, loaded.num_hidden_layers) == (64, 32, 0.5, 11)
    assert SimMIMConfig().layer_norm_eps == 1e-6 and SimMIMConfig(backbone="swin").layer_norm_eps == 1e-5  # None: the backbone's
