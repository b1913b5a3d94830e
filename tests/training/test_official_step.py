"""One `--recipe official` training step equals the official code's step on the same images, seed and
weights. The official numbers are data (tests/training/data/official_step.json): github
dohun-mat/FeatherFace `train.py`'s loop body (AdamW(net.parameters(), 1e-3), OneCycleLR(max_lr=1e-3),
its MultiBoxLoss with loc weight 2) was run once on CPU from the weights `featherface-official` gets at
seed 0, on the four images its `preproc` made from the draws in official_augment.json (cases 0-3).
Here the same images come from this project's OpenCV augmentation replaying those draws (equal bit for
bit: test_official_augment.py), and `train()` runs the step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from featherface_tune.data.records import ImageRecord
from featherface_tune.models.presets import get_preset
from featherface_tune.training import loop as loop_mod
from featherface_tune.training.augment import augment
from featherface_tune.training.loop import TrainOptions, train

from test_official_augment import DATA as AUGMENT, Replay, image, targets

OFFICIAL = json.loads((Path(__file__).parent / "data" / "official_step.json").read_text())


@pytest.mark.slow
def test_one_official_recipe_step_equals_the_official_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cases = AUGMENT["cases"][:4]
    samples = [augment(image(c["height"], c["width"]), targets(), 64, Replay(c["draws"]), image_ops="opencv")  # type: ignore[arg-type]
               for c in cases]

    class Recorded(loop_mod.FaceDataset):  # the official preproc's outputs, whatever the sample key
        def __getitem__(self, key):  # type: ignore[no-untyped-def]
            _epoch, index = key
            x, t = samples[index]
            return torch.from_numpy(x), torch.from_numpy(t)

    monkeypatch.setattr(loop_mod, "FaceDataset", Recorded)
    records = [ImageRecord(path=tmp_path / f"{i}.jpg", event="0--e", name=str(i), boxes=np.ones((1, 4), np.float32),
                           landmarks=-np.ones((1, 10), np.float32)) for i in range(4)]
    cfg = get_preset("featherface-official")
    options = TrainOptions(recipe="official", epochs=10, batch_size=4, image_size=64, max_steps=1, lr=None,
                           amp="off", device="cpu", progress=False, seed=0)
    loop_mod._seed_all(0)
    start = {n: p.detach().clone() for n, p in loop_mod.build_model(cfg).named_parameters()}
    res = train(cfg, records, options)
    step = res.history[0]
    assert res.global_step == 1
    assert step.loss == pytest.approx(OFFICIAL["loss"], rel=1e-5)
    assert (step.loc, step.conf, step.landm) == pytest.approx((OFFICIAL["loc"], OFFICIAL["conf"], OFFICIAL["landm"]),
                                                              rel=1e-5)
    assert step.lr == pytest.approx(OFFICIAL["lr"], rel=1e-12)  # OneCycleLR after one batch
    params = dict(res.model.named_parameters())
    assert sorted(params) == sorted(OFFICIAL["grad_norm"])  # the same tensors, all trained
    assert all(p.grad is not None for p in params.values())
    # gradients: near-equal tensor by tensor. Biases in front of a BatchNorm have a true gradient of ~0,
    # so theirs is rounding noise in both codes: those are bounded by the whole gradient's size instead.
    want = OFFICIAL["grad_norm"]
    got = {n: float(p.grad.double().norm()) for n, p in params.items()}  # type: ignore[union-attr]
    total = float(np.sqrt(sum(v * v for v in want.values())))
    assert float(np.sqrt(sum(v * v for v in got.values()))) == pytest.approx(total, rel=1e-5)
    close = [n for n in want if abs(got[n] - want[n]) <= 1e-4 * want[n]]
    assert len(close) >= 0.9 * len(want), sorted(set(want) - set(close))
    assert all(abs(got[n] - want[n]) <= 1e-5 * total for n in want)
    # AdamW's first step moves every weight by about lr (the sign of its gradient; a noise gradient may
    # flip it) plus the decay, so each update's norm is within 2 lr per element of the official one
    lr0 = 1e-3 / 25  # OneCycleLR's first learning rate: max_lr / div_factor
    for name, p in params.items():
        update = float((p.detach() - start[name]).double().norm())
        assert abs(update - OFFICIAL["update_norm"][name]) <= 2 * lr0 * np.sqrt(p.numel()), name
    assert sum(abs(float((p.detach() - start[n]).double().norm()) - OFFICIAL["update_norm"][n])
               <= 1e-4 * OFFICIAL["update_norm"][n] for n, p in params.items()) >= 0.9 * len(params)
    buffers = {k: float(v.double().sum()) for k, v in res.model.state_dict().items() if "running" in k}
    assert buffers == pytest.approx(OFFICIAL["buffer_sum"], rel=1e-5, abs=1e-6)  # BatchNorm statistics
