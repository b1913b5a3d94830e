"""Counting conventions, analytically: the paper's thop figures, the per-term API the solver sums,
the reconciliation table, and one-line errors. (The real tools are run in test_convention_tools.)"""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from featherface_tune.counter.analytic import GROUPS, count
from featherface_tune.counter.conventions import (
    CONVENTIONS, NAMES, countable, get_convention, reconcile, reconcile_json,
)
from featherface_tune.models.arch import TERMS, fields_of, sizes, term_price
from featherface_tune.errors import ConfigError
from featherface_tune.models.builder import build_model
from featherface_tune.models.presets import get_preset
from strategies import configs

OFFICIAL = get_preset("featherface-official")


def test_thop_is_the_papers_count_of_the_official_code():
    r = count(OFFICIAL, 640, 640, convention="thop")
    assert (r.params, r.macs) == (488_661, 1_012_598_976) and r.convention == "thop"
    true = count(OFFICIAL).modules
    # thop misses the 15 DCN main convs (ssh) and the 30 BiFPN fusion weights (neck), nothing else
    main_weights = 3 * 9 * (64 * 32 + 64 * 16 + 3 * 16 * 16)  # per level: 64->32, 64->16, three 16->16
    assert main_weights == 103_680 and r.modules["ssh"].params == true["ssh"].params - main_weights
    assert r.modules["neck"].params == true["neck"].params - 30
    assert all(r.modules[g].params == true[g].params for g in GROUPS if g not in ("ssh", "neck"))


def test_the_papers_489000_is_reachable_in_thop():
    """The example in the conventions module doc: a config that thop counts at exactly 489,000."""
    cfg = OFFICIAL.replace(neck_channels=40, backbone_cbam_reduction=4, neck_cbam_reduction=16,
                           ssh_channels=[76, 128, 128])
    assert (count(cfg, convention="thop").params, count(cfg).params) == (489_000, 643_713)


def test_other_tools_figures_of_the_official_code():
    """The figures the issue measured on the official code at 640x640 (the tools are run elsewhere)."""
    figures = {name: count(OFFICIAL, convention=name) for name in NAMES}
    assert figures["numel"].macs == figures["fvcore"].macs == 1_274_888_576
    assert figures["fvcore-stock"].macs == 984_584_576
    assert figures["torchinfo"].macs == 957_496_940
    assert figures["ptflops-aten"].macs == 957_487_936
    assert figures["ptflops"].macs == 1_008_929_884
    assert figures["flops"].macs == 2_487_604_352
    assert {f.params for n, f in figures.items() if n != "thop"} == {592_371}


def test_default_counts_every_convolution_and_dense_is_an_option():
    full, dense = count(OFFICIAL), count(OFFICIAL, dcn_macs="dense")
    assert full.dcn_macs == "full" and full.macs == dense.macs + full.dcn_offset_macs
    assert dense.macs == 915_637_376
    assert count(OFFICIAL, convention="numel", dcn_macs="dense") == dense


@settings(max_examples=60, deadline=None)
@given(cfg=configs())
def test_search_terms_sum_to_count_in_every_convention(cfg):
    """The terms a solver sums (base, the three levels, the CBAM ratios), each restated in a
    convention, add up to count(): every block is in exactly one term and the rules are linear."""
    h, w = 96, 160
    for name in NAMES:
        if CONVENTIONS[name].official_only and cfg.backbone_width != 0.25:
            with pytest.raises(ConfigError, match="fixed at width 0.25"):
                count(cfg, h, w, convention=name)
            continue
        for dcn in (("full", "dense") if name == "numel" else ("full",)):
            r = count(cfg, h, w, dcn_macs=dcn, convention=name)
            conv = get_convention(name, dcn)
            terms = [conv.total(term_price(fields_of(cfg), t, sizes(h, w))) for t in TERMS]
            assert (sum(t[0] for t in terms), sum(t[1] for t in terms)) == (r.params, r.macs), (name, dcn)


