"""The budget solver and the exhaustive certificate, checked against the analytic counter."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from strategies import configs

from featherface_tune.counter.analytic import count, count_params
from featherface_tune.counter.conventions import get_convention
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.models.presets import get_preset
from featherface_tune.errors import ConfigError
from featherface_tune.tuner.solve import (
    NoConfigInWindow, Repairer, base_cost, budget_tables, certify, check_memory, check_reachable, prove,
)
from featherface_tune.tuner.space import (
    BUDGET_KNOBS, KNOBS, SSH_KNOBS, SWITCH_COST, Domain, SearchSpace, apply_fixes, config_from_knobs, default_space,
    distance, fixed, int_range, knobs_from_config,
)

TARGET = 489_000


def _space_around(cfg: FeatherFaceConfig) -> SearchSpace:
    """A space holding exactly the config's knob values (plus nothing else)."""
    k = knobs_from_config(cfg)
    return SearchSpace(tuple((n, fixed(k[n])) for n in KNOBS))


@settings(max_examples=60, deadline=None)
@given(configs())
def test_additive_split_matches_the_counter(cfg: FeatherFaceConfig):
    """base + the five budget terms == count(), for params and MACs in both DCN conventions."""
    k = knobs_from_config(cfg)
    sp = _space_around(cfg)
    structure = {n: v for n, v in k.items() if n not in BUDGET_KNOBS}
    for conv in ("full", "dense"):
        tables = budget_tables(sp, structure, 96, 128, counting=get_convention("numel", conv))
        base = base_cost(structure, tables, 96, 128)
        assert base is not None
        r = count(cfg, 96, 128, dcn_macs=conv)
        assert base[0] + sum(int(t.params[0]) for t in tables) == r.params
        assert base[1] + sum(int(t.macs[0]) for t in tables) == r.macs


def test_the_489k_preset_is_exact():
    cfg = get_preset("featherface-489k")
    assert cfg == FeatherFaceConfig(neck_channels=42, neck_cbam_reduction=8, ssh_channels=(56, 72, 72))
    assert count_params(cfg) == 489_000


def test_distance():
    a = knobs_from_config(get_preset("featherface-official"))
    b = knobs_from_config(get_preset("featherface-489k"))
    assert distance(a, a) == 0.0
    # neck 64 -> 42, ratio 16 -> 8, SSH 64 -> 56/72/72: relative changes |v - r| / max(v, r)
    want = 22 / 64 + 8 / 16 + 8 / 64 + 8 / 72 + 8 / 72
    assert distance(b, a) == pytest.approx(want) == pytest.approx(distance(a, b))
    # one switch costs more than every width term together (each term is below 1; nine width knobs)
    far = {**a, "neck_channels": 16, "bifpn_repeats": 1, "ssh_channels_p3": 16, "ssh_channels_p4": 16,
           "ssh_channels_p5": 16, "backbone_cbam_reduction": 4, "neck_cbam_reduction": 4}
    assert distance(far, a) < SWITCH_COST <= distance({**a, "ssh_deformable": False}, a)
    assert distance({**a, "ssh_deformable": False}, a, free=("ssh_deformable",)) == 0.0


def test_the_exact_set_lists_the_window_with_full_compute_macs():
    proof = prove(default_space(), TARGET, 0)
    ex = proof.exact
    assert ex is not None and len(ex) == proof.certificate.in_window == 4082
    assert len({tuple(sorted(ex.knobs(i).items())) for i in range(len(ex))}) == len(ex)
    for i in range(0, len(ex), 41):
        r = count(ex.config(i), 640, 640, dcn_macs="full")
        assert r.params == TARGET == ex.params[i] and r.macs == ex.macs[i]
    dense = prove(default_space(), TARGET, 0, counting=get_convention("numel", "dense")).exact
    assert dense is not None and (dense.macs <= ex.macs).all() and (dense.macs < ex.macs).any()


def test_repair_builds_an_exact_sample_as_it_is():
    proof = prove(default_space(), TARGET, 0)
    rep = Repairer(default_space(), TARGET, 0, exact=proof.exact, structures=proof.hit_structures)
    k = knobs_from_config(get_preset("featherface-489k"))
    sol = rep.repair(k)
    assert sol is not None and sol.knobs == k and sol.distance == 0.0 and sol.params == TARGET


