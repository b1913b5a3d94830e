"""The budget gate and the analytic count run on the architecture's torch-free description: with torch
and numpy made unimportable, they still give the same figures (a pre-commit or CI environment for the
gate needs neither)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# `None` in sys.modules makes any import of the name raise ImportError
BLOCK = "import sys; sys.modules.update({m: None for m in ('torch', 'numpy', 'optuna', 'pandas', 'fvcore')}); "


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    code = BLOCK + f"sys.argv = ['featherface-tune', *{list(args)!r}]; from featherface_tune.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_gate_passes_without_torch_or_numpy():
    run = _run("gate", "--format", "json")
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    files = list((ROOT / "budgets").glob("*.toml"))
    assert report["ok"] and report["summary"] == {"passed": len(files), "failed": 0, "invalid": 0}
    assert len(files) >= 5


@pytest.mark.parametrize("preset, params", [("featherface-official", 592_371), ("featherface-489k", 489_000)])
def test_count_without_torch_or_numpy(preset, params):
    run = _run("count", "--preset", preset, "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["params"] == params


def test_the_block_really_blocks():
    """The guard must be able to fail: a command that needs torch stops at its import."""
    run = _run("count", "--preset", "featherface-official", "--check", "--json")
    assert run.returncode != 0


def test_verify_without_torch_is_a_one_line_error():
    run = _run("gate", "--verify")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "--verify builds each model and needs torch" in run.stderr
