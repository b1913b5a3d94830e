"""Nothing is overwritten that the user did not name for replacement: a report bundle needs
--overwrite; `export --out`, `gate --update` and `detect --save` replace only regular, writable files
(never a device, FIFO or symbolic link, nor a read-only file, nor the input image)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from featherface_tune.atomic import atomic_write_text, check_replaceable
from featherface_tune.errors import InputError

BUDGET = '[model]\npreset = "featherface-official"\n[params]\nmax = 600000\n'


def test_report_refuses_to_replace_a_bundle_without_overwrite(cli, tmp_path: Path):
    out = tmp_path / "rep"
    args = ("report", "--compare", "featherface-official", "featherface-489k", "--out", out)
    assert cli(*args).exit_code == 0
    kept = (out / "index.html").read_text(encoding="utf-8") + "<!-- kept -->"
    (out / "index.html").write_text(kept, encoding="utf-8")
    assert_one_line_error(cli(*args), 2, "already holds a report", "index.html", "--overwrite")
    assert (out / "index.html").read_text(encoding="utf-8") == kept
    assert cli(*args, "--overwrite").exit_code == 0
    assert "<!-- kept -->" not in (out / "index.html").read_text(encoding="utf-8")


def test_report_into_a_read_only_folder_is_one_line(cli, tmp_path: Path):
    out = tmp_path / "ro"
    out.mkdir()
    (out / "plots").mkdir()
    out.chmod(0o555)
    (out / "plots").chmod(0o555)
    try:
        if os.access(out, os.W_OK) and os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        r = cli("report", "--compare", "featherface-official", "featherface-489k", "--out", out)
        assert_one_line_error(r, 2, "cannot write")
    finally:
        (out / "plots").chmod(0o755)
        out.chmod(0o755)


def _special(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / f"special-{kind}"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "symlink":
        (tmp_path / "target.txt").write_text("kept", encoding="utf-8")
        p.symlink_to(tmp_path / "target.txt")
    elif kind == "read-only":
        p.write_text("kept", encoding="utf-8")
        p.chmod(0o444)
    return p


@pytest.mark.parametrize("kind,needle", [("fifo", "a FIFO"), ("symlink", "symbolic link"),
                                         ("read-only", "read-only")])
def test_atomic_write_replaces_only_regular_writable_files(tmp_path: Path, kind: str, needle: str):
    p = _special(tmp_path, kind)
    with pytest.raises(InputError, match=needle):
        atomic_write_text(p, "new")
    assert os.path.lexists(p)
    if kind != "fifo":
        assert p.read_text(encoding="utf-8") == "kept"
    assert [q.name for q in tmp_path.iterdir() if q.name.endswith(".tmp")] == []


def test_a_device_is_never_replaced(tmp_path: Path):
    with pytest.raises(InputError, match="a device"):
        check_replaceable("/dev/null", "--out")


@pytest.mark.parametrize("kind", ["fifo", "symlink", "read-only"])
def test_export_out_refuses_what_is_not_a_regular_file(cli, tmp_path: Path, kind: str):
    pytest.importorskip("onnx")
    p = _special(tmp_path, kind)
    r = cli("export", "--preset", "featherface-official", "--out", p)
    assert_one_line_error(r, 2, "--out")
    assert os.path.lexists(p) and (kind == "fifo" or p.read_text(encoding="utf-8") == "kept")


@pytest.mark.parametrize("kind", ["symlink", "read-only"])
def test_gate_update_keeps_links_and_read_only_files(cli, tmp_path: Path, kind: str):
    target = tmp_path / "real.toml"
    target.write_text(BUDGET, encoding="utf-8")
    budget = tmp_path / "b.toml"
    if kind == "symlink":
        budget.symlink_to(target)
    else:
        budget.write_text(BUDGET, encoding="utf-8")
        budget.chmod(0o444)
    r = cli("gate", budget, "--update")
    assert_one_line_error(r, 2, "budget file", "symbolic link" if kind == "symlink" else "read-only")
    assert budget.is_symlink() == (kind == "symlink") and budget.read_text(encoding="utf-8") == BUDGET


def test_detect_save_onto_its_own_input_is_refused(cli, tmp_path: Path):
    from PIL import Image

    img = tmp_path / "face.png"
    Image.new("RGB", (32, 32)).save(img)
    before = img.read_bytes()
    r = cli("detect", img, "-m", tmp_path / "none.pth", "--save", img)
    assert_one_line_error(r, 2, "--save", "input image")
    assert img.read_bytes() == before
    assert_one_line_error(cli("detect", img, "-m", tmp_path / "none.pth", "--threshold", "nan"),
                          2, "--threshold")


def test_export_opset_beyond_the_installed_exporter(cli, tmp_path: Path):
    pytest.importorskip("onnx")
    for opset in ("99", str(10**40)):
        r = cli("export", "--preset", "featherface-official", "--out", tmp_path / "m.onnx", "--opset", opset)
        assert_one_line_error(r, 2, "--opset")
    assert not (tmp_path / "m.onnx").exists()
