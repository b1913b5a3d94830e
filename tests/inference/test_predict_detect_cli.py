"""`predict` and `detect` on a randomly initialised model (no shared files needed), and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.commands.predict import format_prediction
from featherface_tune.errors import InputError
from featherface_tune.data.images import read_image_bgr
from featherface_tune.inference.detector import Detections
from featherface_tune.models.builder import build_model
from featherface_tune.models.presets import get_preset

runner = CliRunner()


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model(get_preset("retinaface-mnet025"))
    with torch.no_grad():  # make some priors confident so there is something to write
        for head in model.ClassHead:
            head.conv1x1.bias.copy_(torch.tensor([-1.0, 1.0] * 2))
    path = tmp_path_factory.mktemp("ck") / "random.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for event, names in {"0--Parade": ["a", "b"], "1--Handshaking": ["c"]}.items():
        (root / event).mkdir()
        for n in names:
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / event / f"{n}.jpg")
    return root


def _one_line_error(r) -> None:  # type: ignore[no-untyped-def]
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    # the error is one line, the last one (predict may print a diagnostic line before it)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), r.stderr
    assert sum(line.startswith("error:") for line in lines) == 1 and len(lines) <= 2, r.stderr


def test_predict_tree(random_ckpt: Path, image_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    r = runner.invoke(app, ["predict", "--checkpoint", str(random_ckpt), "--images", str(image_tree),
                            "--out", str(out), "--json", "--keep", "20"])
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert js["images"] == 3 and js["config_inferred"] and js["config"]["neck"] == "fpn"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt"))
    assert files == ["0--Parade/a.txt", "0--Parade/b.txt", "1--Handshaking/c.txt"]
    total = 0
    for f in out.rglob("*.txt"):
        lines = f.read_text().splitlines()
        assert lines[0] == f.stem
        n = int(lines[1])
        assert n == len(lines) - 2 and 0 < n <= 20
        scores = [float(line.split()[4]) for line in lines[2:]]
        assert scores == sorted(scores, reverse=True) and min(scores) > 0.02
        assert all(len(line.split()) == 5 for line in lines[2:])
        total += n
    assert total == js["detections"]
    # an --out holding predictions is refused (evaluate would score old and new files together) ...
    stale = out / "9--Old" / "gone.txt"
    stale.parent.mkdir()
    stale.write_text("gone\n0\n")
    r = runner.invoke(app, ["predict", "--checkpoint", str(random_ckpt), "--images", str(image_tree),
                            "--out", str(out)])
    _one_line_error(r)
    assert "--overwrite" in r.stderr and "4 prediction files" in r.stderr and stale.is_file()
    # ... unless --overwrite, which deletes them first; the human summary goes to stdout, progress to stderr
    r = runner.invoke(app, ["predict", "--checkpoint", str(random_ckpt), "--preset", "retinaface-mnet025",
                            "--images", str(image_tree), "--out", str(out), "--float-coords", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "3 images" in r.stdout
    first = (out / "0--Parade" / "a.txt").read_text().splitlines()[2].split()
    assert "." in first[0]
    assert not stale.exists() and len(list(out.rglob("*.txt"))) == 3


def test_crowded_image_keeps_every_box_by_default() -> None:
    """The official protocol (test_widerface.py) has no top-k / keep cap: on a crowd every box that
    survives NMS is kept; --top-k / --keep cap it for deployment."""
    from featherface_tune.inference.detector import _priors, postprocess
    from featherface_tune.inference.nms import nms_plain

    h, w = 640, 640
    n = _priors(h, w, 2).shape[0]
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(n, 4, generator=g) * 0.5
    logits = torch.randn(n, 2, generator=g) * 3
    dets = postprocess(loc, logits, None, (h, w), 2)
    # the reference: every score above 0.02, best first, through py_cpu_nms, nothing cut
    scores = torch.softmax(logits, -1)[:, 1]
    assert len(dets) > 750 and len(dets) == len(nms_plain(*_candidates(loc, scores, h, w)))
    assert len(postprocess(loc, logits, None, (h, w), 2, keep=750)) == 750
    assert len(postprocess(loc, logits, None, (h, w), 2, top_k=5000)) < len(dets)


def _candidates(loc, scores, h, w):  # type: ignore[no-untyped-def]
    from featherface_tune.inference.decode import VARIANCES, decode_boxes
    from featherface_tune.inference.detector import _priors

    keep = scores > 0.02
    boxes = decode_boxes(loc[keep], _priors(h, w, 2)[keep], VARIANCES) * torch.tensor([w, h, w, h])
    return boxes.numpy(), scores[keep].numpy(), 0.4


def test_format_prediction_truncates_like_retinaface() -> None:
    d = Detections(np.array([[10.7, 20.2, 30.9, 45.5], [-0.5, 1.0, 5.2, 6.8]], np.float32),
                   np.array([0.9, 0.5], np.float32), None, (100, 100))
    assert format_prediction("img", d).splitlines() == ["img", "2", "10 20 20 25 0.9", "0 1 5 5 0.5"]


def test_detect_table_and_json(random_ckpt: Path, image_tree: Path, tmp_path: Path) -> None:
    img = image_tree / "0--Parade" / "a.jpg"
    r = runner.invoke(app, ["detect", str(img), "--checkpoint", str(random_ckpt), "--threshold", "0.0"])
    assert r.exit_code == 0, r.output
    assert "face(s) with score >= 0.0" in r.stdout
    save = tmp_path / "out" / "a.png"
    r = runner.invoke(app, ["detect", str(img), "--checkpoint", str(random_ckpt), "--json", "--save", str(save),
                            "--threshold", "0.3", "--keep", "5"])
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert (js["height"], js["width"]) == (48, 64)
    assert 0 < len(js["detections"]) <= 5 and all(d["score"] >= 0.3 for d in js["detections"])
    assert save.is_file()


# ---- bad input --------------------------------------------------------------------------

def test_text_file_as_checkpoint(image_tree: Path, tmp_path: Path) -> None:
    bad = tmp_path / "model.pth"
    bad.write_text("definitely not a checkpoint\n")
    img = image_tree / "0--Parade" / "a.jpg"
    _one_line_error(runner.invoke(app, ["detect", str(img), "--checkpoint", str(bad)]))
    _one_line_error(runner.invoke(app, ["predict", "--checkpoint", str(bad), "--images", str(image_tree),
                                        "--out", str(tmp_path / "p")]))
    r = runner.invoke(app, ["detect", str(img), "--checkpoint", str(bad)])
    assert "not a PyTorch checkpoint" in r.stderr


def test_checkpoint_of_another_architecture(image_tree: Path, tmp_path: Path) -> None:
    img = image_tree / "0--Parade" / "a.jpg"
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.bn1.weight": torch.zeros(64)}, other)
    r = runner.invoke(app, ["detect", str(img), "--checkpoint", str(other)])
    _one_line_error(r)
    assert "body.stage1.0.0.weight" in r.stderr
    # a FeatherFace-layout checkpoint with wrong shapes for the requested config
    wrong = tmp_path / "official.pth"
    torch.save(build_model(get_preset("featherface-official")).state_dict(), wrong)
    r = runner.invoke(app, ["detect", str(img), "--checkpoint", str(wrong), "--preset", "featherface-489k"])
    _one_line_error(r)
    assert "wrongly shaped" in r.stderr and "neck_channels=64" in r.stderr
    # wrong shapes that fit no config at all
    sd = build_model(get_preset("featherface-official")).state_dict()
    sd["ClassHead.1.conv1x1.weight"] = torch.zeros(6, 64, 1, 1)
    torch.save(sd, wrong)
    r = runner.invoke(app, ["predict", "--checkpoint", str(wrong), "--images", str(image_tree),
                            "--out", str(tmp_path / "p")])
    _one_line_error(r)
    assert "anchors_per_cell" in r.stderr


def test_unreadable_image(random_ckpt: Path, tmp_path: Path) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is text, not a JPEG")
    r = runner.invoke(app, ["detect", str(fake), "--checkpoint", str(random_ckpt)])
    _one_line_error(r)
    assert "cannot read image" in r.stderr and "photo.jpg" in r.stderr
    _one_line_error(runner.invoke(app, ["detect", str(tmp_path / "missing.jpg"), "--checkpoint", str(random_ckpt)]))
    tree = tmp_path / "tree" / "0--Parade"
    tree.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tree / "good.jpg")
    (tree / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    r = runner.invoke(app, ["predict", "--checkpoint", str(random_ckpt), "--images", str(tree.parent),
                            "--out", str(tmp_path / "p")])
    _one_line_error(r)
    assert "broken.jpg" in r.stderr


def test_empty_tree_and_bad_thresholds(random_ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["predict", "--checkpoint", str(random_ckpt), "--images", str(tmp_path / "empty"),
                            "--out", str(tmp_path / "p")])
    _one_line_error(r)
    assert "no images" in r.stderr
    r = runner.invoke(app, ["predict", "--checkpoint", str(random_ckpt), "--images", str(tmp_path / "empty"),
                            "--out", str(tmp_path / "p"), "--conf", "1.5"])
    _one_line_error(r)


def test_read_image_modes(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    Image.fromarray(rgb).save(tmp_path / "c.png")
    bgr = read_image_bgr(tmp_path / "c.png")
    assert bgr.shape == (4, 5, 3) and bgr.dtype == np.uint8 and bgr[0, 0].tolist() == [0, 0, 200]
    Image.fromarray(np.full((4, 5), 77, np.uint8)).save(tmp_path / "g.png")
    assert read_image_bgr(tmp_path / "g.png")[0, 0].tolist() == [77, 77, 77]
    Image.fromarray(np.zeros((4, 5, 4), np.uint8)).save(tmp_path / "a.png")
    assert read_image_bgr(tmp_path / "a.png").shape == (4, 5, 3)
    with pytest.raises(InputError):
        read_image_bgr(tmp_path / "nope.png")


CROWD = Path(__file__).parent / "data" / "official_crowd.json"


def test_crowds_keep_exactly_what_the_official_script_keeps() -> None:
    """The official numbers are data: test_widerface.py's post-processing (github dohun-mat/FeatherFace:
    decode, scores > 0.02, argsort()[::-1], py_cpu_nms 0.4, no caps) was run on these seeded random
    network outputs; postprocess() with its defaults keeps the same boxes, scores and order, bit for bit."""
    import hashlib

    from featherface_tune.inference.detector import _priors, postprocess

    for case in json.loads(CROWD.read_text())["cases"]:
        h, w = case["height"], case["width"]
        n = _priors(h, w, 2).shape[0]
        g = torch.Generator().manual_seed(case["seed"])
        loc = torch.randn(n, 4, generator=g) * 0.5
        logits = torch.randn(n, 2, generator=g) * 3
        dets = postprocess(loc, logits, None, (h, w), 2)
        rows = np.ascontiguousarray(np.hstack([dets.boxes, dets.scores[:, None]]).astype(np.float32))
        assert len(dets) == case["kept"] > 750
        assert float(rows[:, 4].astype(np.float64).sum()) == case["score_sum"]
        assert hashlib.sha256(rows.tobytes()).hexdigest() == case["dets_sha256"]