def test_repair_projects_a_far_sample_into_the_window():
    proof = prove(default_space(), TARGET, 0)
    rep = Repairer(default_space(), TARGET, 0, exact=proof.exact, structures=proof.hit_structures)
    k = knobs_from_config(get_preset("featherface-official").replace(neck_channels=128, bifpn_repeats=4))
    sol = rep.repair(k)
    assert sol is not None and sol.params == TARGET and sol.switches == 0  # FeatherFace's switches kept
    got = config_from_knobs(sol.knobs)
    assert count_params(got) == TARGET and count(got, dcn_macs="full").macs == sol.macs
    # nothing in the exact set is nearer
    sw, wd = proof.exact.distances(k)
    assert sol.distance == pytest.approx(float((sw * SWITCH_COST + wd).min()))


def test_solver_respects_max_macs():
    k = knobs_from_config(get_preset("featherface-489k"))
    loose = prove(default_space(), TARGET, 0)
    free = Repairer(default_space(), TARGET, 0, exact=loose.exact).repair(k)
    assert free is not None and free.knobs == k
    cap = free.macs - 1  # the sampled config itself breaks the cap
    capped = prove(default_space(), TARGET, 0, max_macs=cap)
    assert 0 < len(capped.exact) < len(loose.exact) and (capped.exact.macs <= cap).all()
    for rep in (Repairer(default_space(), TARGET, 0, max_macs=cap, exact=capped.exact),
                Repairer(default_space(), TARGET, 0, max_macs=cap, structures=capped.hit_structures)):
        sol = rep.repair(k)
        assert sol is not None and sol.macs <= cap < free.macs and sol.params == TARGET


def _small_space() -> SearchSpace:
    sp = apply_fixes(default_space(), ["backbone_cbam=true", "ssh_deformable=true", "shuffle=block"])
    sp = sp.with_domain("neck_channels", fixed(40))
    sp = sp.with_domain("neck", fixed("bifpn")).with_domain("bifpn_repeats", fixed(2))
    from featherface_tune.tuner.space import Domain
    for k in ("ssh_channels_p3", "ssh_channels_p4", "ssh_channels_p5"):
        sp = sp.with_domain(k, Domain((48, 52, 56, 60, 64)))
    return sp


def _brute(sp: SearchSpace) -> list[int]:
    """The params of every valid config of the space, sorted."""
    return sorted(params for _, params, _ in _brute_configs(sp))


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
    assert msg.startswith(f"target={target}: no config") and msg.endswith(f"use tolerance {min(target - a, b - target)}")
    assert info.value.shown_as(lambda f: "--" + f).endswith(f"use --tolerance {min(target - a, b - target)}")
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


def _mixed_space() -> SearchSpace:
    """A small space with a few structures (neck width, DCN, CBAM) for brute force."""
    sp = _small_space().with_domain("neck_channels", Domain((40, 44)))
    return sp.with_domain("ssh_deformable", Domain((True, False))).with_domain("neck_cbam", Domain((True, False)))


def _brute_configs(sp: SearchSpace) -> list[tuple[dict, int, int]]:
    """(knobs, params, MACs) of every valid config of the space, by building each one: a CBAM ratio
    counts only at its canonical value 16 where that CBAM is off, and a config that breaks a rule of
    the architecture (ConfigError, nothing else) is not in the space."""
    out = []
    for s in sp.iter_structures():
        for vals in itertools.product(*(sp.domain(k).values for k in BUDGET_KNOBS)):
            knobs = {**s, **dict(zip(BUDGET_KNOBS, vals))}
            if any(not s[switch] and knobs[ratio] != 16 for switch, ratio in
                   (("backbone_cbam", "backbone_cbam_reduction"), ("neck_cbam", "neck_cbam_reduction"))):
                continue
            try:
                cfg = config_from_knobs(knobs)
            except ConfigError:
                continue
            r = count(cfg, 640, 640, dcn_macs="full")
            out.append((knobs, r.params, r.macs))
    return out


