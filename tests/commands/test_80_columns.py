"""Every table a command prints fits 80 columns (COLUMNS=80, and a pipe without a width) with every
figure and every name a user copies intact."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ("retinaface-mnet025", "featherface-official", "featherface-v1-489k", "featherface-489k",
           "featherface-reimpl-489015")


def _run(cwd: Path, *args: str, columns: str | None = "80") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(ROOT)
    if columns is not None:
        env["COLUMNS"] = columns
    run = subprocess.run([sys.executable, "-m", "featherface_tune", *args], cwd=cwd, capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def _flat(text: str) -> str:
    """The text without table rules, so a row reads as its cells separated by spaces."""
    return re.sub(r"[│┃]", " ", text)


def _fits(text: str) -> None:
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, "\n".join(wide)
    assert "…" not in text  # nothing cut with an ellipsis


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("w80")
    return cwd, _run(cwd, "search", "--target", "489000")


@pytest.mark.slow  # a search in a subprocess (3-12 s on a loaded 2-core machine)
def test_search(study):
    _, run = study
    _fits(run.stdout)
    _fits(run.stderr)
    assert re.search(r"489,000 +975\.9M +1\.191 +bifpn x3 +42 +56/72/72", run.stdout)
    said = " ".join(run.stderr.split())  # prose wraps at words
    assert "--export best.toml" in said and "--convention thop" in said
    assert "it ties with 2 others at dist 1.191" in said and "reference featherface-official" in said
    assert "trial" not in said and "feasible" not in said  # no search jargon for a solved search


@pytest.mark.parametrize("columns", ["80", None])
def test_presets_names_are_whole(tmp_path, columns):
    run = _run(tmp_path, "presets", columns=columns)
    _fits(run.stdout)
    for name in PRESETS:
        assert re.search(rf"^ *{re.escape(name)} ", run.stdout, re.M), name
    assert "1,274,888,576" in run.stdout


def test_gate(tmp_path):
    run = _run(ROOT, "gate")
    _fits(run.stdout)
    for name in ("featherface-official-thop", "featherface-489k", "retinaface-mnet025"):
        assert re.search(rf"^ ?{re.escape(name)} *$", run.stdout, re.M), name
    assert re.search(r"MACs @640x640 \(thop\) +1,012,598,976 ± 0 +1,012,598,976 +\+0 +pass", run.stdout)


def test_count_conventions(tmp_path):
    run = _run(tmp_path, "count", "--conventions")
    _fits(run.stdout)
    assert re.search(r"thop +488,661 +-103,710 +1,012,598,976 +-262,289,600", _flat(run.stdout))


@pytest.mark.slow  # two report subprocesses (2-5 s each under load)
@pytest.mark.parametrize("columns", ["80", None])
def test_report_compare(tmp_path, columns):
    run = _run(tmp_path, "report", "--compare", "featherface-official", "featherface-489k", columns=columns)
    _fits(run.stdout)
    flat = _flat(run.stdout)
    assert re.search(r"total +592,371 +489,000 +-103,371 +100\.0%", flat)
    assert re.search(r"total +1,274,888,576 +975,918,424 +-298,970,152", flat)
    assert re.search(r"neck +112,606 +62,820 +-49,786", flat)


@pytest.mark.slow  # a search in a subprocess (3-12 s on a loaded 2-core machine)
def test_report(study):
    cwd, _ = study
    run = _run(cwd, "report")
    _fits(run.stdout)
    assert "56/72/72" in run.stdout or "[56, 72, 72]" in run.stdout


def test_calibrate_tables():
    """calibrate's two tables (the command trains first: its tables are tested on a stored analysis)."""
    from rich.console import Console

    from featherface_tune.terminal import print_table
    from featherface_tune.calibration import RunSpec, tables

    settings = {"reference_epochs": 40, "metric": "hard", "epochs": [1, 2, 5], "seeds": 2}
    fid = {"configs": 8, "kendall_tau": 0.5714, "kendall_tau_ci": [-0.1234, 0.9876], "spearman": 0.7143,
           "spearman_ci": [-0.2345, 0.9999], "seed_kendall_tau": 0.8571, "proxy_seconds_per_config": 1234.5}
    configs = [{"index": i, "params": 489_000, "config": {"ssh_channels": [128, 124, 120], "neck": "bifpn",
                                                          "neck_channels": 64, "bifpn_repeats": 3}}
               for i in range(8)]
    runs = [{"key": RunSpec(i, "proxy", e, s).key, "value": 0.12345} for i in range(8) for e in (1, 2, 5)
            for s in range(2)] + [{"key": RunSpec(i, "reference", 40, 0).key, "value": 0.5} for i in range(8)]
    data = {"settings": settings, "synthetic_data": True, "configs": 8, "runs_done": 56, "runs_planned": 56,
            "fidelities": [{**fid, "epochs": e} for e in (1, 2, 5)], "chosen_epochs": 2, "runs": runs,
            "config_list": configs}
    text = io.StringIO()
    console = Console(file=text, width=80, markup=False, emoji=False)
    for table in tables(data):
        print_table(console, table)
    _fits(text.getvalue())
    for figure in ("0.571", "[-0.12, 0.99]", "1234.5", "128/124/120", "0.123 0.123", "489,000"):
        assert figure in text.getvalue(), figure
    assert text.getvalue().count("[-0.12, 0.99]") == 3  # one row per fidelity
