"""The training loop on tiny synthetic images: loss falls, resume is exact, NaN stops the run,
checkpoints, subset, CLI; and (slow) AP rises on the demo data."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from featherface_tune.data.records import ImageRecord
from featherface_tune.models.presets import get_preset
from featherface_tune.training import loop as loop_mod
from featherface_tune.training.dataset import FaceDataset, collate, stratified_subset
from featherface_tune.training.loop import NonFiniteLoss, TrainOptions, train

CFG = get_preset("retinaface-mnet025")


def draw_faces(root: Path, n: int, size: int = 128, seed: int = 0, events: int = 2) -> list[ImageRecord]:
    """Skin-coloured discs with dark eyes and mouth on a noisy background; five landmarks each."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 90, (size, size, 3), dtype=np.uint8))
        d = ImageDraw.Draw(img)
        boxes, lms = [], []
        for _ in range(int(rng.integers(1, 4))):
            s = float(rng.uniform(18, 56))
            x, y = float(rng.uniform(0, size - s)), float(rng.uniform(0, size - s))
            d.ellipse([x, y, x + s, y + s], fill=(225, 185, 150))
            pts = np.array([[0.3, 0.38], [0.7, 0.38], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]]) * s + [x, y]
            for px, py in pts[[0, 1]]:
                d.ellipse([px - s / 12, py - s / 12, px + s / 12, py + s / 12], fill=(30, 30, 30))
            d.line([tuple(pts[3]), tuple(pts[4])], fill=(120, 20, 20), width=max(1, int(s / 14)))
            boxes.append([x, y, s, s])
            lms.append(pts.reshape(-1) if rng.random() < 0.8 else -np.ones(10))
        event = f"{i % events}--Event{i % events}"
        path = root / event / f"img_{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=95)
        records.append(ImageRecord(path, event, path.stem, np.array(boxes, np.float32),
                                   np.array(lms, np.float32)))
    return records


def write_label_txt(root: Path, records: list[ImageRecord]) -> None:
    """RetinaFace layout: ROOT/train/label.txt + ROOT/train/images/<event>/<name>.jpg."""
    lines = []
    for r in records:
        lines.append(f"# {r.event}/{r.path.name}")
        for b, lm in zip(r.boxes, r.landmarks):
            pts = " ".join(f"{lm[2 * k]:.2f} {lm[2 * k + 1]:.2f} {'0.0' if lm[0] >= 0 else '-1.0'}"
                           for k in range(5)) if lm[0] >= 0 else " ".join(["-1.0"] * 15)
            lines.append(f"{b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f} {pts} 0.9")
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train" / "label.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> list[ImageRecord]:
    return draw_faces(tmp_path_factory.mktemp("synth") / "train" / "images", 16)


def opts(**kw) -> TrainOptions:
    base = dict(epochs=3, image_size=128, batch_size=4, progress=False, seed=0, lr=3e-3, cache_images=True)
    base.update(kw)
    return TrainOptions(**base)


def test_loss_falls(synth):
    torch.manual_seed(0)
    res = train(CFG, synth, opts(epochs=5))  # 20 steps at 128 px
    losses = res.step_losses
    assert len(losses) == 20 and res.stopped == "completed" and res.epochs_completed == 5
    assert all(math.isfinite(v) for v in losses)
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.85 * first, (first, last)
    assert res.history[-1].loss < res.history[0].loss


def test_resume_continues_identically(synth, tmp_path):
    full = train(CFG, synth, opts(out_dir=tmp_path / "a"))
    # stop inside epoch 2 (step 6 of 12), then resume to the end
    part = train(CFG, synth, opts(out_dir=tmp_path / "b", max_steps=6))
    assert part.stopped == "max_steps" and part.global_step == 6 and part.epochs_completed == 1
    rest = train(CFG, synth, opts(out_dir=tmp_path / "b", resume=True))
    assert rest.stopped == "completed" and rest.global_step == 12
    assert list(rest.step_losses) == list(full.step_losses)
    for (k, v), w in zip(full.model.state_dict().items(), rest.model.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)
    # resuming a finished run trains nothing more
    again = train(CFG, synth, opts(out_dir=tmp_path / "b", resume=True))
    assert again.global_step == 12 and list(again.step_losses) == list(full.step_losses)


def test_resume_checks_options(synth, tmp_path):
    train(CFG, synth, opts(out_dir=tmp_path, max_steps=1))
    with pytest.raises(loop_mod.InputError, match="batch_size"):
        train(CFG, synth, opts(out_dir=tmp_path, resume=True, batch_size=2))
    with pytest.raises(loop_mod.InputError, match="different config"):
        train(CFG.replace(neck_channels=32), synth, opts(out_dir=tmp_path, resume=True))
    with pytest.raises(loop_mod.InputError, match="no checkpoint"):
        train(CFG, synth, opts(out_dir=tmp_path / "none", resume=True))


