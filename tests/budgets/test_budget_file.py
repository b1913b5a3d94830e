"""Budget files: loading, validation errors naming file/key/line, bounds, and writing baselines back."""

from __future__ import annotations

import tomllib
from fractions import Fraction
from pathlib import Path

import pytest

from featherface_tune.budgets.file import key_lines, load_budget, write_baseline
from featherface_tune.budgets.gate import baseline_record, evaluate
from featherface_tune.budgets.schema import Bound, BudgetFileError, Tolerance
from featherface_tune.counter.analytic import GROUPS, count
from featherface_tune.models.presets import get_preset

VALID = """\
# a comment that --update must keep
name = "demo"
description = "official at neck 42"

[model]
preset = "featherface-official"
neck_channels = 42   # trailing comment

[params]
target = 500000
tolerance = "5%"

[macs]
input_size = [320, 320]
max = 1000000000
"""


def write(tmp_path: Path, text: str, name: str = "b.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_valid_file_loads(tmp_path):
    b = load_budget(write(tmp_path, VALID))
    assert b.name == "demo"
    assert b.config == get_preset("featherface-official").replace(neck_channels=42)
    assert b.params == Bound(target=500_000, tolerance=Tolerance(Fraction(5), percent=True))
    assert b.macs == Bound(maximum=1_000_000_000)
    assert b.input_size == (320, 320)
    assert b.baseline is None
    assert b.line("params.target") == 10
    assert b.line("macs.max") == 15


def test_name_defaults_to_file_stem_and_macs_optional(tmp_path):
    p = write(tmp_path, '[model]\npreset = "retinaface-mnet025"\n[params]\nmax = 500000\n', "rf.toml")
    b = load_budget(p)
    assert b.name == "rf" and b.macs is None and b.input_size == (640, 640)
    assert evaluate(b).ok


def test_bounds_absolute_percent_and_max():
    exact = Bound(target=1000, tolerance=Tolerance(Fraction(0)))
    assert exact.contains(1000) and not exact.contains(1001) and not exact.contains(999)
    pct = Bound(target=1000, tolerance=Tolerance(Fraction("0.5"), percent=True))  # +-5
    assert pct.contains(1005) and pct.contains(995) and not pct.contains(1006)
    both = Bound(target=1000, tolerance=Tolerance(Fraction(10)), maximum=1003)
    assert both.contains(1003) and not both.contains(1004) and both.contains(990)
    upper = Bound(maximum=100)
    assert upper.contains(100) and not upper.contains(101) and upper.delta(90) == -10


def test_config_path_is_relative_to_the_budget_file(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "m.toml").write_text('preset = "featherface-official"\nneck_channels = 48\n')
    bdir = tmp_path / "budgets"
    bdir.mkdir()
    p = write(bdir, '[model]\nconfig = "../cfg/m.toml"\nssh_channels = 56\n[params]\nmax = 10000000\n')
    b = load_budget(p)
    assert b.config == get_preset("featherface-official").replace(neck_channels=48, ssh_channels=56)


@pytest.mark.parametrize("model,words", [
    ('preset = "retinaface-mnet025"\nconfig = "m.toml"', "names preset 'featherface-official' but preset "
                                                        "'retinaface-mnet025'"),
    ('config = "missing.toml"', "does not exist"),
    ('config = "m.toml"\nneck_channels = 0', "neck_channels"),
])
def test_config_file_errors_name_the_model_key(tmp_path, model, words):
    (tmp_path / "m.toml").write_text('preset = "featherface-official"\nneck_channels = 48\n')
    p = write(tmp_path, f"[model]\n{model}\n[params]\nmax = 10000000\n")
    with pytest.raises(BudgetFileError) as info:
        load_budget(p)
    assert info.value.key == ("model.neck_channels" if "neck_channels" in model else "model.config")
    assert words in info.value.detail


BAD = [
    # (text, key named in the error, line, words in the message)
    ('[model]\npreset = "featherface-official"\n[params]\ntarget = 1\ntolerence = 5\n',
     "params.tolerence", 5, "unknown key"),
    ('nmae = "x"\n[model]\npreset = "featherface-official"\n[params]\nmax = 1\n', "nmae", 1, "unknown key"),
    ('[model]\npreset = "featherface-official"\ncolour = 3\n[params]\nmax = 1\n', "model.colour", 3, "unknown key"),
    ('[model]\npreset = "featherface-official"\n[params]\ntarget = "592371"\n', "params.target", 4, "integer"),
    ('[model]\npreset = "featherface-official"\n[params]\ntarget = 5\ntolerance = 0.5\n',
     "params.tolerance", 5, "percent"),
    ('[model]\npreset = "featherface-official"\n[params]\ntarget = 5\ntolerance = "abc%"\n',
     "params.tolerance", 5, "percent"),
    ('name = 3\n[model]\npreset = "featherface-official"\n[params]\nmax = 1\n', "name", 1, "string"),
    ('[model]\npreset = "featherface-official"\nneck_channels = "wide"\n[params]\nmax = 1\n',
     "model.neck_channels", 3, "integer"),
    ('[model]\npreset = "nope"\n[params]\nmax = 1\n', "model.preset", 2, "unknown preset"),
    ('[model]\npreset = "featherface-official"\n[params]\ntarget = 600000\nmax = 500000\n',
     "params.target", 4, "contradictory"),
    ('[model]\npreset = "featherface-official"\n[params]\nmin = 9\nmax = 5\n', "params.min", 4, "above max"),
    ('[model]\npreset = "featherface-official"\n[params]\ntarget = 100\ntolerance = 5\nmin = 200\n',
     "params.target", 4, "below min"),
    ('[model]\npreset = "featherface-official"\n[params]\ntolerance = 5\nmax = 9\n',
     "params.tolerance", 4, "needs a `target`"),
    ('[model]\npreset = "featherface-official"\n[params]\n', "params", 3, "needs `target`"),
    ('[model]\npreset = "featherface-official"\n', "params", None, "missing"),
    ('[params]\nmax = 1\n', "model", None, "missing"),
    ('[model]\n[params]\nmax = 1\n', "model", 1, "needs a `preset`"),
    ('params = 5\n[model]\npreset = "featherface-official"\n', "params", 1, "must be a table"),
    ('[model]\npreset = "featherface-official"\n[params]\nmax = 1\n[macs]\nmax = 5\n',
     "macs.input_size", 5, "missing"),
    ('[model]\npreset = "featherface-official"\n[params]\nmax = 1\n[macs]\ninput_size = [640]\nmax = 5\n',
     "macs.input_size", 6, "[height, width]"),
    ('[model]\npreset = "featherface-official"\n[params]\nmax = 1\n[baseline.modules.nekc]\nparams = 3\n',
     "baseline.modules.nekc", 5, "unknown module"),
    ('[model]\npreset = "featherface-official"\n[params]\nmax = true\n', "params.max", 4, "integer"),
    ('convention = "paper"\n[model]\npreset = "featherface-official"\n[params]\nmax = 1\n', "convention", 1,
     "'paper': unknown; known conventions: numel, fvcore, fvcore-stock, thop, torchinfo, ptflops, ptflops-aten, flops"),
    ('convention = "thop"\n[model]\npreset = "featherface-official"\nbackbone_width = 0.5\n[params]\nmax = 1\n',
     "convention", 1, "fixed at width 0.25: backbone_width=0.5 cannot be counted"),
    ('convention = "thop"\n[model]\npreset = "featherface-official"\n[params]\nmax = 1\n'
     '[macs]\ninput_size = [64, 64]\nmax = 5\ndcn_macs = "dense"\n', "macs.dcn_macs", 9,
     "'dense': applies to the numel convention only; convention thop counts the deformable convs by its own rule"),
    ('[model]\npreset = "featherface-official"\n[params]\nmax = 1\n[baseline]\nconvention = "tf"\n'
     '[baseline.modules.neck]\nparams = 3\n', "baseline.convention", 6, "unknown; known conventions: numel,"),
    ('[model]\npreset = "featherface-official"\n[params]\nmax = 1\n[macs]\ninput_size = [64, 64]\nmax = 5\n'
     'dcn_macs = ["full"]\n', "macs.dcn_macs", 8, "['full']: must be one of dense, full"),
]


@pytest.mark.parametrize("text,key,line,words", BAD)
def test_invalid_files_name_file_key_and_line(tmp_path, text, key, line, words):
    p = write(tmp_path, text, "broken.toml")
    with pytest.raises(BudgetFileError) as info:
        load_budget(p)
    e = info.value
    assert e.exit_code == 2
    assert e.key == key
    assert e.line == line
    assert words in e.detail
    assert "broken.toml" in str(e) and key in str(e)


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(BudgetFileError) as info:
        load_budget(write(tmp_path, 'name = "x"\n[model\n'))
    assert info.value.line == 2 and "not valid TOML" in str(info.value)
    with pytest.raises(BudgetFileError, match="does not exist"):
        load_budget(tmp_path / "absent.toml")


def test_key_lines_track_tables_and_dotted_keys():
    lines = key_lines('a = 1\n[x]\nb.c = 2\n[x.y]  # note\nd = 3\n')
    assert lines == {"a": 1, "x": 2, "x.b.c": 3, "x.y": 4, "x.y.d": 5}


def test_write_baseline_keeps_the_rest_of_the_file(tmp_path):
    p = write(tmp_path, VALID)
    b = load_budget(p)
    record = baseline_record(count(b.config, *b.input_size))
    assert write_baseline(p, record) is True
    text = p.read_text()
    assert text.startswith(VALID.rstrip("\n"))  # comments and layout untouched
    data = tomllib.loads(text)
    assert data["baseline"]["modules"]["neck"]["params"] == count(b.config).modules["neck"].params
    assert set(data["baseline"]["modules"]) == set(GROUPS)
    assert write_baseline(p, record) is False  # idempotent
    # a second update replaces the table instead of appending another one
    changed = dict(record, params=1)
    assert write_baseline(p, changed) is True
    text2 = p.read_text()
    assert text2.count("[baseline]") == 1 and tomllib.loads(text2)["baseline"]["params"] == 1
    assert load_budget(p).baseline.params == 1


def test_convention_defaults_and_old_baselines(tmp_path):
    """No `convention`: numel; no [macs] dcn_macs: every convolution; a baseline without `dcn_macs` or
    `convention` (written before they existed) reads as dense / numel and its MACs are not compared."""
    b = load_budget(write(tmp_path, VALID))
    assert (b.convention, b.dcn_macs) == ("numel", "full")
    old = VALID + "\n[baseline]\nparams = 1\n[baseline.modules.neck]\nparams = 5\nmacs = 7\n"
    b = load_budget(write(tmp_path, old, "old.toml"))
    assert (b.baseline.dcn_macs, b.baseline.convention) == ("dense", "numel")
    result = evaluate(b)
    assert not result.macs_comparable
    neck = next(d for d in result.modules if d.module == "neck")
    assert neck.baseline_params == 5 and neck.baseline_macs is None


def test_budget_in_the_thop_convention(tmp_path):
    text = ('convention = "thop"\n[model]\npreset = "featherface-official"\n[params]\ntarget = 488661\n'
            '[macs]\ninput_size = [640, 640]\ntarget = 1012598976\n')
    p = write(tmp_path, text)
    result = evaluate(load_budget(p))
    assert result.ok and result.count.convention == "thop"
    assert [c.measured for c in result.checks] == [488_661, 1_012_598_976]
    record = baseline_record(result.count)
    assert record["convention"] == "thop" and record["modules"]["neck"]["params"] == 112_606 - 30
    write_baseline(p, record)
    again = evaluate(load_budget(p))
    assert again.macs_comparable and not again.moved
    # the same baseline under a budget that now counts in numel is not compared
    p.write_text(p.read_text().replace('convention = "thop"\n', "", 1).replace("488661", "592371", 1))
    moved = evaluate(load_budget(p))
    assert not moved.macs_comparable and "recorded in the thop convention" in moved.moved_summary()
