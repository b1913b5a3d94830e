"""`gate --update` rewrites only the baseline: comments, order, inline tables and formatting of the rest
of the budget file survive, whatever form the old baseline had (it used to drop every comment of a file
with an inline `baseline = {...}`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

HEAD = '''# Budget of the official model  (a comment that must survive)
name = "official"   # trailing comment
description = "kept as written"

[model]
preset = "featherface-official"  # keep me
neck_channels = 64

# the bound
[params]
target = 592371
tolerance = "0.1%"   # percent string
'''

BASELINES = {
    "inline": 'baseline = { input_size = [640, 640], params = 1, modules = { backbone = { params = 1 } } }\n',
    "tables": '\n[baseline]\ninput_size = [640, 640]\nparams = 1\n\n[baseline.modules.backbone]\nparams = 1\n',
    "none": "",
}


@pytest.mark.parametrize("form", BASELINES)
def test_update_keeps_everything_but_the_baseline(cli, tmp_path: Path, form: str):
    budget = tmp_path / "b.toml"
    text = HEAD.replace('description = "kept as written"\n',
                        'description = "kept as written"\n' + BASELINES[form]) if form == "inline" else HEAD + BASELINES[form]
    budget.write_text(text, encoding="utf-8")
    r = cli("gate", budget, "--update")
    assert r.exit_code == 0, r.output
    new = budget.read_text(encoding="utf-8")
    kept = HEAD.splitlines()
    for line in kept:  # every line of the file outside the baseline, comments included, verbatim
        assert line in new.splitlines(), line
    data = tomllib.loads(new)
    assert data["baseline"]["params"] == 592_371 and "backbone" in data["baseline"]["modules"]
    assert cli("gate", budget).exit_code == 0
    again = cli("gate", budget, "--update")
    assert again.exit_code == 0 and budget.read_text(encoding="utf-8") == new  # nothing left to change
