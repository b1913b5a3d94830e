"""Training's errors name fields (`warmup_epochs=9: ...`) for Python callers, and `train` spells its
own flags for the same errors (`--warmup 9: must be at most --epochs (5)`): the library holds the
rule once, the command layer maps each field to the option whose parameter holds it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.errors import InputError
from featherface_tune.training.loop import prepare_out_dir
from featherface_tune.training.spec import Fidelity, TrainOptions

# (TrainOptions fields, the Python message, the train flags giving the same values, the CLI message)
CASES = [
    ({"warmup_epochs": 9.0, "epochs": 5}, "warmup_epochs=9: must be at most epochs (5); the warm-up takes at most half the run",
     ["--warmup", "9", "--epochs", "5"], "--warmup 9: must be at most --epochs (5); the warm-up takes at most half the run"),
    ({"resume": True}, "resume: needs out_dir (the folder holding last.pt)",
     ["--resume"], "--resume: needs --out (the folder holding last.pt)"),
    ({"num_workers": 10_000}, "num_workers=10000: must be at most",
     ["--workers", "10000"], "--workers 10000: must be at most"),
    ({"subset": 2.5}, "subset=2.5: must be a fraction in (0, 1] or a whole number of images",
     ["--subset", "2.5"], "--subset 2.5: must be a fraction in (0, 1] or a whole number of images"),
    ({"image_size": 100}, "image_size=100: must be a positive multiple of 32",
     ["--image-size", "100"], "--image-size 100: must be a positive multiple of 32"),
]


@pytest.mark.parametrize("fields, python, flags, shown", CASES, ids=[c[2][0] for c in CASES])
def test_python_names_fields_and_train_names_flags(tmp_path: Path, fields, python, flags, shown) -> None:
    with pytest.raises(InputError) as info:
        TrainOptions(**fields).validate()
    assert str(info.value).startswith(python)
    assert "--" not in str(info.value)
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--recipe", "short", *flags])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.strip().startswith(f"error: {shown}"), r.stderr


def test_a_held_out_folder_names_the_options_that_settle_it(tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(InputError) as info:
        prepare_out_dir(tmp_path, resume=False, overwrite=False)
    assert info.value.field == "out_dir" and info.value.refs == ("resume", "overwrite")
    assert info.value.shown_as({"out_dir": "--out", "resume": "--resume", "overwrite": "--overwrite"}.get) == (
        f"--out {str(tmp_path)!r}: already holds a training run (last.pt); pass --resume to continue it or "
        "--overwrite to replace it")
    with pytest.raises(InputError, match="^resume: contradicts overwrite; continue the run in out_dir or replace it$"):
        prepare_out_dir(tmp_path, resume=True, overwrite=True)


def test_a_proxy_rule_names_the_search_option() -> None:
    """A training rule broken by a search's proxy option is the same error about that option: the
    message's rule is not rewritten, its field is (`exc.renamed`)."""
    with pytest.raises(InputError) as info:
        Fidelity.from_search_options(image_size=100)
    assert (info.value.field, info.value.value) == ("proxy_image_size", 100)
    assert info.value.rule == "must be a positive multiple of 32"
    with pytest.raises(InputError) as plain:
        Fidelity(image_size=100)
    assert plain.value.field == "image_size" and plain.value.rule == info.value.rule


def test_a_missing_image_names_the_option_that_skips_it(tmp_path: Path) -> None:
    """The reader says which image is missing; `train`, which can skip such images, adds its flag."""
    from featherface_tune.data.demo import write_demo
    from featherface_tune.data.readers import read_any

    write_demo(tmp_path / "d", train=4, val=2)
    gone = read_any(tmp_path / "d", "train")[0].path  # the first image train reads
    gone.unlink()
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "d"), "--recipe", "short", "--pretrained", "none",
                                 "--epochs", "1", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    line = r.stderr.strip().splitlines()[-1]  # after the "training on ..." line
    assert line.startswith("error: image not found:") and gone.name in line, line
    assert line.endswith("; pass --skip-missing to skip such images"), line
