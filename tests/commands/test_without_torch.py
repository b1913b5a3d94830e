"""`pip install featherface-tune` without the torch extra: the budget half (count, search with an
analytic objective, report, gate) works with torch, fvcore and scipy made unimportable; a usage error
imports neither torch nor Optuna; a command that needs torch says which extra in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# what the `torch` extra brings; `None` in sys.modules makes any import of the name raise ImportError
TORCH_EXTRA = ("torch", "fvcore", "scipy")


def _run(cwd: Path, *args: str, block: tuple[str, ...] = TORCH_EXTRA) -> subprocess.CompletedProcess[str]:
    code = (f"import sys; sys.modules.update({{m: None for m in {block!r}}}); "
            f"sys.argv = ['featherface-tune', *{list(args)!r}]; from featherface_tune.cli import main; main()")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The README's main job, run once in a fresh folder (its study is what `report` reads)."""
    cwd = tmp_path_factory.mktemp("no-torch")
    return cwd, _run(cwd, "search", "--target", "489000", "--export", "best.toml")


@pytest.mark.slow  # the README's search in a subprocess (2.5 s idle, 7 s under load)
def test_search_runs_without_torch(searched):
    cwd, run = searched
    assert run.returncode == 0, run.stderr[-2000:]
    assert "489,000" in run.stdout and "Traceback" not in run.stderr
    assert (cwd / "best.toml").is_file()


@pytest.mark.slow  # the README's search in a subprocess (2.5 s idle, 7 s under load)
def test_report_and_count_of_the_export_run_without_torch(searched):
    cwd, _ = searched
    run = _run(cwd, "report")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "489,000" in run.stdout
    run = _run(cwd, "count", "--config", "best.toml", "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["params"] == 489_000


def test_gate_runs_without_torch():
    run = _run(ROOT, "gate", "--format", "json")
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["ok"]


@pytest.mark.parametrize("args,message", [
    (("--target", "0"), "error: --target 0"),
    (("--target", "489000", "--seed", "-1"), "error: --seed -1"),
    (("--target", "489000", "--storage", "foo://bar"), "error: --storage 'foo://bar': not a storage URL"),
    (("--target", "489000", "--storage", "journal:no/such/dir/s.log"), "error: --storage 'journal:no/such/dir/s.log'"),
    # the latency objective's model must fit in memory: checked before torch is needed
    (("--target", "489000", "--objective", "latency", "--input-size", "10000", "10000"), "error: --input-size 10000 10000: with"),
])
def test_a_usage_error_imports_neither_torch_nor_optuna(tmp_path, args, message):
    run = _run(tmp_path, "search", *args, block=(*TORCH_EXTRA, "optuna"))
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(message) and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [("count", "--preset", "featherface-official", "--check"),
                                  ("train", "--data", "nowhere")])
def test_a_command_that_needs_torch_names_the_extra(tmp_path, args):
    run = _run(tmp_path, *args)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.stderr.strip().endswith("needs torch: pip install 'featherface-tune[torch]'")
    assert len(run.stderr.strip().splitlines()) == 1


def test_the_tuner_imports_without_torch():
    code = (f"import sys; sys.modules.update({{m: None for m in {TORCH_EXTRA!r}}}); "
            "import featherface_tune.tuner.api, featherface_tune.tuner.objectives; print('ok')")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