@settings(max_examples=40, deadline=None)
@given(cfg=configs(max_width=48))
def test_thop_params_miss_exactly_the_functional_and_non_leaf_weights(cfg):
    """numel - thop == the deformable convs' main weights + the parameters held directly by non-leaf
    modules (BiFPN fusion weights), read off the built model rather than the formulas."""
    cfg = cfg.replace(backbone_width=0.25, backbone_cbam_reduction=min(cfg.backbone_cbam_reduction, 64))
    model = build_model(cfg)
    missed = sum(p.numel() for name, p in model.named_parameters() if ".regular_conv." in name)
    for m in model.modules():
        if any(True for _ in m.children()):
            missed += sum(p.numel() for p in m.parameters(recurse=False))
    true, thop = count(cfg, 64, 64), count(cfg, 64, 64, convention="thop")
    assert true.params - thop.params == missed


def test_reconciliation_table_adds_up():
    figures = {f.name: f for f in reconcile(OFFICIAL)}
    assert list(figures) == list(NAMES)
    true = count(OFFICIAL)
    for f in figures.values():
        conv = CONVENTIONS[f.name]
        assert f.params_delta == sum(d.params for d in f.differences) == f.params - true.params
        assert f.macs_delta == sum(d.macs for d in f.differences) == f.macs - conv.scale * true.macs
        for d in f.differences:
            assert sum(p for p, _ in d.modules.values()) == d.params
    thop = {d.what: d for d in figures["thop"].differences}
    assert thop["DCN main convs"].modules["ssh"] == (-103_680, -290_304_000)
    assert "not hooked" in thop["DCN main convs"].why
    assert thop["BiFPN fusion weights"].modules == {"neck": (-30, 0)}
    assert figures["numel"].differences == ()
    data = reconcile_json(OFFICIAL, 640, 640)
    assert data["true"] == {"params": 592_371, "macs": 1_274_888_576}
    assert [c["convention"] for c in data["conventions"]] == list(NAMES)


def test_reconciliation_marks_what_a_convention_cannot_count():
    wide = OFFICIAL.replace(backbone_width=0.5)
    figures = {f.name: f for f in reconcile(wide, 64, 64)}
    assert figures["thop"].params is None and "fixed at width 0.25" in figures["thop"].error
    assert figures["numel"].error is None


@pytest.mark.parametrize("call, message", [
    (lambda: count(OFFICIAL, convention="paper"),
     "convention='paper': unknown; known conventions: numel, fvcore, fvcore-stock, thop, torchinfo"),
    (lambda: count(OFFICIAL.replace(backbone_width=0.5), convention="thop"),
     "convention 'thop' counts the official code's modules, whose MobileNetV1 is fixed at width 0.25: "
     "backbone_width=0.5 cannot be counted"),
    (lambda: count(OFFICIAL, dcn_macs="dense", convention="thop"),
     "dcn_macs='dense': applies to the numel convention only; convention thop counts"),
    (lambda: get_convention("numel", "both"), "dcn_macs='both': must be one of dense, full"),
    (lambda: get_convention("THOP"), "convention='THOP': unknown"),
])
def test_bad_conventions_are_one_line_errors(call, message):
    with pytest.raises(ConfigError, match=None) as exc:
        call()
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_countable_accepts_every_official_width_config():
    """At the official width any structure is countable; without DCN and BiFPN, thop misses no
    parameter (the only ones it cannot see are the DCN main convs' and the BiFPN fusion weights)."""
    cfg = OFFICIAL.replace(neck="fpn", bifpn_repeats=0, ssh_deformable=False, shuffle="none")
    assert countable("thop", cfg) is None
    assert count(cfg, convention="thop").params == count(cfg).params
    assert count(OFFICIAL, convention="thop").params < count(OFFICIAL).params


def test_a_convention_travels_as_one_object():
    """The Convention holds its DCN MAC convention: counting with the object is counting with the
    two strings, and a result (or a budget) gives the object back."""
    dense = get_convention("numel", "dense")
    assert (dense.name, dense.dcn_macs) == ("numel", "dense") and get_convention("thop").dcn_macs == "full"
    assert count(OFFICIAL, convention=dense) == count(OFFICIAL, dcn_macs="dense")
    assert count(OFFICIAL, convention=get_convention("thop")) == count(OFFICIAL, convention="thop")
    assert count(OFFICIAL, dcn_macs="dense").counting == dense
    assert count(OFFICIAL, convention=dense).macs < count(OFFICIAL).macs


