"""The command line's conventions: --version, -h, python -m, flags without a type, one-line usage
errors; and the package's lazy public API."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import featherface_tune
from featherface_tune.cli import COMMANDS, app

runner = CliRunner()


def test_version_matches_the_package() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0
    assert r.output.strip() == f"featherface-tune {featherface_tune.__version__}"


def test_python_dash_m_runs_the_same_cli() -> None:
    r = subprocess.run([sys.executable, "-m", "featherface_tune", "--version"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"featherface-tune {featherface_tune.__version__}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_short_help_and_untyped_flags(name: str) -> None:
    long = runner.invoke(app, [name, "--help"], terminal_width=100)
    short = runner.invoke(app, [name, "-h"], terminal_width=100)
    assert long.exit_code == short.exit_code == 0
    assert long.output == short.output
    assert "--json" in long.output
    assert "<bool>" not in long.output


@pytest.mark.parametrize("args, needle", [
    (["count", "--bogus"], "No such option: --bogus"),
    (["count", "--input-size", "a", "b"], "--input-size"),
    (["no-such-command"], "No such command"),
    (["search"], "--target"),
])
def test_usage_errors_are_one_line(args: list[str], needle: str) -> None:
    r = subprocess.run([sys.executable, "-m", "featherface_tune", *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in r.stderr and "╭" not in r.stderr


def test_bare_command_shows_help() -> None:
    r = runner.invoke(app, [])
    assert "Commands" in r.output and "search" in r.output


def test_import_is_cheap_and_exports_resolve() -> None:
    code = ("import sys, featherface_tune as ff; assert 'torch' not in sys.modules and 'optuna' not in sys.modules; "
            "cfg = ff.presets()['featherface-official']; assert isinstance(cfg, ff.FeatherFaceConfig); "
            "print(ff.count(cfg, 640, 640).params)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "592371"
    for name in featherface_tune.__all__:
        assert getattr(featherface_tune, name) is not None
    with pytest.raises(AttributeError):
        featherface_tune.no_such_name  # noqa: B018


# ---- every table fits 100 columns, no figure cut ---------------------------------------------------

def test_fit_table_compacts_then_drops_optional_columns_and_never_cuts_a_figure() -> None:
    from rich.console import Console
    from rich.table import Table

    from featherface_tune.terminal import TABLE_WIDTH, fit_table

    assert TABLE_WIDTH == 80
    console = Console(width=80, file=io.StringIO())
    t = Table(title="wide")
    figures = [f"{10**12 + i:,}" for i in range(5)]
    for i in range(5):
        t.add_column(f"figure {i}", justify="right")
    t.add_column("note")
    t.add_row(*figures, "a long note " * 3)
    assert fit_table(console, t, TABLE_WIDTH, optional=("note", "figure 4")) is t
    # "figure 4" goes first (the last named); then the note fits, wrapped at its words
    assert [str(c.header) for c in t.columns] == [*(f"figure {i}" for i in range(4)), "note"]
    assert "not shown to fit 80 columns: figure 4" in str(t.caption)
    text = io.StringIO()
    Console(width=TABLE_WIDTH, file=text).print(t)
    assert all(f in text.getvalue() for f in figures[:4]) and text.getvalue().count("long") == 3
    assert max(len(line) for line in text.getvalue().splitlines()) <= TABLE_WIDTH


def test_a_table_too_wide_for_any_column_cut_prints_vertically() -> None:
    from rich.console import Console
    from rich.table import Table

    from featherface_tune.terminal import TABLE_WIDTH, fit_table

    console = Console(width=80, file=io.StringIO())
    t = Table(title="wide")
    t.add_column("name")
    for i in range(6):
        t.add_column(f"figure {i}", justify="right")
    names = ["featherface-reimpl-489015", "featherface-official-thop"]
    for n in names:
        t.add_row(n, *(f"{10**12 + i:,}" for i in range(6)))
    shown = fit_table(console, t, TABLE_WIDTH, whole=("name",))
    assert shown is not t  # the vertical form: one block per row
    text = io.StringIO()
    Console(width=TABLE_WIDTH, file=text).print(shown)
    lines = text.getvalue().splitlines()
    assert max(len(line) for line in lines) <= TABLE_WIDTH
    assert all(any(n in line for line in lines) for n in names)
    assert sum(f"{10**12 + 5:,}" in line for line in lines) == 2


def _widest(text: str) -> int:
    return max((len(line.rstrip()) for line in text.splitlines()), default=0)


def test_command_tables_fit_100_columns(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    search = runner.invoke(app, ["search", "--target", "489000", "--storage", db], terminal_width=80)
    assert search.exit_code == 0, search.stderr
    assert "489,000" in search.stdout and _widest(search.stdout) <= 100
    report = runner.invoke(app, ["report", "--storage", db], terminal_width=80)
    assert report.exit_code == 0, report.stderr
    assert _widest(report.stdout) <= 100
    for args in (["gate"], ["count", "--conventions"], ["presets"],
                 ["report", "--compare", "featherface-official", "featherface-489k", "retinaface-mnet025"]):
        r = runner.invoke(app, args, terminal_width=80)
        assert r.exit_code == 0, (args, r.stderr)
        table_lines = [line for line in r.stdout.splitlines() if not line.startswith("thop:")]
        assert _widest("\n".join(table_lines)) <= 100, args


def test_the_command_line_starts_without_torch() -> None:
    """--help and --version stay fast: composing the commands imports neither torch nor Optuna."""
    code = "import sys, featherface_tune.cli; print(sorted({'torch', 'optuna'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