def test_nan_loss_raises_nonfinite(synth, monkeypatch):
    real = loop_mod.build_model

    def poisoned(cfg):
        m = real(cfg)
        with torch.no_grad():
            m.ClassHead[0].conv1x1.bias.fill_(float("nan"))
        return m

    monkeypatch.setattr(loop_mod, "build_model", poisoned)
    with pytest.raises(NonFiniteLoss) as exc:
        train(CFG, synth, opts())
    msg = str(exc.value)
    assert "non-finite loss (nan) at epoch 1, step 1/4" in msg and "\n" not in msg
    assert exc.value.epoch == 1 and exc.value.step == 1
    assert isinstance(exc.value, loop_mod.FeatherFaceError)


def test_time_budget_stops_cleanly_with_a_checkpoint(synth, tmp_path):
    res = train(CFG, synth, opts(epochs=50, time_budget=1.0, out_dir=tmp_path))
    assert res.stopped == "time_budget" and res.epochs_completed < 50
    state = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert state["global_step"] == res.global_step
    assert (tmp_path / "model.pt").is_file()
    assert not list(tmp_path.glob(".*.tmp"))


def test_model_file_loads_for_prediction(synth, tmp_path):
    res = train(CFG, synth, opts(epochs=1, out_dir=tmp_path))
    ck = pytest.importorskip("featherface_tune.models.checkpoint")
    model, cfg, _ = ck.load_model(tmp_path / "model.pt", CFG)
    for k, v in res.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)


def test_stratified_subset(synth):
    recs = synth * 5  # 80 records, 40 per event
    sub = stratified_subset(recs, 0.25, seed=1)
    assert Counter(r.event for r in sub) == {"0--Event0": 10, "1--Event1": 10}
    assert stratified_subset(recs, 0.25, seed=1) == sub
    assert stratified_subset(recs, 0.25, seed=2) != sub
    assert len(stratified_subset(recs[:3], 0.01)) == 2  # every event keeps at least one image
    assert Counter(r.event for r in stratified_subset(recs, 20, seed=1)) == {"0--Event0": 10, "1--Event1": 10}
    for bad in (0.0, -1, 2.5, float("nan")):
        with pytest.raises(loop_mod.InputError, match=r"^fraction=.*: must be a fraction in \(0, 1\] or a whole number of images$"):
            stratified_subset(recs, bad)


def test_dataset_is_seeded_per_sample(synth):
    ds = FaceDataset(synth, 64, seed=3)
    a, ta = ds[(2, 5)]
    b, tb = ds[(2, 5)]
    c, _ = ds[(3, 5)]
    assert torch.equal(a, b) and torch.equal(ta, tb) and not torch.equal(a, c)
    x, t = collate([ds[(0, i)] for i in range(3)])
    assert x.shape == (3, 3, 64, 64) and len(t) == 3 and t[0].shape[1] == 15


def test_pretrained_backbone(synth, tmp_path):
    src = Path(__file__).resolve().parents[2].parent / "shared" / "weights" / "mobilenetV1X0.25_pretrain.tar"
    if not src.is_file():
        pytest.skip(f"{src} not present")
    res = train(CFG, synth, opts(epochs=1, max_steps=1, pretrained=src, lr=1e-12))
    sd = torch.load(src, map_location="cpu", weights_only=False)["state_dict"]
    w = sd["module.stage1.0.0.weight"]
    torch.testing.assert_close(res.model.body.stage1[0][0].weight.detach(), w, atol=1e-6, rtol=1e-4)