def test_exact_set_and_mac_optimum_equal_brute_force():
    sp = _mixed_space()
    allc = _brute_configs(sp)
    params = sorted(p for _, p, _ in allc)
    target, tol = params[len(params) // 2], 5000
    inside = [(k, p, m) for k, p, m in allc if abs(p - target) <= tol]
    proof = prove(sp, target, tol)
    ex = proof.exact
    assert len(ex) == len(inside) == proof.certificate.in_window > 10
    listed = {tuple(sorted(ex.knobs(i).items())): (int(ex.params[i]), int(ex.macs[i])) for i in range(len(ex))}
    assert listed == {tuple(sorted(k.items())): (p, m) for k, p, m in inside}
    from featherface_tune.tuner.api import search

    res = search(target, space=sp, tolerance=tol, objective="macs", top=3)
    assert res.solved["optimal"] and res.best[0].macs == min(m for _, _, m in inside)
    assert [r.macs for r in res.best[:3]] == sorted(m for _, _, m in inside)[:3]


def test_repair_by_structure_matches_the_exact_set():
    """Without an exact set the repair visits structures by a lower bound; it finds the same distance."""
    import random

    sp = _mixed_space()
    params = sorted(p for _, p, _ in _brute_configs(sp))
    target, tol = params[len(params) // 2], 5000
    proof = prove(sp, target, tol)
    by_set = Repairer(sp, target, tol, exact=proof.exact)
    by_structure = Repairer(sp, target, tol, structures=proof.hit_structures)
    rng = random.Random(0)
    for _ in range(25):
        point = {k: rng.choice(sp.domain(k).values) for k in KNOBS}
        a, b = by_set.repair(point), by_structure.repair(point)
        assert a is not None and b is not None and b.method == "by structure"
        assert b.distance == pytest.approx(a.distance) and b.macs == a.macs
        assert abs(count_params(config_from_knobs(b.knobs)) - target) <= tol


def test_huge_ssh_domains_are_refused_with_an_estimate():
    sp = default_space()
    for k in SSH_KNOBS:
        sp = sp.with_domain(k, int_range(4, 4096, 4))
    with pytest.raises(ConfigError, match=r"P3 x P4 x P5 combinations .* about [\d,]+ MiB") as info:
        check_memory(sp)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        certify(sp, TARGET, 0)


def test_repair_without_a_proof_completes_the_sampled_structure():
    """A space too large to enumerate has no exact set: the sampled structure is completed alone."""
    assert not certify(default_space(), TARGET, 0, max_structures=10).complete
    rep = Repairer(default_space(), TARGET, 0)
    k = knobs_from_config(get_preset("featherface-489k"))
    sol = rep.repair(k)
    assert sol is not None and sol.knobs == k and sol.params == TARGET
    off = rep.repair({**k, "neck_channels": 43})  # no exact completion: the nearest count, infeasible
    got = count(config_from_knobs(off.knobs), dcn_macs="full")
    assert off.params == got.params != TARGET and off.macs == got.macs and off.knobs["neck_channels"] == 43


def test_witness_search_never_materialises_the_whole_grid() -> None:
    """The issue's case: 76 SSH widths per level and CBAM ratios 1..16 in one structure. The old
    witness search built the 76^3 x 16 x 16 grid (about 900 MB per copy); the per-pair search keeps to
    the P3 x P4 sums."""
    import tracemalloc

    import numpy as np

    from featherface_tune.tuner.solve import _find, _nearest_combo, base_cost, budget_tables
    from featherface_tune.tuner.space import build_space, default_space, int_range

    space = build_space(None, ["neck=bifpn", "bifpn_repeats=3", "neck_channels=42", "backbone_cbam=true",
                               "neck_cbam=true", "ssh_deformable=true", "shuffle=block"])
    space = space.with_domain("ssh_channels_p3", int_range(16, 316, 4)).with_domain(
        "ssh_channels_p4", int_range(16, 316, 4)).with_domain("ssh_channels_p5", int_range(16, 316, 4))
    space = space.with_domain("backbone_cbam_reduction", int_range(1, 16)).with_domain(
        "neck_cbam_reduction", int_range(1, 16))
    s = next(iter(space.iter_structures()))
    tables = budget_tables(space, s, 32, 32, params_only=True)
    base = base_cost(s, tables, 32, 32)
    assert base is not None
    # a count the grid has: the largest combination
    value = base[0] + sum(int(t.params.max()) for t in tables)
    tracemalloc.start()
    wit = _find(space, s, value)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert wit.params == value and peak < 20 * 2**20
    # against brute force on a small grid: the nearest count, exactly
    small = budget_tables(default_space(), s, 32, 32, params_only=True)
    grid = np.full([len(t.values) for t in small], base[0], dtype=np.int64)
    for i, t in enumerate(small):
        grid = grid + t.params.reshape([-1 if j == i else 1 for j in range(len(small))])
    for want in (base[0], value, int(grid.mean()) + 1, 489_001):
        d, ix = _nearest_combo(small, base[0], want)
        assert d == int(np.abs(grid - want).min()) == abs(int(grid[ix]) - want)
