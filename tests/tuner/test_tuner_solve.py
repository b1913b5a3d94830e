"""The budget solver and the exhaustive certificate, checked against the analytic counter."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from strategies import configs

from featherface_tune.counter.analytic import count, count_params
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.models.presets import get_preset
from featherface_tune.tuner.solve import (
    NoConfigInWindow, Solver, base_cost, budget_tables, certify, check_reachable,
)
from featherface_tune.tuner.space import (
    BUDGET_KNOBS, KNOBS, SearchSpace, apply_fixes, config_from_knobs, default_space, fixed,
    knobs_from_config,
)

TARGET = 489_000


def _space_around(cfg: FeatherFaceConfig) -> SearchSpace:
    """A space holding exactly the config's knob values (plus nothing else)."""
    k = knobs_from_config(cfg)
    return SearchSpace(tuple((n, fixed(k[n])) for n in KNOBS))


@settings(max_examples=60, deadline=None)
@given(configs())
def test_additive_split_matches_the_counter(cfg: FeatherFaceConfig):
    """base + the five budget terms == count(), for params and MACs, on random valid configs."""
    k = knobs_from_config(cfg)
    sp = _space_around(cfg)
    structure = {n: v for n, v in k.items() if n not in BUDGET_KNOBS}
    tables = budget_tables(sp, structure, 96, 128)
    base = base_cost(structure, tables, 96, 128)
    assert base is not None
    r = count(cfg, 96, 128)
    assert base[0] + sum(int(t.params[0]) for t in tables) == r.params
    assert base[1] + sum(int(t.macs[0]) for t in tables) == r.macs


def test_the_489k_preset_is_exact():
    cfg = get_preset("featherface-489k")
    assert cfg == FeatherFaceConfig(neck_channels=42, neck_cbam_reduction=8, ssh_channels=(56, 72, 72))
    assert count_params(cfg) == 489_000


def test_solver_completes_the_official_structure_exactly():
    cfg = get_preset("featherface-489k")
    sampled = {n: v for n, v in knobs_from_config(cfg).items() if n not in BUDGET_KNOBS}
    sol = Solver(default_space(), TARGET, 0).solve(sampled)
    assert sol is not None and sol.exact
    assert sol.checked == 29 ** 3 * 4 * 4
    got = config_from_knobs(sol.knobs)
    assert count_params(got) == TARGET == sol.params
    assert count(got).macs == sol.macs
    # it is the fewest-MACs completion: brute force over the same budget knobs
    sp = default_space()
    best = None
    for s3, s4, s5, rb, rn in itertools.product(*(sp.domain(k).values for k in BUDGET_KNOBS)):
        c = cfg.replace(ssh_channels=(s3, s4, s5), backbone_cbam_reduction=rb, neck_cbam_reduction=rn)
        r = count(c)
        if r.params == TARGET and (best is None or r.macs < best):
            best = r.macs
    assert sol.macs == best


def test_solver_reports_the_nearest_completion_when_none_is_exact():
    sp = apply_fixes(default_space(), ["neck_channels=128", "neck=bifpn", "bifpn_repeats=4"])
    sampled = sp.sample(__import__("optuna").trial.FixedTrial(
        {"backbone_cbam": True, "neck_cbam": True, "ssh_deformable": True, "shuffle": "block"}))
    sol = Solver(sp, TARGET, 0).solve(sampled)
    assert sol is not None and not sol.exact
    assert sol.params > TARGET  # this structure alone is above the target: nearest = smallest
    assert count_params(config_from_knobs(sol.knobs)) == sol.params


def test_solver_respects_max_macs():
    cfg = get_preset("featherface-489k")
    sampled = {n: v for n, v in knobs_from_config(cfg).items() if n not in BUDGET_KNOBS}
    loose = Solver(default_space(), TARGET, 2000).solve(sampled)
    assert loose is not None and loose.in_window > 3
    tight = Solver(default_space(), TARGET, 2000, max_macs=loose.macs - 1).solve(sampled)
    assert tight is not None and (tight.in_window == 0 or tight.macs <= loose.macs - 1)


def _small_space() -> SearchSpace:
    sp = apply_fixes(default_space(), ["backbone_cbam=true", "ssh_deformable=true", "shuffle=block"])
    sp = sp.with_domain("neck_channels", fixed(40))
    sp = sp.with_domain("neck", fixed("bifpn")).with_domain("bifpn_repeats", fixed(2))
    from featherface_tune.tuner.space import Domain
    for k in ("ssh_channels_p3", "ssh_channels_p4", "ssh_channels_p5"):
        sp = sp.with_domain(k, Domain((48, 52, 56, 60, 64)))
    return sp


def _brute(sp: SearchSpace) -> list[int]:
    out = []
    for s in sp.iter_structures():
        doms = [sp.domain(k).values for k in BUDGET_KNOBS]
        for vals in itertools.product(*doms):
            knobs = dict(s)
            knobs.update(zip(BUDGET_KNOBS, vals))
            if not s["backbone_cbam"] and knobs["backbone_cbam_reduction"] != 16:
                continue
            if not s["neck_cbam"] and knobs["neck_cbam_reduction"] != 16:
                continue
            try:
                cfg = config_from_knobs(knobs)
            except Exception:
                continue
            out.append(count_params(cfg))
    return sorted(out)


def test_certificate_agrees_with_brute_force():
    sp = _small_space()
    counts = _brute(sp)
    target = counts[len(counts) // 2]
    cert = certify(sp, target, 300)
    assert cert.complete and cert.configs == len(counts)
    assert cert.in_window == sum(1 for c in counts if abs(c - target) <= 300)
    assert cert.smallest.params == counts[0] and cert.largest.params == counts[-1]
    assert count_params(FeatherFaceConfig(**cert.example.config)) - target in range(-300, 301)
    below = max(c for c in counts if c < target - 300)
    above = min(c for c in counts if c > target + 300)
    assert cert.below.params == below and cert.above.params == above
    for w in (cert.smallest, cert.largest, cert.below, cert.above):
        assert count_params(FeatherFaceConfig(**w.config)) == w.params


def test_nearest_achievable_for_an_impossible_target():
    sp = _small_space()
    counts = sorted(set(_brute(sp)))
    gaps = [(b - a, a, b) for a, b in zip(counts, counts[1:]) if b - a >= 2]
    _, a, b = max(gaps)
    target = (a + b) // 2
    cert = certify(sp, target, 0)
    assert cert.in_window == 0
    with pytest.raises(NoConfigInWindow, match="nearest achievable") as info:
        check_reachable(cert)
    msg = str(info.value)
    assert f"{a:,}" in msg and f"{b:,}" in msg and "proof: exhaustive count" in msg
    assert cert.below.params == a and cert.above.params == b
    assert info.value.exit_code == 1


def test_default_space_holds_exact_hits_for_489000():
    cert = certify(default_space(), TARGET, 0)
    assert cert.complete and cert.in_window >= 24  # "dozens" of exact configs
    assert cert.example.params == TARGET
    assert count_params(FeatherFaceConfig(**cert.example.config)) == TARGET
    check_reachable(cert)


def test_target_below_the_smallest_model():
    cert = certify(default_space(), 1000, 0)
    with pytest.raises(NoConfigInWindow, match=f"smallest config in this space has {cert.smallest.params:,} params"):
        check_reachable(cert)
    assert cert.smallest.params == count_params(FeatherFaceConfig(**cert.smallest.config))
