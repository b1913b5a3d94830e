"""The proxy objective on a tiny synthetic demo set: reports per epoch, pruning, failure modes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from featherface_tune.errors import InputError
from featherface_tune.models.presets import get_preset
from featherface_tune.training import loop as loop_mod
from featherface_tune.training.loop import NonFiniteLoss

pytest.importorskip("featherface_tune.evaluation.widerface")
demo = pytest.importorskip("featherface_tune.data.demo")

CFG = get_preset("retinaface-mnet025")
FAST = {"epochs": 2, "image_size": 64, "batch_size": 4, "bn_recalibrate": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("proxy") / "demo"
    demo.write_demo(out, train=8, val=8, seed=0)
    return out


class Trial:
    def __init__(self, prune_at: int | None = None):
        self.prune_at = prune_at
        self.reports: list[tuple[int, float]] = []
        self.attrs: dict = {}

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return self.prune_at is not None and self.reports[-1][0] >= self.prune_at

    def set_user_attr(self, key, value) -> None:
        self.attrs[key] = value


def test_objective_reports_every_epoch(data):
    from featherface_tune.training.proxy import proxy_objective

    trial = Trial()
    value = proxy_objective(CFG, data, {**FAST, "metric": "easy"}, trial=trial)
    assert [s for s, _ in trial.reports] == [1, 2]
    assert value == trial.reports[-1][1] and 0.0 <= value <= 1.0 and math.isfinite(value)
    assert trial.attrs["proxy_epochs"] == 2 and set(trial.attrs["proxy_ap_settings"]) == {"easy", "medium", "hard"}
    assert trial.attrs["proxy_ap_settings"]["easy"] == value and "proxy_ap" not in trial.attrs


def test_objective_without_trial_evaluates_once(data):
    from featherface_tune.training.proxy import run_proxy

    res = run_proxy(CFG, data, FAST)
    assert [e for e, _ in res.history] == [2]
    assert res.value == res.ap["hard"]


def test_pruned_trial_raises(data):
    optuna = pytest.importorskip("optuna")
    from featherface_tune.training.proxy import proxy_objective

    trial = Trial(prune_at=1)
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        proxy_objective(CFG, data, {**FAST, "epochs": 3}, trial=trial)
    assert len(trial.reports) == 1


def test_nan_loss_is_a_failed_trial_not_a_crash(data, monkeypatch):
    from featherface_tune.training.proxy import proxy_objective

    real = loop_mod.build_model

    def poisoned(cfg):
        m = real(cfg)
        with torch.no_grad():
            m.BboxHead[1].conv1x1.weight.fill_(float("inf"))
        return m

    monkeypatch.setattr(loop_mod, "build_model", poisoned)
    with pytest.raises(NonFiniteLoss, match="non-finite loss"):
        proxy_objective(CFG, data, FAST, trial=Trial())


def test_bad_fidelity_is_an_input_error(data):
    from featherface_tune.training.proxy import proxy_objective

    with pytest.raises(InputError, match="unknown key 'epoch'"):
        proxy_objective(CFG, data, {"epoch": 1})
    with pytest.raises(InputError, match="metric"):
        proxy_objective(CFG, data, {"metric": "hardest"})
    with pytest.raises(InputError, match="^image_size=100: must be a positive multiple of 32"):
        proxy_objective(CFG, data, {"image_size": 100})
    with pytest.raises(InputError, match="ground truth"):
        empty = data.parent / "no_gt"
        if not empty.exists():
            import shutil

            shutil.copytree(data, empty, ignore=shutil.ignore_patterns("ground_truth"))
        proxy_objective(CFG, empty, FAST)


def test_val_subset_cuts_the_ground_truth(data):
    from featherface_tune.training.proxy import load_val

    full = load_val(data)
    part = load_val(data, val_subset=0.5)
    n_full = sum(len(f) for f in full.gt.files)
    n_part = sum(len(f) for f in part.gt.files)
    assert n_full == len(full.records) == 8
    assert n_part == len(part.records) < n_full
    kept = {(r.event, r.name) for r in part.records}
    assert {(e, f) for e, fs in zip(part.gt.events, part.gt.files) for f in fs} == kept


def test_val_max_side_scales_boxes_back(data, monkeypatch):
    import numpy as np

    from featherface_tune.inference import detector
    from featherface_tune.training.proxy import load_val, predict_records

    seen = []

    def whole_image(model, imgs, **kw):
        out = []
        for img in imgs:
            h, w = img.shape[:2]
            seen.append(max(h, w))
            out.append(detector.Detections(np.array([[0, 0, w, h]], np.float32), np.array([0.9], np.float32),
                                           None, (h, w)))
        return out

    monkeypatch.setattr(detector, "detect_batch", whole_image)
    val = load_val(data, max_side=64)
    cache: dict = {}
    for _ in range(2):  # the second pass reads the cache
        preds = predict_records(None, val.records, 64, cache)
        for r in val.records:
            from PIL import Image

            with Image.open(r.path) as im:
                w, h = im.size
            np.testing.assert_allclose(preds[r.event][r.name][0], [0, 0, w, h, 0.9], rtol=0.02, atol=0.5)
    assert max(seen) == 64 and len(seen) == 2 * len(val.records) and len(cache) == len(val.records)
