"""Every validation rule of the config, its messages, and the config sources."""

from __future__ import annotations

import json

import pytest

from featherface_tune.errors import ConfigError, InputError
from featherface_tune.models.config import FIELD_NAMES, FeatherFaceConfig, parse_overrides
from featherface_tune.models.presets import get_preset, register_preset, resolve_config


def test_defaults_are_the_official_code():
    assert FeatherFaceConfig() == get_preset("featherface-official")


def test_ssh_multiple_of_four_message_names_nearest():
    with pytest.raises(ConfigError) as e:
        FeatherFaceConfig(ssh_channels=51)
    assert str(e.value) == ("ssh_channels=51 must be a multiple of 4 (SSH splits it 1/2+1/4+1/4); "
                            "nearest valid: 48, 52")


def test_per_level_ssh_names_the_level():
    with pytest.raises(ConfigError, match=r"ssh_channels\[2\]=70 .*nearest valid: 68, 72"):
        FeatherFaceConfig(ssh_channels=[56, 72, 70])


def test_equal_levels_canonicalise_to_one_int():
    assert FeatherFaceConfig(ssh_channels=[64, 64, 64]) == FeatherFaceConfig()
    assert FeatherFaceConfig(ssh_channels=[56, 72, 72]).ssh_widths == (56, 72, 72)


@pytest.mark.parametrize("changes, pattern", [
    ({"ssh_channels": 0}, r"ssh_channels=0 must be a positive multiple of 4"),
    ({"ssh_channels": [64, 64]}, r"list of three"),
    ({"ssh_channels": 64.0}, r"one integer or a list"),
    ({"neck_channels": 0}, r"neck_channels=0 must be at least 1; nearest valid: 1$"),
    ({"neck_channels": 12.5}, r"neck_channels=12.5 must be an integer"),
    ({"neck": "pan"}, r"neck='pan' must be one of bifpn, fpn"),
    ({"shuffle": "shuffled"}, r"shuffle='shuffled' must be one of block, plain, none"),
    ({"shuffle_groups": 3}, r"shuffle_groups=3 must divide the SSH width ssh_channels=64 .*nearest valid: 2, 4"),
    ({"shuffle_groups": 0}, r"shuffle_groups=0 must be at least 1; nearest valid: 1, 2$"),
    ({"neck_cbam_reduction": 128}, r"neck_cbam_reduction=128 leaves the CBAM .* 64//128 = 0 hidden .*nearest valid: 64"),
    ({"backbone_cbam_reduction": 65}, r"backbone_cbam_reduction=65 leaves .*nearest valid: 64"),
    ({"neck_cbam_reduction": 0}, r"neck_cbam_reduction=0 must be at least 1"),
    ({"bifpn_repeats": 0}, r"bifpn_repeats=0 must be at least 1 with neck='bifpn'"),
    ({"neck": "fpn"}, r"bifpn_repeats=3 only applies to neck='bifpn'; .*must be 0"),
    ({"backbone_width": 0.3}, r"backbone_width=0.3 must be a multiple of 1/32 .*nearest valid: 0.28125, 0.3125"),
    ({"backbone_width": -1.0}, r"backbone_width=-1.0 must be a positive number"),
    ({"anchors_per_cell": 0}, r"anchors_per_cell=0 must be at least 1"),
    ({"landmarks": "yes"}, r"landmarks='yes' must be true or false"),
    ({"backbone_cbam": 1}, r"backbone_cbam=1 must be true or false"),
])
def test_each_rule_is_checked(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        FeatherFaceConfig().replace(**changes)


def test_rules_switch_off_with_their_block():
    # a huge ratio is fine when that CBAM is absent; odd groups are fine with no shuffle
    assert FeatherFaceConfig(neck_cbam=False, neck_cbam_reduction=1000).neck_cbam_reduction == 1000
    assert FeatherFaceConfig(shuffle="none", shuffle_groups=3).shuffle_groups == 3
    # ... and break their rule as soon as the block is there
    with pytest.raises(ConfigError, match="neck_cbam_reduction=1000 leaves the CBAM"):
        FeatherFaceConfig(neck_cbam=True, neck_cbam_reduction=1000)
    with pytest.raises(ConfigError, match="shuffle_groups=3 must divide"):
        FeatherFaceConfig(shuffle="plain", shuffle_groups=3)


def test_error_messages_are_one_line():
    with pytest.raises(ConfigError) as e:
        FeatherFaceConfig(shuffle_groups=3, ssh_channels=[56, 72, 72])
    assert "\n" not in str(e.value)


def test_overrides_parse_toml_values():
    assert parse_overrides(["ssh_channels=[56, 72, 72]", "neck=fpn", "landmarks=false", "neck_channels=42"]) == {
        "ssh_channels": [56, 72, 72], "neck": "fpn", "landmarks": False, "neck_channels": 42}


def test_unknown_field_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown field 'out_channel'; valid fields: backbone_width"):
        resolve_config(overrides=["out_channel=51"])
    with pytest.raises(ConfigError, match="expected field=value"):
        resolve_config(overrides=["neck_channels"])


def test_config_sources_stack(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "featherface-v1-489k"\nneck_channels = 48\n')
    cfg = resolve_config(config_file=toml, overrides=["ssh_channels=[48, 52, 56]"])
    assert cfg == get_preset("featherface-v1-489k").replace(neck_channels=48, ssh_channels=(48, 52, 56))
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"model": {"neck_channels": 40}}))
    assert resolve_config("retinaface-mnet025", js).neck_channels == 40


def test_bad_config_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        resolve_config(config_file=tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("neck_channels = = 3\n")
    with pytest.raises(InputError, match="not valid TOML"):
        resolve_config(config_file=bad)
    unk = tmp_path / "unk.toml"
    unk.write_text("width = 3\n")
    with pytest.raises(ConfigError, match="unknown field 'width'"):
        resolve_config(config_file=unk)


def test_config_file_naming_another_preset_is_refused(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('preset = "featherface-v1-489k"\nneck_channels = 48\n')
    with pytest.raises(ConfigError, match="names preset 'featherface-v1-489k' but preset 'retinaface-mnet025'") as info:
        resolve_config("retinaface-mnet025", f)
    assert info.value.part == "config"
    assert resolve_config("featherface-v1-489k", f).neck_channels == 48  # the same preset twice is fine
    f.write_text('preset = "nope"\n')
    with pytest.raises(ConfigError, match=r"c\.toml: unknown preset 'nope'"):
        resolve_config(config_file=f)
    with pytest.raises(ConfigError) as info:
        resolve_config("nope")
    assert info.value.part == "preset"
    with pytest.raises(ConfigError) as info:
        resolve_config(overrides=["neck_channels=0"])
    assert (info.value.part, info.value.field) == ("overrides", "neck_channels")


def test_unknown_preset_and_duplicate_registration():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; known presets: featherface-official"):
        get_preset("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_preset("featherface-official", "dup")(lambda: FeatherFaceConfig())


def test_to_dict_round_trip():
    cfg = get_preset("featherface-489k")
    d = cfg.to_dict()
    assert set(d) == set(FIELD_NAMES) and d["ssh_channels"] == [56, 72, 72]
    assert resolve_config(overrides=d) == cfg
