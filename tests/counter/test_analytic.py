"""Analytic counts: the acceptance figures, numel() over random configs, fvcore over random sizes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featherface_tune.counter.analytic import GROUPS, count, count_params
from featherface_tune.counter.crosscheck import check, numel_by_group
from featherface_tune.errors import ConfigError
from featherface_tune.models.builder import build_model, count_parameters
from featherface_tune.models.presets import get_preset
from strategies import configs

FIGURES = {  # params, MACs at 640x640 without the DCN offset/modulator convs (dense), with them (default)
    "retinaface-mnet025": (426_608, 1_005_952_000, 1_005_952_000),
    "featherface-official": (592_371, 915_637_376, 1_274_888_576),
    "featherface-v1-489k": (488_664, 715_928_576, 1_007_820_176),
}


@pytest.mark.parametrize("name", FIGURES)
def test_acceptance_figures(name):
    params, macs, full = FIGURES[name]
    cfg = get_preset(name)
    r = count(cfg)
    assert (r.params, r.macs, r.dcn_macs) == (params, full, "full")
    assert count(cfg, dcn_macs="dense").macs == macs == full - r.dcn_offset_macs
    assert count_params(cfg) == params
    assert sum(c.params for c in r.modules.values()) == params and tuple(r.modules) == GROUPS


def test_json_shape():
    data = count(get_preset("featherface-489k"), 320, 256).to_json()
    assert data["params"] == 489_000 and data["input_size"] == [320, 256]
    assert set(data["modules"]) == set(GROUPS)
    assert all(set(v) == {"params", "macs"} for v in data["modules"].values())


def test_params_do_not_depend_on_input_size():
    cfg = get_preset("featherface-official")
    assert {count(cfg, h, w).params for h, w in [(32, 32), (33, 71), (640, 640), (1025, 511)]} == {592_371}


def test_macs_grow_with_input_and_bad_sizes_refused():
    cfg = get_preset("featherface-official")
    assert count(cfg, 320, 320).macs < count(cfg, 640, 640).macs
    with pytest.raises(ConfigError, match="input size 0x640 must be positive"):
        count(cfg, 0, 640)
    with pytest.raises(ConfigError, match="dcn_macs='both': must be one of dense, full"):
        count(cfg, dcn_macs="both")


@pytest.mark.slow
@settings(max_examples=50, deadline=None)  # instance by instance, numel() is also the price in tests/models/test_arch.py
@given(cfg=configs())
def test_params_equal_numel_for_random_configs(cfg):
    model = build_model(cfg)
    r = count(cfg, 64, 64)
    assert r.params == count_parameters(model)
    by_group = numel_by_group(model)
    assert {g: c.params for g, c in r.modules.items()} == by_group


@pytest.mark.slow
# 6: the analytic MACs also equal torch's FlopCounterMode at fixed odd sizes and widths
# (tests/counter/test_convention_tools.py: official at 640 and 97x131, 489k, v1-489k, width 0.5, 65x33, odd widths)
@settings(max_examples=6, deadline=None)
@given(cfg=configs(max_width=40), h=st.integers(32, 160), w=st.integers(32, 160),
       dcn=st.sampled_from(["dense", "full"]))
def test_macs_equal_fvcore_at_random_sizes(cfg, h, w, dcn):
    result = check(cfg, h, w, dcn_macs=dcn)
    assert result.ok, result.mismatches()
    assert "featherface_tune::deform_conv2d" not in result.unsupported_ops


def test_fvcore_check_at_odd_size_and_model_untouched():
    cfg = get_preset("featherface-official")
    model = build_model(cfg).train()
    keys = list(model.state_dict())
    buffers = [n for n, _ in model.named_buffers()]
    result = check(cfg, 97, 131, model=model)
    assert result.ok, result.mismatches()
    assert result.torch_flops > 0
    assert list(model.state_dict()) == keys and [n for n, _ in model.named_buffers()] == buffers
    assert model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_deformable_conv_is_never_zero_in_fvcore():
    cfg = get_preset("featherface-official")
    dense = check(cfg, 64, 64, dcn_macs="dense")
    plain = check(cfg.replace(ssh_deformable=False), 64, 64, dcn_macs="dense")
    # same dense-conv MACs whether deformable or not: the handle counts the DCN's kernel
    assert dense.fvcore_macs == plain.fvcore_macs > 0
    full = check(cfg, 64, 64, dcn_macs="full")
    assert full.fvcore_macs > dense.fvcore_macs


def test_crosscheck_detects_a_wrong_count(monkeypatch):
    """The check must be able to fail: perturb one block's formula and see it caught."""
    import dataclasses

    import featherface_tune.counter.analytic as analytic
    from featherface_tune.models import arch
    from featherface_tune.models.arch.cost import Cost, Priced

    def wrong(kind, c, groups, hw):
        cost, parts = arch.shuffle.price_shuffle(kind, c, groups, hw)
        return Priced(cost + Cost(1, 1), parts)

    monkeypatch.setattr(arch, "BLOCKS", tuple(dataclasses.replace(b, price=wrong) if b.name == "shuffle" else b
                                              for b in arch.BLOCKS))
    analytic.clear_caches()
    try:
        result = check(get_preset("featherface-official"), 64, 64)
    finally:
        monkeypatch.undo()
        analytic.clear_caches()
    assert not result.ok
    assert any(m.startswith("shuffle") for m in result.mismatches())
