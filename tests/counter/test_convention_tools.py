"""Each convention equals the real tool, run on a model with the module structure it assumes (the
official code's, see official_structure.py; `flops` and `fvcore` on this project's model), at several
widths and input sizes, odd ones included. Tools not installed (the `crosscheck` extra) are skipped."""

from __future__ import annotations

import io
import logging

import pytest
import torch

from featherface_tune.counter.analytic import count
from featherface_tune.errors import ConfigError
from featherface_tune.models.builder import build_model
from featherface_tune.models.presets import get_preset
from official_structure import OfficialStructure

OFFICIAL = get_preset("featherface-official")
CASES = [  # (config, h, w)
    (OFFICIAL, 640, 640),
    (OFFICIAL, 97, 131),
    (OFFICIAL.replace(neck_channels=24, ssh_channels=(8, 12, 20), backbone_cbam_reduction=8,
                      neck_cbam_reduction=3, bifpn_repeats=2), 65, 33),
    (get_preset("featherface-489k"), 120, 88),
    (get_preset("featherface-v1-489k"), 71, 57),
    (OFFICIAL.replace(neck="fpn", bifpn_repeats=0, ssh_deformable=False, shuffle="none", backbone_cbam=False,
                      neck_channels=40, ssh_channels=16, anchors_per_cell=3, landmarks=False), 50, 90),
    (OFFICIAL.replace(neck_channels=33, ssh_channels=[36, 4, 68], shuffle_groups=4, bifpn_repeats=1,
                      neck_cbam=False), 41, 41),
    (OFFICIAL.replace(backbone_width=0.5, neck_channels=20, ssh_channels=12, backbone_cbam_reduction=32), 77, 45),
]
IDS = ["official-640", "official-97x131", "narrow-65x33", "489k", "v1-489k", "fpn-plain", "odd-widths", "width-0.5"]


def _model(cfg, official: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return (OfficialStructure(cfg) if official else build_model(cfg)).eval()


def _x(h: int, w: int) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1))


def _expected(cfg, h, w, convention):
    r = count(cfg, h, w, convention=convention)
    return r.params, r.macs


def test_the_structure_is_the_official_models():
    """The official code measured: 592,371 parameters; thop 488,661 / 1,012,598,976 at 640x640."""
    thop = pytest.importorskip("thop")
    model = _model(OFFICIAL, official=True)
    assert sum(p.numel() for p in model.parameters()) == 592_371
    macs, params = thop.profile(model, (_x(640, 640),), verbose=False)
    assert (int(params), int(macs)) == (488_661, 1_012_598_976)


@pytest.mark.slow
@pytest.mark.parametrize("cfg, h, w", CASES, ids=IDS)
def test_thop(cfg, h, w):
    thop = pytest.importorskip("thop")
    if cfg.backbone_width != 0.25:  # the official code has no such MobileNetV1: the convention refuses
        with pytest.raises(ConfigError, match="fixed at width 0.25"):
            count(cfg, h, w, convention="thop")
        return
    macs, params = thop.profile(_model(cfg, official=True), (_x(h, w),), verbose=False)
    assert (int(params), int(macs)) == _expected(cfg, h, w, "thop")


@pytest.mark.slow
@pytest.mark.parametrize("cfg, h, w", CASES, ids=IDS)
def test_torchinfo(cfg, h, w):
    torchinfo = pytest.importorskip("torchinfo")
    expected = _expected(cfg, h, w, "torchinfo")
    for official in (True, False):  # it sees the same leaves in both structures
        s = torchinfo.summary(_model(cfg, official), input_data=_x(h, w), verbose=0)
        assert (s.total_params, s.total_mult_adds) == expected


@pytest.mark.slow
@pytest.mark.parametrize("cfg, h, w", CASES, ids=IDS)
def test_ptflops_default_backend(cfg, h, w):
    ptflops = pytest.importorskip("ptflops")
    macs, params = ptflops.get_model_complexity_info(
        _model(cfg, official=True), (3, h, w), as_strings=False, print_per_layer_stat=False,
        verbose=False, ost=io.StringIO())
    assert (params, macs) == _expected(cfg, h, w, "ptflops")


@pytest.mark.slow
@pytest.mark.parametrize("cfg, h, w", CASES, ids=IDS)
def test_ptflops_aten(cfg, h, w):
    ptflops = pytest.importorskip("ptflops")
    macs, params = ptflops.get_model_complexity_info(
        _model(cfg, official=True), (3, h, w), backend="aten", as_strings=False,
        print_per_layer_stat=False, verbose=False, ost=io.StringIO())
    assert (params, macs) == _expected(cfg, h, w, "ptflops-aten")


@pytest.mark.slow
@pytest.mark.parametrize("cfg, h, w", CASES, ids=IDS)
def test_flop_counter_and_stock_fvcore(cfg, h, w):
    from fvcore.nn import FlopCountAnalysis
    from torch.utils.flop_counter import FlopCounterMode

    model, x = _model(cfg, official=False), _x(h, w)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    flops = _expected(cfg, h, w, "flops")[1]
    assert fc.get_total_flops() == flops
    # on the official structure its DCN op is opaque: the main convs' 2 x MACs are missing
    # (the 1,906,996,352 measured on the official code at 640x640)
    main = _expected(cfg, h, w, "numel")[1] - _expected(cfg, h, w, "fvcore-stock")[1]
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        _model(cfg, official=True)(x)
    assert fc.get_total_flops() == flops - 2 * main
    if (cfg, h, w) == (OFFICIAL, 640, 640):
        assert fc.get_total_flops() == 1_906_996_352
    # stock fvcore has no handle for the official code's opaque DCN op: it counts it 0
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    fa = FlopCountAnalysis(_model(cfg, official=True), x)
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    assert fa.total() == _expected(cfg, h, w, "fvcore-stock")[1]
    if cfg.ssh_deformable:
        assert "featherface_tune_test::opaque_deform_conv2d" in fa.unsupported_ops()