def _in_process(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """`python -m featherface_tune.cli ARGS` run in this process (CliRunner), as subprocess.run reports it."""
    from typer.testing import CliRunner

    from featherface_tune.cli import app

    r = CliRunner().invoke(app, cmd[3:])
    return subprocess.CompletedProcess(cmd, r.exit_code, r.stdout, r.stderr)


@pytest.mark.slow
def test_cli_train_json_and_errors(synth, tmp_path):
    root = tmp_path / "data"
    recs = draw_faces(root / "train" / "images", 4, size=96, seed=7)
    write_label_txt(root, recs)
    cmd = [sys.executable, "-m", "featherface_tune.cli", "train", "--data", str(root), "--preset",
           "retinaface-mnet025", "--epochs", "1", "--image-size", "64", "--batch-size", "2",
           "--pretrained", "none", "--out", str(tmp_path / "run"), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["epochs_completed"] == 1 and data["global_step"] == 2
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "model.pt").is_file()
    bad = _in_process(cmd[:-1] + ["--image-size", "100"])  # bad input: no process of its own needed
    assert bad.returncode == 2 and bad.stdout == ""
    assert "--image-size 100" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    missing = _in_process(cmd[:5] + [str(tmp_path / "nope")] + cmd[6:])
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "nope" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_data_ap_rises(tmp_path):
    """Proxy on the synthetic demo data: hard AP after the last epoch beats the first epoch's."""
    pytest.importorskip("featherface_tune.evaluation.widerface")
    demo = pytest.importorskip("featherface_tune.data.demo")
    from featherface_tune.training.proxy import run_proxy

    data = tmp_path / "demo"
    demo.write_demo(data)  # what `demo-data DIR` writes (tests/data/test_demo.py tests the command)

    class Trial:
        def __init__(self):
            self.reports: list[tuple[int, float]] = []
            self.attrs: dict = {}

        def report(self, value, step):
            self.reports.append((step, value))

        def should_prune(self):
            return False

        def set_user_attr(self, k, v):
            self.attrs[k] = v

    trial = Trial()
    # half the val set, stratified; batches of 4 (16 steps an epoch) of 256 px crops for 3 epochs: hard
    # AP 0.013 -> 0.089 (320 px, 5 epochs, every 3: 0.044 -> 0.156 in about 5 s more; batch 8, 8 epochs:
    # 0.055 -> 0.163 in 13 s more); 3 is off the every-2 schedule and still reported
    res = run_proxy(CFG, data, {"epochs": 3, "image_size": 256, "eval_every": 2, "lr": 3e-3, "val_subset": 0.5,
                                "batch_size": 4}, trial=trial)
    steps = [s for s, _ in trial.reports]
    assert steps == [2, 3]
    first, last = trial.reports[0][1], trial.reports[-1][1]
    assert last > first + 0.05, trial.reports
    assert res.value == last and res.ap["hard"] == last
    assert res.train.history[-1].loss < res.train.history[0].loss


def test_recalibrate_bn_averages_batch_statistics(synth):
    from featherface_tune.models.builder import build_model

    torch.manual_seed(0)
    model = build_model(CFG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds = FaceDataset(synth, 64, seed=0)
    first_bn = model.body.stage1[0][1]
    calibrated = loop_mod.recalibrate_bn(model, ds, batches=3, batch_size=2)
    for k, v in model.state_dict().items():  # the original model is untouched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not calibrated.training
    cal_bn = calibrated.body.stage1[0][1]
    assert int(cal_bn.num_batches_tracked) == 3
    assert not torch.allclose(cal_bn.running_mean, first_bn.running_mean)
    # the first BN's running mean is the average of the three batch means of its input
    g = torch.Generator().manual_seed(1_000_000)
    means = []
    for b in range(3):
        idx = torch.randint(len(ds), (2,), generator=g).tolist()
        x, _ = collate([ds[(1_000_000 + b, i)] for i in idx])
        with torch.no_grad():
            means.append(model.body.stage1[0][0](x).mean((0, 2, 3)))
    torch.testing.assert_close(cal_bn.running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)


def test_stop_reasons_keep_their_strings() -> None:
    """The enum's values are the strings summaries, trial attributes and checkpoints always held."""
    import json

    from featherface_tune.training.loop import StopReason

    assert [r.value for r in StopReason] == ["completed", "time_budget", "max_steps"]
    assert json.dumps({"stopped": StopReason.TIME_BUDGET}) == '{"stopped": "time_budget"}'
    assert f"stopped: {StopReason.MAX_STEPS}" == "stopped: max_steps" and StopReason.COMPLETED == "completed"


def test_train_cli_defaults_are_train_options_defaults() -> None:
    """`featherface-tune train` states its option defaults for --help; they must be TrainOptions'."""
    import inspect

    from featherface_tune.commands.train import train_cmd

    from featherface_tune.training.recipe import DEFAULT_RECIPE

    params = inspect.signature(train_cmd).parameters
    base = TrainOptions()
    pairs = {"image_size": "image_size", "subset": "subset",
             "time_budget": "time_budget", "optimizer": "optimizer", "lr": "lr", "weight_decay": "weight_decay",
             "warmup": "warmup_epochs", "seed": "seed", "workers": "num_workers",
             "cache_images": "cache_images", "bn_recalibrate": "bn_recalibrate", "device": "device"}
    for cli, field_name in pairs.items():
        assert params[cli].default == getattr(base, field_name), cli
    # the recipe's own defaults: None on the command line means "the recipe's"
    assert params["recipe"].default == DEFAULT_RECIPE
    for cli in ("epochs", "batch_size", "pretrained", "amp"):
        assert params[cli].default is None, cli


@pytest.mark.slow
def test_official_recipe_steps_onecycle_per_batch(synth, tmp_path):
    """--recipe official: epoch-end learning rates (and Adam's beta1) are torch's OneCycleLR(max_lr=1e-3)
    stepped once per batch, weight decay 0.01 sits on every tensor, and `train --json` reports them."""
    res = train(CFG, synth, opts(recipe="official", lr=None, epochs=3, image_size=64))  # 16 images: 4 steps/epoch
    ref_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], 1e-3)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1e-3, steps_per_epoch=4, epochs=3)
    want = []
    for _ in range(3):
        for _ in range(4):
            ref_opt.step()
            ref.step()
        want.append(ref.get_last_lr()[0])
    assert [h.lr for h in res.history] == want
    assert want[0] != want[1] != want[2]  # the schedule moves, so equality says something
    model = loop_mod.build_model(CFG)
    opt = loop_mod.make_optimizer(model, opts(recipe="official", lr=None))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.01
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == sum(p.numel() for p in model.parameters())
    short = loop_mod.make_optimizer(model, opts(recipe="short"))
    assert [g["weight_decay"] for g in short.param_groups] == [0.01, 0.0]
    sched = loop_mod.make_scheduler(opt, opts(recipe="official", lr=None, epochs=3), 4)
    ref_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], 1e-3)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1e-3, steps_per_epoch=4, epochs=3)
    betas, ref_betas = [], []
    for _ in range(12):
        for o, s in ((opt, sched), (ref_opt, ref)):
            o.step()
            s.step()
        betas.append(opt.param_groups[0]["betas"][0])
        ref_betas.append(ref_opt.param_groups[0]["betas"][0])
    assert betas == ref_betas and min(betas) < 0.86 and max(betas) > 0.94  # beta1 cycles 0.95 -> 0.85 -> 0.95


