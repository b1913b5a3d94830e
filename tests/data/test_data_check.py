"""`data check DIR`: both layouts, missing images, the val ground truth and the backbone file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from featherface_tune.data.demo import write_demo

    root = tmp_path_factory.mktemp("demo") / "d"
    write_demo(root, train=3, val=2, seed=0)
    return root


def test_complete_folder_is_ready(demo: Path) -> None:
    r = runner.invoke(app, ["data", "check", str(demo), "--backbone", "none", "--json"])
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert js["ok"] and not js["problems"]
    assert {(s["layout"], s["split"], s["listed"], s["missing"]) for s in js["splits"]} == {
        ("retinaface", "train", 3, 0), ("retinaface", "val", 2, 0), ("official", "train", 3, 0),
        ("official", "val", 2, 0)}
    assert js["ground_truth"]["images"] == 2 and js["ground_truth"]["error"] is None
    assert any("12,880" in n for n in js["notes"])  # a subset is a note, not a problem


def test_missing_pieces_are_listed(demo: Path, tmp_path: Path) -> None:
    data = tmp_path / "d"
    shutil.copytree(demo, data)
    gone = next((data / "WIDER_train" / "images").rglob("*.jpg"))
    gone.unlink()
    (data / "ground_truth" / "wider_hard_val.mat").unlink()
    shutil.rmtree(data / "val")  # the RetinaFace val split: the official one remains
    r = runner.invoke(app, ["data", "check", str(data), "--backbone", str(tmp_path / "nope.tar")])
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert gone.name in r.stdout and "1 of 3 listed images missing" in r.stdout
    assert "wider_hard_val.mat" in r.stdout and "nope.tar" in r.stdout and "is absent" in r.stdout
    assert r.stderr.strip().count("\n") == 0 and "3 problem(s)" in r.stderr
    r = runner.invoke(app, ["data", "check", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "nowhere" in r.stderr


def test_backbone_file_is_loaded(demo: Path) -> None:
    src = Path(__file__).resolve().parents[2].parent / "shared" / "weights" / "mobilenetV1X0.25_pretrain.tar"
    if not src.is_file():
        pytest.skip(f"{src} not present")
    r = runner.invoke(app, ["data", "check", str(demo), "--backbone", str(src), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["backbone"] == {"file": str(src), "error": None}


def test_help_follows_the_conventions() -> None:
    long = runner.invoke(app, ["data", "check", "--help"], terminal_width=100)
    short = runner.invoke(app, ["data", "check", "-h"], terminal_width=100)
    assert long.exit_code == short.exit_code == 0 and long.output == short.output
    assert "--json" in long.output and "<bool>" not in long.output
