"""`search()` is quiet by default: no Optuna line per trial, a failed trial's traceback only at DEBUG
(its one-line reason on the trial), and a call whose every trial fails says so in `notes`."""

from __future__ import annotations

import logging

import pytest

from featherface_tune.tuner.api import search
from featherface_tune.tuner.space import load_space

NARROW = ('neck = "bifpn"\nbifpn_repeats = [2, 3]\nneck_channels = { min = 40, max = 72 }\n'
          'ssh_channels = { min = 48, max = 96 }\nneck_cbam_reduction = [4, 8, 16]\n'
          'solve = ["ssh_channels_p5", "neck_cbam_reduction", "backbone_cbam_reduction"]\n')


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("space") / "narrow.toml"
    path.write_text(NARROW)
    return load_space(path)


def _boom(cfg):
    raise ValueError("no good")


def test_a_search_prints_no_line_per_trial(space, capsys):
    res = search(489_000, space=space, objective=lambda cfg: -cfg.ssh_widths[0], trials=4, seed=1)
    assert res.best
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_failed_trials_are_one_line_reasons_and_an_all_failed_call_says_so(space, capsys, caplog):
    with caplog.at_level(logging.DEBUG, logger="featherface_tune.tuner.api"):
        res = search(489_000, space=space, objective=_boom, trials=3, seed=1)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    assert res.best == [] and any(n.startswith("every trial of this call failed") and "ValueError: no good" in n
                                  for n in res.notes)
    failed = [r for r in res.records if r.state == "FAIL"]
    assert failed and all(r.fail_reason == "ValueError: no good" for r in failed)
    debug = [r for r in caplog.records if r.name == "featherface_tune.tuner.api"]
    assert debug and debug[0].exc_info is not None  # the traceback, at DEBUG


def test_quiet_false_leaves_optuna_logging_alone(space, caplog):
    import optuna

    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.INFO, logger="optuna"):
            search(489_000, space=space, objective=lambda cfg: 1.0, trials=2, seed=1, quiet=False)
    finally:
        optuna.logging.disable_propagation()
    assert any("finished with value" in r.getMessage() for r in caplog.records)
