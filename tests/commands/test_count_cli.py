"""`featherface-tune count` and `presets` through the CLI: JSON contract, exits, one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_count_json_contract():
    r = run("count", "--preset", "featherface-official", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["params"] == 592_371 and data["macs"] == 915_637_376 and data["input_size"] == [640, 640]
    assert data["modules"]["ssh"] == {"params": 232_965, "macs": 291_916_800}
    assert sum(m["params"] for m in data["modules"].values()) == data["params"]


def test_count_overrides_and_input_size():
    r = run("count", "-p", "featherface-official", "--set", "neck_channels=42", "--set", "neck_cbam_reduction=8",
            "--set", "ssh_channels=[56,72,72]", "--input-size", "321", "479", "--json")
    data = json.loads(r.stdout)
    assert data["params"] == 489_000 and data["input_size"] == [321, 479]


def test_count_check_passes_and_table_prints():
    r = run("count", "-p", "featherface-v1-489k", "--check", "--input-size", "96", "128")
    assert r.exit_code == 0, r.output
    assert "488,664" in r.stdout and "cross-check passed" in r.stderr


def test_count_config_file(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text('preset = "retinaface-mnet025"\n')
    data = json.loads(run("count", "--config", str(f), "--json").stdout)
    assert data["params"] == 426_608 and data["macs"] == 1_005_952_000


@pytest.mark.parametrize("args, message", [
    (("--set", "ssh_channels=51"), "ssh_channels=51 must be a multiple of 4 (SSH splits it 1/2+1/4+1/4); nearest valid: 48, 52"),
    (("--set", "out_channel=51"), "unknown field 'out_channel'"),
    (("--preset", "nope"), "unknown preset 'nope'"),
    (("--config", "/nonexistent/x.toml"), "does not exist"),
    (("--input-size", "0", "640"), "height and width must be positive"),
    (("--dcn-macs", "maybe"), "dcn_macs='maybe' must be one of dense, full"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    r = run("count", *args)
    assert r.exit_code == 2
    assert message in r.stderr
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1


def test_presets_json_lists_figures():
    rows = {r["name"]: r for r in json.loads(run("presets", "--json").stdout)}
    assert rows["featherface-489k"]["params"] == 489_000
    assert rows["retinaface-mnet025"]["macs"] == 1_005_952_000


def test_help_explains():
    r = run("count", "--help")
    assert r.exit_code == 0 and "--check" in r.stdout and "--json" in r.stdout
