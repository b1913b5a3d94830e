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
    assert data["params"] == 592_371 and data["macs"] == 1_274_888_576 and data["input_size"] == [640, 640]
    assert data["modules"]["ssh"] == {"params": 232_965, "macs": 651_168_000}  # DCN offset convs included
    assert data["dcn_macs"] == "full" and data["convention"] == "numel"
    dense = json.loads(run("count", "--preset", "featherface-official", "--dcn-macs", "dense", "--json").stdout)
    assert dense["macs"] == 915_637_376 and dense["modules"]["ssh"]["macs"] == 291_916_800
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
    (("--input-size", "0", "640"), "height and width must be in 1.."),
    (("--dcn-macs", "maybe"), "--dcn-macs 'maybe': must be one of dense, full"),
    (("--convention", "paper"), "--convention 'paper': unknown; known conventions: numel, fvcore, fvcore-stock, "
                                "thop, torchinfo, ptflops, ptflops-aten, flops"),
    (("--convention", "thop", "--set", "backbone_width=0.5"),
     "convention 'thop' counts the official code's modules, whose MobileNetV1 is fixed at width 0.25"),
    (("--convention", "thop", "--dcn-macs", "dense"),
     "--dcn-macs 'dense': applies to the numel convention only; --convention thop counts the deformable convs"),
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


def test_count_in_a_convention_keeps_the_json_shape():
    numel = json.loads(run("count", "-p", "featherface-official", "--json").stdout)
    thop = json.loads(run("count", "-p", "featherface-official", "--convention", "thop", "--json").stdout)
    assert set(thop) == set(numel) and thop["convention"] == "thop"
    assert (thop["params"], thop["macs"]) == (488_661, 1_012_598_976)
    assert thop["modules"]["neck"]["params"] == numel["modules"]["neck"]["params"] - 30
    r = run("count", "-p", "featherface-official", "--convention", "flops", "--input-size", "97", "131")
    assert r.exit_code == 0 and "FLOPs at 97x131, flops convention" in r.stdout


def test_conventions_table_json_and_text():
    data = json.loads(run("count", "-p", "featherface-official", "--conventions", "--json").stdout)
    by_name = {c["convention"]: c for c in data["conventions"]}
    assert data["true"] == {"params": 592_371, "macs": 1_274_888_576}
    assert (by_name["thop"]["params"], by_name["thop"]["macs"]) == (488_661, 1_012_598_976)
    assert by_name["thop"]["params_delta"] == -103_710
    dcn = next(d for d in by_name["thop"]["differences"] if d["what"] == "DCN main convs")
    assert dcn["modules"] == {"ssh": {"params": -103_680, "macs": -290_304_000}}
    assert data["config"]["neck_channels"] == 64
    wide = json.loads(run("count", "--set", "backbone_width=0.5", "--conventions", "--json").stdout)
    assert next(c for c in wide["conventions"] if c["convention"] == "thop")["error"].endswith("cannot be counted")
    r = run("count", "-p", "featherface-official", "--conventions")
    assert r.exit_code == 0 and "488,661" in r.stdout and "not hooked" in r.stdout


def test_conventions_table_fits_100_columns():
    from rich.console import Console

    from featherface_tune.commands.count import conventions_tables
    from featherface_tune.counter.analytic import count
    from featherface_tune.counter.conventions import reconcile
    from featherface_tune.models.presets import get_preset

    cfg = get_preset("featherface-official")
    console = Console(width=100, record=True, color_system=None)
    for table in conventions_tables(reconcile(cfg), count(cfg), "featherface-official"):
        console.print(table)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 100 and any("BiFPN fusion weights" in line for line in lines)
