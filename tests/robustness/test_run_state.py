"""Training runs and checkpoints: no lost work and no traceback. An existing run in --out is never
overwritten silently; every output path is checked before training; a damaged last.pt or a stale
temporary file from a crashed save is handled; NaN weights and decompression-bomb images are one-line
errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error, png_header

TRAIN = ("--epochs", "1", "--image-size", "64", "--batch-size", "2", "--pretrained", "none")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from featherface_tune.data.demo import write_demo

    root = tmp_path_factory.mktemp("demo") / "d"
    write_demo(root, train=2, val=1, seed=0)
    return root


@pytest.fixture(scope="module")
def trained(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from featherface_tune.cli import app

    out = tmp_path_factory.mktemp("run") / "out"
    r = CliRunner().invoke(app, ["train", "--data", str(demo), *TRAIN, "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_finished_run_is_not_overwritten(cli, demo: Path, trained: Path, tmp_path: Path):
    before = (trained / "model.pt").read_bytes()
    r = cli("train", "--data", demo, *TRAIN, "--out", trained)
    assert_one_line_error(r, 2, "already holds a training run", "--resume", "--overwrite")
    assert (trained / "model.pt").read_bytes() == before
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.pt").write_bytes(before)
    r = cli("train", "--data", demo, *TRAIN, "--out", copy, "--overwrite")
    assert r.exit_code == 0, r.output
    assert (copy / "last.pt").is_file()
    assert_one_line_error(cli("train", "--data", demo, *TRAIN, "--out", copy, "--overwrite", "--resume"), 2,
                          "contradict")


@pytest.mark.parametrize("out", ["file", "/dev/null/x", "under-a-file"])
def test_unusable_out_is_refused_before_training(cli, demo: Path, tmp_path: Path, out: str):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    path = {"file": a_file, "/dev/null/x": Path("/dev/null/x"), "under-a-file": a_file / "sub"}[out]
    r = cli("train", "--data", demo, *TRAIN, "--out", path)
    assert_one_line_error(r, 2, "--out")
    assert "epoch" not in r.stderr  # refused before any training step


def _damage(state: dict, how: str) -> dict:  # type: ignore[type-arg]
    if how == "missing key":
        del state["rng"]
    elif how == "garbage rng":
        state["rng"] = {"torch": torch.zeros(3), "numpy": [1, 2], "python": "x"}
    elif how == "garbage position":
        state["epoch"] = "x"
    elif how == "garbage optimizer":
        state["optimizer"] = {"state": 5}
    return state


@pytest.mark.parametrize("how", ["missing key", "garbage rng", "garbage position", "garbage optimizer"])
def test_damaged_checkpoint_resume_is_one_line_error(cli, demo: Path, trained: Path, tmp_path: Path, how: str):
    out = tmp_path / "out"
    out.mkdir()
    state = torch.load(trained / "last.pt", weights_only=True)
    torch.save(_damage(state, how), out / "last.pt")
    r = cli("train", "--data", demo, *TRAIN, "--out", out, "--resume")
    assert_one_line_error(r, 2, "--resume", "last.pt")


def test_stale_temporary_from_a_crashed_save_is_removed(cli, demo: Path, trained: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "last.pt").write_bytes((trained / "last.pt").read_bytes())
    dead = out / ".last.pt.999999999.tmp"  # no such process
    dead.write_bytes(b"torn")
    alive = out / f".last.pt.{os.getppid()}.tmp"  # a running process's save in progress: kept
    alive.write_bytes(b"in progress")
    r = cli("train", "--data", demo, *TRAIN, "--out", out, "--resume")
    assert r.exit_code == 0, r.output
    assert not dead.exists() and alive.exists()


def _nan_model(trained: Path, tmp_path: Path) -> Path:
    ck = torch.load(trained / "model.pt", weights_only=True)
    key = next(k for k, v in ck["state_dict"].items() if v.is_floating_point() and v.ndim == 4)
    ck["state_dict"][key] = torch.full_like(ck["state_dict"][key], float("nan"))
    path = tmp_path / "nan.pt"
    torch.save(ck, path)
    return path


def test_nan_weights_are_refused(cli, demo: Path, trained: Path, tmp_path: Path):
    ckpt = _nan_model(trained, tmp_path)
    image = next((demo / "val" / "images").rglob("*.jpg"))
    assert_one_line_error(cli("detect", image, "--checkpoint", ckpt), 2, "NaN", "nan.pt")
    assert_one_line_error(cli("predict", "--checkpoint", ckpt, "--images", demo / "val" / "images",
                              "--out", tmp_path / "pred"), 2, "NaN")
    assert not (tmp_path / "pred").exists()


def test_decompression_bomb_image(cli, demo: Path, trained: Path, tmp_path: Path):
    big = tmp_path / "big.png"  # above Pillow's limit but below its refusal: the size is named
    big.write_bytes(png_header(10_000, 10_000))
    assert_one_line_error(cli("detect", big, "--checkpoint", trained / "model.pt"), 2, "10000x10000 pixels")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(100_000, 100_000))
    assert_one_line_error(cli("detect", bomb, "--checkpoint", trained / "model.pt"), 2, "bomb.png", "too large",
                          "10,000,000,000 pixels")
    # training data: the whole demo copied, one image replaced by the bomb (same name)
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo, data)
    victim = next((data / "train" / "images").rglob("*.jpg"))
    victim.unlink()
    victim.write_bytes(png_header(100_000, 100_000))
    r = cli("train", "--data", data, *TRAIN)
    assert_one_line_error(r, 2, victim.name, "too large")