# ---- a new convention is one entry -------------------------------------------------------------

def test_a_new_convention_is_one_entry(monkeypatch, tmp_path):
    """Registering one Convention (its rules) is all it takes: the counter counts in it, the solver
    proves and repairs in it, the search lands on its figure, a study records it by name (and reads
    it back), a report and a budget file name it; nothing else changes."""
    import json

    import torch
    from typer.testing import CliRunner

    from featherface_tune import search
    from featherface_tune.cli import app
    from featherface_tune.budgets.file import parse_budget
    from featherface_tune.budgets.gate import evaluate
    from featherface_tune.counter.conventions import Convention, Rule
    from featherface_tune.reports.data import parse_record
    from featherface_tune.reports.tables import count_table
    from featherface_tune.tuner import records as R
    from featherface_tune.tuner.objectives import summarize
    from featherface_tune.tuner.solve import Repairer, prove
    from featherface_tune.tuner.space import build_space, knobs_from_config

    no_bn = Convention("no-bn", "trainable parameters but the BatchNorms'; BatchNorm MACs 0",
                       (Rule("BatchNorm", "left out", lambda p: (-p.bn_params, -p.bn_macs)),))
    monkeypatch.setitem(CONVENTIONS, no_bn.name, no_bn)
    assert get_convention("no-bn") is no_bn
    # the counter: every parameter but the BatchNorms' of the built model
    model = build_model(OFFICIAL)
    bn = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    r = count(OFFICIAL, 64, 64, convention="no-bn")
    assert bn > 0 and r.params == sum(p.numel() for p in model.parameters()) - bn and r.convention == "no-bn"
    assert r.counting is no_bn and r.macs < count(OFFICIAL, 64, 64).macs
    assert count_table(r).caption == "MACs at 64x64, no-bn convention"
    figure = {f.name: f for f in reconcile(OFFICIAL, 64, 64)}["no-bn"]  # the reconciliation table lists it
    assert (figure.params, figure.params_delta) == (r.params, -bn)
    cli = CliRunner().invoke(app, ["count", "--preset", "featherface-official", "--input-size", "64", "64",
                                   "--convention", "no-bn", "--json"])
    assert cli.exit_code == 0 and json.loads(cli.stdout)["params"] == r.params
    # the solver: a tiny space around the official config, its own no-bn count as the target
    space = build_space(None, [f"{k}={str(v).lower()}" for k, v in OFFICIAL.to_dict().items()
                               if k not in ("ssh_channels", "backbone_width")])
    proof = prove(space, r.params, 0, input_size=(64, 64), counting=no_bn)
    assert proof.exact is not None and len(proof.exact) >= 1 and proof.exact.counting is no_bn
    for i in range(len(proof.exact)):
        c = count(proof.exact.config(i), 64, 64, convention=no_bn)
        assert (c.params, c.macs) == (r.params, int(proof.exact.macs[i]))
    assert count(OFFICIAL, 64, 64).params != r.params  # the true count would miss the window
    sol = Repairer(space, r.params, 0, (64, 64), no_bn, exact=proof.exact).repair(knobs_from_config(OFFICIAL))
    assert sol is not None and (sol.params, sol.macs, sol.distance) == (r.params, r.macs, 0)
    # the search lands on the new figure and records the convention by name
    res = search(r.params, space=space, objective="macs", input_size=(64, 64), convention="no-bn", top=1)
    assert count(res.best[0].config, 64, 64, convention=no_bn).params == r.params
    spec = R.StudySpec(r.params, 0, (64, 64), ("macs",), None, space.to_dict(), counting=no_bn)
    stored = spec.to_attr()
    assert (stored["convention"], stored["dcn_macs"]) == ("no-bn", "full")
    assert R.StudySpec.from_attr(stored) == spec and parse_record("s", {R.STUDY_ATTR: stored}).counting is no_bn
    assert "counted as no-bn" in summarize(spec)
    # a budget file names it, and the gate counts in it
    f = tmp_path / "budget.toml"
    f.write_text(f'convention = "no-bn"\n[model]\npreset = "featherface-official"\n[params]\ntarget = {r.params}\n')
    budget = parse_budget(f.read_text(), f)
    assert budget.counting is no_bn and evaluate(budget).ok
