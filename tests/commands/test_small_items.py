"""The small things a newcomer meets: help text that reads as written, calibrate's tolerance as
search's, a warning where calibration statistics say little, quiet NMS on an untrained model's boxes,
and the gate's DCN hint only where it would help."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from featherface_tune.cli import app

runner = CliRunner()


def test_help_keeps_brackets_and_whole_sentences():
    r = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "200"})
    assert "knob = value | [values] | {min, max, step}" in r.output
    count = typer.main.get_command(app).commands["count"]  # type: ignore[attr-defined]
    paragraphs = count.help.split("\n\n")
    assert len(paragraphs) == 2 and all("\n" not in p for p in paragraphs)
    assert "(default: the official FeatherFace)" in paragraphs[1]


def test_calibrate_takes_a_percent_tolerance_and_warns_about_few_configs(tmp_path: Path):
    r = runner.invoke(app, ["calibrate", "--proxy-data", str(tmp_path), "--tolerance", "0.1%", "--configs", "2",
                            "--epochs", "4", "--reference-epochs", "3"])
    assert r.exit_code != 0 and "must exceed" in r.output  # got past the tolerance
    assert "--configs 2: with fewer than 4 configs" in " ".join(r.output.split())
    r = runner.invoke(app, ["calibrate", "--proxy-data", str(tmp_path), "--tolerance", "0.1x"])
    assert r.exit_code == 2 and "--tolerance '0.1x'" in r.output


def test_nms_on_infinite_boxes_warns_nothing():
    from featherface_tune.inference.nms import nms_plain

    boxes = np.array([[0, 0, np.inf, np.inf], [0, 0, 10, 10], [1e38, 1e38, 3e38, 3e38]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keep = nms_plain(boxes, np.array([0.9, 0.8, 0.7], dtype=np.float32), 0.4)
    assert keep[0] == 0


@pytest.mark.parametrize("max_macs, hinted", [(900_000_000, True), (700_000_000, False)])
def test_the_dense_macs_hint_only_where_dense_macs_pass(tmp_path: Path, monkeypatch, max_macs, hinted):
    (tmp_path / "b.toml").write_text('[model]\npreset = "featherface-489k"\n[params]\ntarget = 489000\n'
                                     f'[macs]\ninput_size = [640, 640]\nmax = {max_macs}\n')
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["gate", "b.toml"])
    assert r.exit_code == 1
    assert ('dcn_macs = "dense"' in r.output) is hinted


def test_export_takes_threads():
    r = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert "--threads" in r.output


@pytest.mark.slow  # a whole thop search (about 3 s idle, 6 s under load)
def test_an_export_remembers_its_convention(tmp_path: Path, monkeypatch):
    """`count --config best.toml` shows the figure the search hit, in the search's convention."""
    import json

    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["search", "--target", "489000", "--convention", "thop", "--top", "1", "--export",
                            "best.toml", "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    assert r.exit_code == 0, r.output
    assert '[counted]\nconvention = "thop"' in (tmp_path / "best.toml").read_text()
    counted = json.loads(runner.invoke(app, ["count", "--config", "best.toml", "--json"]).stdout)
    assert counted["params"] == 489_000 and counted["convention"] == "thop"
    true = json.loads(runner.invoke(app, ["count", "--config", "best.toml", "--convention", "numel", "--json"]).stdout)
    assert true["params"] == 587_094  # the same config's true parameters (README: "587,094 true parameters")