@pytest.mark.slow
def test_resume_extends_a_finished_run(synth, tmp_path):
    """--resume with more epochs continues a finished run on the schedule recomputed for the new length:
    the same as one run of that length (the official OneCycle schedule depends on it only through the
    learning rates after the resume point, which are recomputed)."""
    o = dict(recipe="official", lr=None, image_size=64, out_dir=tmp_path / "run")
    first = train(CFG, synth, opts(epochs=1, **o))
    more = train(CFG, synth, opts(epochs=2, resume=True, **o))
    assert first.global_step == 4 and more.global_step == 8 and more.epochs_completed == 2
    assert list(more.step_losses[:4]) == list(first.step_losses)
    ref_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], 1e-3)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1e-3, steps_per_epoch=4, epochs=2)
    for _ in range(8):
        ref_opt.step()
        ref.step()
    assert more.history[-1].lr == ref.get_last_lr()[0]
    with pytest.raises(loop_mod.InputError, match=r"^epochs=1: the run in .* is past it \(epoch 2, step 0\); "
                                                  r"extend it with a larger epochs$") as info:
        train(CFG, synth, opts(epochs=1, resume=True, **o))
    assert info.value.shown_as({"epochs": "--epochs"}.get).startswith("--epochs 1: the run in")


@pytest.mark.slow
def test_train_without_out_keeps_its_model(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from featherface_tune.cli import app
    from featherface_tune.data.demo import write_demo

    write_demo(tmp_path / "d", train=2, val=1, seed=0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "train-1").mkdir(parents=True)  # taken: the next free number is used
    r = CliRunner().invoke(app, ["train", "--data", "d", "--epochs", "2", "--image-size", "64", "--json",
                                 "--pretrained", "none"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["model"] == str(Path("runs") / "train-2" / "model.pt") and data["recipe"] == "official"
    assert data["batch_size"] == 32 and data["pretrained"] is None
    ref_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], 1e-3)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1e-3, steps_per_epoch=1, epochs=2)
    want = []
    for _ in range(2):  # 2 images, batch 32: one step an epoch
        ref_opt.step()
        ref.step()
        want.append(ref.get_last_lr()[0])
    assert [h["lr"] for h in data["history"]] == want
    assert (tmp_path / "runs" / "train-2" / "model.pt").is_file()
    assert "runs/train-2" in r.stderr
    # the official recipe without its backbone: one line naming the file and where it goes
    r = CliRunner().invoke(app, ["train", "--data", "d", "--epochs", "1", "--image-size", "64"])
    assert r.exit_code == 2 and "mobilenetV1X0.25_pretrain.tar" in r.stderr and "--pretrained none" in r.stderr
    assert not (tmp_path / "runs" / "train-3").exists()
