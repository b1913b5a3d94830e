"""search --pruner: the pruner each name builds, a real Optuna study with Hyperband over proxy
epochs, and the search's one-line errors for a bad pruner or an absent device."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.errors import InputError
from featherface_tune.models.presets import get_preset
from featherface_tune.training.proxy import make_pruner, proxy_objective

demo = pytest.importorskip("featherface_tune.data.demo")


def test_make_pruner() -> None:
    assert isinstance(make_pruner("median"), optuna.pruners.MedianPruner)
    hb = make_pruner("hyperband", 9)
    assert isinstance(hb, optuna.pruners.HyperbandPruner)
    assert hb._min_resource == 1 and hb._max_resource == 9 and hb._reduction_factor == 3
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)
    with pytest.raises(InputError, match="^pruner='asha': must be one of median, hyperband, none$"):
        make_pruner("asha")


@pytest.mark.slow
def test_hyperband_prunes_proxy_trials_by_epoch(tmp_path: Path) -> None:
    """Four trials of 3 epochs under Hyperband: every trial reports each epoch as a step (the resource
    Hyperband's brackets count), and a completed one ran all 3. Whether one stops early depends on the
    values; the stop itself (TrialPruned after the epoch the pruner names) is test_proxy_objective's."""
    data = tmp_path / "demo"
    demo.write_demo(data, train=8, val=4, seed=0)
    # two networks, so the trials' values differ; the smallest preset twice over (the steps reported do not
    # depend on the architecture, and a DCN/BiFPN model trains several times slower on a CPU)
    small = get_preset("retinaface-mnet025")
    cfgs = [small, small.replace(neck_channels=32, ssh_channels=32)]
    study = optuna.create_study(direction="maximize", pruner=make_pruner("hyperband", 3),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    fid = {"epochs": 3, "image_size": 64, "batch_size": 4, "bn_recalibrate": 1, "metric": "easy", "val_max_side": 96}

    def objective(trial: optuna.Trial) -> float:
        cfg = cfgs[trial.suggest_int("c", 0, 1)]
        return proxy_objective(cfg, data, {**fid, "seed": trial.number}, trial, device="cpu")

    study.optimize(objective, n_trials=4)
    states = [t.state for t in study.trials]
    assert all(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states)
    for t in study.trials:
        steps = sorted(t.intermediate_values)
        assert steps == list(range(1, len(steps) + 1)) and steps  # epochs are the resource
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert steps[-1] == 3


def test_search_rejects_bad_pruner_and_absent_device(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["search", "--target", "489000", "--pruner", "asha",
                                 "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    assert r.exit_code != 0 and "--pruner 'asha': must be one of" in r.output and "Traceback" not in r.output
    if torch.cuda.is_available():
        return
    r = CliRunner().invoke(app, ["search", "--target", "489000", "--proxy-data", str(tmp_path),
                                 "--device", "cuda", "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    assert r.exit_code != 0 and "--device 'cuda': CUDA is not available" in r.output
