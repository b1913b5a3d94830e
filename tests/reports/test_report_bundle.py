"""`report --out DIR`: the bundle's plots are real images and its page only references files that
are inside the bundle."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from featherface_tune.cli import app
from report_study_factory import make_study

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUDY_PLOTS = ("params_vs_macs", "pareto_front", "history", "proxy_ap_vs_macs")


class Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags, self.imgs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "srcset", "data", "poster", "action"):
                self.refs.append(v)
            if tag == "img" and k == "src":
                self.imgs.append(v)


def _invoke(*args):
    result = runner.invoke(app, ["report", *args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def study_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    url = f"sqlite:///{root / 'ff.db'}"
    make_study(url, name="s1", n=18, objectives=("macs", "proxy_ap"), failures=1)
    out = root / "out"
    result = _invoke("--storage", url, "--out", str(out))
    return out, result


@pytest.fixture(scope="module")
def compare_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "nested" / "out"
    result = _invoke("--compare", "featherface-official", "featherface-489k", "--out", str(out))
    return out, result


def assert_png(path: Path):
    raw = path.read_bytes()
    assert raw[:8] == PNG_MAGIC, path
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        w, h = im.size
        assert w > 300 and h > 200
        # not a blank canvas: a plot has many distinct colours
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20


def assert_svg(path: Path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    assert sum(1 for _ in root.iter()) > 50  # drawn elements, not an empty document


def assert_only_local_refs(out: Path):
    page = (out / "index.html").read_text(encoding="utf-8")
    p = Refs()
    p.feed(page)
    assert "script" not in p.tags and "iframe" not in p.tags
    assert "@import" not in page and "url(" not in page  # inline CSS pulls nothing in
    assert p.imgs, "the page shows no images"
    root = out.resolve()
    for ref in p.refs:
        parts = urlsplit(ref)
        assert not parts.scheme and not parts.netloc, ref
        if not parts.path:  # "#anchor"
            assert parts.fragment, ref
            continue
        assert not PurePosixPath(parts.path).is_absolute(), ref
        target = (out / unquote(parts.path)).resolve()
        assert target.is_relative_to(root), ref
        assert target.is_file() and target.stat().st_size > 0, ref
    return p


def test_study_bundle_files(study_bundle):
    out, result = study_bundle
    assert result.stdout == ""  # with --out and no --format, data goes to files only
    assert "index.html" in result.stderr
    for key in STUDY_PLOTS:
        assert_png(out / "plots" / f"{key}.png")
        assert_svg(out / "plots" / f"{key}.svg")
    for name in ("index.html", "report.md", "report.json", "trials.csv", "top.csv", "breakdown.csv"):
        assert (out / name).stat().st_size > 0, name


def test_study_bundle_page_references_only_bundle_files(study_bundle):
    out, _ = study_bundle
    p = assert_only_local_refs(out)
    shown = {PurePosixPath(src).stem for src in p.imgs}
    assert shown == set(STUDY_PLOTS)
    linked = {PurePosixPath(r).name for r in p.refs}
    assert {f"{k}.svg" for k in STUDY_PLOTS} <= linked  # SVGs are linked from the page


def test_study_bundle_data_files_parse(study_bundle):
    out, _ = study_bundle
    doc = json.loads((out / "report.json").read_text())
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == doc["counts"]["trials"] == 19
    top = pd.read_csv(out / "top.csv")
    assert list(top["trial"]) == [r["trial"] for r in doc["top"]]
    bd = pd.read_csv(out / "breakdown.csv").set_index("module")
    assert bd.loc["total", "params"] == doc["chosen"]["count"]["params"]
    md = (out / "report.md").read_text()
    assert "![Parameters vs MACs](plots/params_vs_macs.png)" in md


def test_compare_bundle(compare_bundle):
    out, _ = compare_bundle
    for key in ("compare_delta", "compare_modules"):
        assert_png(out / "plots" / f"{key}.png")
        assert_svg(out / "plots" / f"{key}.svg")
    assert_only_local_refs(out)
    modules = pd.read_csv(out / "modules.csv").set_index("module")
    assert modules.loc["total", "delta params"] == -103_371
    assert "-103,371" in (out / "index.html").read_text()


def test_rewriting_a_bundle_drops_plots_it_no_longer_has(study_bundle, tmp_path):
    import shutil

    url = f"sqlite:///{tmp_path / 'ff.db'}"
    make_study(url, name="single", n=8, objectives=("macs",))
    out = tmp_path / "out"
    shutil.copytree(study_bundle[0], out)  # a two-objective study's bundle, as `report --out` wrote it
    assert (out / "plots" / "pareto_front.png").exists()
    result = _invoke("--storage", url, "--study", "single", "--out", str(out), "--format", "json", "--overwrite")
    assert json.loads(result.stdout)["study"] == "single"  # --format still prints with --out
    assert not (out / "plots" / "pareto_front.png").exists()
    assert not (out / "plots" / "proxy_ap_vs_macs.png").exists()
    assert_only_local_refs(out)


def test_out_must_be_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    result = runner.invoke(app, ["report", "--compare", "featherface-official", "featherface-489k",
                                 "--out", str(f)])
    assert result.exit_code != 0
    assert "is not a folder" in result.stderr


def test_an_earlier_bundle_is_kept_unless_overwrite(tmp_path):
    """The library names its arguments (out_dir, overwrite); the command spells its flags."""
    from featherface_tune.errors import InputError
    from featherface_tune.reports.bundle import write_bundle
    from featherface_tune.reports.data import compare

    out = tmp_path / "b"
    args = ["report", "--compare", "featherface-official", "featherface-489k", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 2
    assert f"--out {str(out)!r}: already holds a report (" in again.stderr and "add --overwrite to replace it" in again.stderr
    with pytest.raises(InputError, match=r"^out_dir='.*': already holds a report \(.*\); add overwrite to replace it"):
        write_bundle(compare(["featherface-official", "featherface-489k"]), out)
