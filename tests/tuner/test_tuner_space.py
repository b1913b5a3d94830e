"""The search space: default knobs, FixedTrial sampling, space files and --fix."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from featherface_tune.errors import ConfigError, InputError
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.tuner.space import (
    BUDGET_KNOBS, KNOBS, SSH_KNOBS, apply_fixes, apply_settings, build_space, config_from_knobs,
    default_space, knobs_from_config, load_space,
)


def test_default_space_has_the_fine_budget_knobs():
    sp = default_space()
    assert sp.solve == ()  # Optuna samples every knob; the solver repairs the sample
    for k in SSH_KNOBS:
        assert sp.domain(k).values == tuple(range(16, 129, 4))
    assert sp.domain("backbone_cbam_reduction").values == (4, 8, 16, 32)
    assert sp.domain("neck_cbam_reduction").values == (4, 8, 16, 32)
    assert sp.domain("neck_channels").values == tuple(range(16, 129))
    assert sp.domain("bifpn_repeats").values == (1, 2, 3, 4)
    assert set(sp.domain("shuffle").values) == {"block", "plain", "none"}
    assert set(sp.domain("ssh_deformable").values) == {True, False}
    # Optuna samples every knob with more than one value, the budget knobs and BiFPN depth included
    assert set(BUDGET_KNOBS) <= set(sp.sampled) and "bifpn_repeats" in sp.sampled
    assert "neck_channels" in sp.sampled and "backbone_width" not in sp.sampled
    assert set(default_space().with_solve(BUDGET_KNOBS).sampled).isdisjoint(BUDGET_KNOBS)


def test_fixed_trial_sampling_with_context_rules():
    sp = default_space().with_solve(BUDGET_KNOBS)
    trial = optuna.trial.FixedTrial({"backbone_cbam": False, "neck": "fpn", "neck_channels": 40,
                                     "neck_cbam": True, "ssh_deformable": False, "shuffle": "none"})
    got = sp.sample(trial)
    assert got["bifpn_repeats"] == 0  # not suggested with FPN
    assert got["neck_channels"] == 40 and got["neck"] == "fpn"
    assert got["backbone_width"] == 0.25 and got["landmarks"] is True
    assert not set(got) & set(BUDGET_KNOBS) - {"backbone_cbam_reduction"}
    assert got["backbone_cbam_reduction"] == 16  # inactive (CBAM off): canonical value
    assert set(trial.params) == {"backbone_cbam", "neck", "neck_channels", "neck_cbam", "ssh_deformable", "shuffle"}


def test_fixed_trial_for_bifpn_suggests_repeats():
    sp = default_space().with_solve(BUDGET_KNOBS)
    params = {"backbone_cbam": True, "neck": "bifpn", "bifpn_repeats": 3, "neck_channels": 42,
              "neck_cbam": True, "ssh_deformable": True, "shuffle": "block"}
    got = sp.sample(optuna.trial.FixedTrial(params))
    assert got["bifpn_repeats"] == 3
    with pytest.warns(UserWarning, match="out of the range"):  # FixedTrial flags values outside the domain
        sp.sample(optuna.trial.FixedTrial({**params, "neck_channels": 200}))


def test_knobs_round_trip():
    cfg = FeatherFaceConfig(neck_channels=42, neck_cbam_reduction=8, ssh_channels=(56, 72, 72))
    knobs = knobs_from_config(cfg)
    assert set(knobs) == set(KNOBS)
    assert config_from_knobs(knobs) == cfg


def test_space_file_ranges_lists_and_fixed(tmp_path: Path):
    f = tmp_path / "space.toml"
    f.write_text('neck_channels = { min = 40, max = 48, step = 2 }\n'
                 'ssh_channels = [48, 56, 64]\n'
                 'ssh_deformable = true\n'
                 'solve = ["ssh_channels_p5", "neck_cbam_reduction"]\n')
    sp = load_space(f)
    assert sp.domain("neck_channels").values == (40, 42, 44, 46, 48)
    assert all(sp.domain(k).values == (48, 56, 64) for k in SSH_KNOBS)
    assert sp.domain("ssh_deformable").fixed
    assert sp.solve == ("ssh_channels_p5", "neck_cbam_reduction")
    assert "ssh_channels_p3" in sp.sampled
    assert apply_settings(default_space(), sp.to_dict(), "stored space") == sp  # to_dict reads back


@pytest.mark.parametrize("text, match", [
    ("neck_channels = { min = 50, max = 40 }", "empty range"),
    ("nek_channels = 3", "unknown knob 'nek_channels'"),
    ("ssh_channels_p3 = 50", "multiple of 4"),
    ("neck = 'bifpnn'", "must be one of"),
    ("neck_cbam = 1", "true or false"),
    ("neck_channels = []", "empty list"),
    ("bifpn_repeats = 0", "at least 1"),
    ("solve = ['neck_width']", "unknown knob"),
    ("solve = ['neck_channels']", "combinations per trial"),
    ("neck_channels = { min = 1, max = 9, stp = 2 }", "range needs"),
    ("neck_channels = [", "not valid TOML"),
])
def test_bad_space_files(tmp_path: Path, text: str, match: str):
    f = tmp_path / "bad.toml"
    f.write_text(text + "\n")
    with pytest.raises((ConfigError, InputError), match=match) as info:
        load_space(f)
    assert "\n" not in str(info.value)


def test_missing_space_file(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist"):
        load_space(tmp_path / "nope.toml")


def test_fix():
    sp = apply_fixes(default_space(), ["ssh_channels=[56,72,72]", "neck=bifpn", "neck_channels=42"])
    assert [sp.domain(k).values for k in SSH_KNOBS] == [(56,), (72,), (72,)]
    assert sp.domain("neck").values == ("bifpn",)
    assert sp.solved == ()
    assert {"backbone_cbam_reduction", "neck_cbam_reduction", "bifpn_repeats"} <= set(sp.sampled)
    sp = apply_fixes(default_space(), ["ssh_channels=64"])
    assert all(sp.domain(k).values == (64,) for k in SSH_KNOBS)
    for bad, match in (("foo=1", "unknown field"), ("neck_channels", "expected field=value"),
                       ("ssh_channels=[1,2]", "one width or three"), ("ssh_channels=66", "multiple of 4"),
                       ("neck_channels=[1,2]", "one value")):
        with pytest.raises(ConfigError, match=match):
            apply_fixes(default_space(), [bad])


def test_values_are_checked_by_the_configs_own_rules():
    # a rule a value breaks on its own: the config's message, with where it came from and the knob
    with pytest.raises(ConfigError, match=r"^fix='backbone_width=0.3': must be a multiple of 1/32"):
        apply_fixes(default_space(), ["backbone_width=0.3"])
    with pytest.raises(ConfigError, match=r"ssh_channels_p4: ssh_channels\[1\]=50 must be a multiple of 4"):
        apply_fixes(default_space(), ["ssh_channels=[48,50,52]"])
    with pytest.raises(ConfigError, match=r"ssh_channels_p3: .* must be an integer"):
        apply_fixes(default_space(), ["ssh_channels=[[4],8,12]"])
    assert apply_fixes(default_space(), ["backbone_width=1"]).domain("backbone_width").values == (1.0,)
    # rules that tie a value to other knobs are left to the certificate: valid in some config
    sp = apply_fixes(default_space(), ["shuffle_groups=3", "backbone_cbam_reduction=128", "neck=fpn"])
    assert sp.domain("shuffle_groups").values == (3,)
    assert sp.domain("backbone_cbam_reduction").values == (128,)


def test_build_space_combines_file_and_fix(tmp_path: Path):
    f = tmp_path / "s.toml"
    f.write_text("[space]\nneck_channels = [40, 42]\n")
    sp = build_space(f, ["neck_channels=42"])
    assert sp.domain("neck_channels").values == (42,)
    assert default_space().size() > 10**9


# ---- one table of config fields --------------------------------------------------------------

def test_the_space_and_the_solver_cover_every_config_field():
    """Every field of the config is a knob of the space (a per-level field one per level), with a
    default domain whose values the config accepts, and a width or switch term of the repair's
    distance; knobs_from_config / config_from_knobs round-trip every field."""
    from featherface_tune.models.config import FIELD_NAMES, FIELDS
    from featherface_tune.tuner.space import SWITCH_KNOBS, WIDTH_KNOBS
    from featherface_tune.tuner.space import KNOB_TABLE, parse_domain

    assert sorted(f.name for f in FIELDS) == sorted(FIELD_NAMES)
    assert {KNOB_TABLE.field_of[k] for k in KNOBS} == set(FIELD_NAMES)
    assert sorted(WIDTH_KNOBS + SWITCH_KNOBS) == sorted(KNOBS)
    sp = default_space()
    for k in KNOBS:  # each default value is one the config accepts where the knob applies
        assert parse_domain(k, list(sp.domain(k).values), "default").values == sp.domain(k).values
    cfg = FeatherFaceConfig(neck="fpn", bifpn_repeats=0, neck_channels=40, backbone_cbam=False, shuffle="none",
                            shuffle_groups=3, ssh_channels=(16, 24, 32), anchors_per_cell=3, landmarks=False)
    knobs = knobs_from_config(cfg)
    assert set(knobs) == set(KNOBS) and config_from_knobs(knobs) == cfg
    for f in FIELDS:  # a changed field changes its knob(s)
        assert getattr(cfg, f.name) == getattr(config_from_knobs(knobs), f.name)


def test_a_new_config_field_is_one_entry():
    """A field added to the table becomes a knob (in sampling order: after its switch), with its default
    domain, its context rule and its term in the repair's distance; nothing else lists fields."""
    import dataclasses

    from featherface_tune.models.config import FIELDS, Field
    from featherface_tune.tuner.space import KNOB_TABLE, derive_knobs

    new = Field("neck_cbam_kernel", "width", int, [3, 7], least=1, on="neck_cbam", when=(True,), off=7)
    at = [f.name for f in FIELDS].index("neck_cbam") + 1
    knobs = derive_knobs(FIELDS[:at] + (new,) + FIELDS[at:])
    assert knobs.structure == KNOB_TABLE.structure[:at] + ("neck_cbam_kernel",) + KNOB_TABLE.structure[at:]
    assert "neck_cbam_kernel" in knobs.width and "neck_cbam_kernel" not in knobs.switch
    assert knobs.context["neck_cbam_kernel"].on == "neck_cbam" and knobs.defaults["neck_cbam_kernel"] == [3, 7]
    assert knobs.budget == KNOB_TABLE.budget
    switch = dataclasses.replace(new, name="head_act", kind="switch", type=str, space=["relu", "silu"],
                                 choices=("relu", "silu"), least=None, on=None, when=(), off=None)
    knobs = derive_knobs(FIELDS + (switch,))
    assert "head_act" in knobs.switch and knobs.choices["head_act"] == ("relu", "silu")
