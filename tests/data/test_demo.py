"""`featherface-tune demo-data`: synthetic data in both layouts that round-trips through both readers and
the .mat reader, is labelled synthetic, deterministic per seed, and evaluates to AP 1 with perfect boxes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.data.demo import EVENTS, write_demo
from featherface_tune.data.mat import SETTINGS, read_ground_truth
from featherface_tune.data.readers import read_any, read_bbx_gt, read_label_txt
from featherface_tune.errors import InputError

runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo(root, train=16, val=12, seed=7)
    return root


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes() if p.suffix != ".mat" else p.read_bytes()[128:])  # .mat header has a timestamp
    return h.hexdigest()


@pytest.mark.parametrize("split", ["train", "val"])
def test_both_layouts_hold_the_same_faces(demo, split):
    a = read_label_txt(demo / split / "label.txt")
    b = read_bbx_gt(demo / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt", demo / f"WIDER_{split}" / "images")
    assert len(a) == len(b) == (16 if split == "train" else 12)
    for ra, rb in zip(a, b):
        assert (ra.event, ra.name) == (rb.event, rb.name)
        assert ra.event in EVENTS and "Synthetic" in ra.event and "synthetic" in ra.name
        np.testing.assert_array_equal(ra.boxes, rb.boxes)
        assert ra.path.read_bytes() == rb.path.read_bytes()
    assert any(len(r.boxes) == 0 for r in a) if split == "train" else True  # index 15 has no face
    assert {r.event for r in a} == set(EVENTS)
    assert read_any(demo, split)[0].name == a[0].name


def test_train_landmarks_and_scales(demo):
    recs = read_label_txt(demo / "train" / "label.txt")
    boxes = np.concatenate([r.boxes for r in recs])
    lms = np.concatenate([r.landmarks for r in recs])
    assert boxes[:, 2].min() <= 10 and boxes[:, 2].max() >= 100  # a few pixels to hundreds
    has = lms[:, 0] >= 0
    assert has.any() and (~has).any()
    assert (lms[~has] == -1).all() and (boxes[~has, 2] < 10).all()
    x, y, w, h = boxes[has].T
    px, py = lms[has][:, 0::2], lms[has][:, 1::2]
    assert ((px >= x[:, None] - 0.1 * w[:, None]) & (px <= (x + 1.1 * w)[:, None])).all()
    assert ((py >= y[:, None]) & (py <= (y + h)[:, None])).all()
    assert (px[:, 0] < px[:, 1]).all() and (px[:, 3] < px[:, 4]).all()  # image-left landmark first
    val = read_label_txt(demo / "val" / "label.txt")
    assert all((r.landmarks == -1).all() for r in val)  # val label.txt: boxes only


def test_val_mat_matches_val_labels_and_size_rule(demo):
    gt = read_ground_truth(demo / "ground_truth")
    recs = {(r.event, r.name): r for r in read_label_txt(demo / "val" / "label.txt")}
    assert gt.faces.image_count == len(recs)
    kept = {s: 0 for s in SETTINGS}
    for i, e in enumerate(gt.events):
        for j, n in enumerate(gt.files[i]):
            np.testing.assert_array_equal(gt.boxes[i][j], recs[(e, n)].boxes)
            h = gt.boxes[i][j][:, 3]
            for s, lim in zip(SETTINGS, (50, 30, 10)):
                np.testing.assert_array_equal(gt.keep[s][i][j], np.flatnonzero(h >= lim) + 1)
                kept[s] += len(gt.keep[s][i][j])
    assert 0 < kept["easy"] < kept["medium"] < kept["hard"] < gt.faces.face_count


def test_perfect_predictions_evaluate_to_one(demo, tmp_path):
    from featherface_tune.evaluation.widerface import evaluate_dir, write_predictions

    gt = read_ground_truth(demo / "ground_truth")
    rng = np.random.default_rng(0)
    preds = {e: {n: np.column_stack([gt.boxes[i][j], rng.uniform(0.1, 1, len(gt.boxes[i][j]))])
                 for j, n in enumerate(gt.files[i])} for i, e in enumerate(gt.events)}
    write_predictions(tmp_path / "pred", preds)
    r = evaluate_dir(tmp_path / "pred", demo / "ground_truth")
    assert r.ap == pytest.approx({"easy": 1.0, "medium": 1.0, "hard": 1.0}, abs=1e-12) and not r.warnings


def test_labelled_synthetic_and_deterministic(demo, tmp_path):
    readme = (demo / "README.txt").read_text()
    assert readme.startswith("SYNTHETIC DEMO DATA") and "NOT WIDERFace" in readme
    again = tmp_path / "again"
    write_demo(again, train=16, val=12, seed=7)
    assert digest(again) == digest(demo)
    other = tmp_path / "other"
    write_demo(other, train=16, val=12, seed=8)
    assert digest(other) != digest(demo)


def test_refuses_non_empty_folder(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        write_demo(tmp_path, train=1, val=1)
    r = runner.invoke(app, ["demo-data", str(tmp_path), "--train", "1", "--val", "1"])
    assert r.exit_code == 2 and "not empty" in r.stderr and "Traceback" not in r.output
    r = runner.invoke(app, ["demo-data", str(tmp_path / "new"), "--train", "0"])
    assert r.exit_code == 2 and "at least 1" in r.stderr


def test_cli_says_synthetic(tmp_path):
    r = runner.invoke(app, ["demo-data", str(tmp_path / "d"), "--train", "4", "--val", "4", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.stdout
    r = runner.invoke(app, ["demo-data", str(tmp_path / "d"), "--train", "4", "--val", "4", "--force", "--json"])
    data = json.loads(r.stdout)
    assert data["synthetic"] is True and data["train_images"] == 4 and data["val_images"] == 4


def test_default_size(tmp_path):
    s = write_demo(tmp_path / "d")
    assert s.train_images == 64 and s.val_images == 32
    for layout, n in (("WIDER_train", 64), ("WIDER_val", 32), ("train", 64), ("val", 32)):  # both layouts
        assert len(list((tmp_path / "d" / layout).rglob("*.jpg"))) == n, layout
