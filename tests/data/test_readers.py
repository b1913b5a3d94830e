"""Annotation readers: the RetinaFace label.txt and the official bbx_gt.txt layouts, malformed input with
file and line, missing images (error or skipped and counted), and layout detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featherface_tune.data.readers import detect_layout, read_any, read_bbx_gt, read_label_txt
from featherface_tune.errors import InputError

TRAIN_LABEL = """\
# 0--Parade/0_Parade_marchingband_1_849.jpg
449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 0.0 485.174 425.893 0.0 538.357 431.491 0.0 0.82
# 0--Parade/0_Parade_Parade_0_904.jpg
361 98 263 339 424.143 251.656 0.0 547.134 232.571 0.0 494.121 325.875 0.0 453.83 368.286 0.0 561.978 342.839 0.0 0.89
10 20 0 5 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0
# 1--Handshaking/1_Handshaking_Handshaking_1_35.jpg
# 2--Demonstration/2_Demonstration_Demonstration_Or_Protest_2_58.jpg
-5 700 40 40 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0
"""

VAL_LABEL = """\
# 0--Parade/0_Parade_marchingband_1_465.jpg
345 211 4 4
331 126 3 3
# 0--Parade/0_Parade_Parade_0_628.jpg
26 299 10 16
"""

BBX_GT = """\
0--Parade/0_Parade_marchingband_1_849.jpg
1
449 330 122 149 0 0 0 0 0 0 
0--Parade/0_Parade_Parade_0_452.jpg
0
0 0 0 0 0 0 0 0 0 0 
0--Parade/0_Parade_marchingband_1_799.jpg
3
78 221 7 8 2 0 0 0 0 0 
78 238 14 17 2 0 0 0 0 0 
113 212 11 15 2 0 0 1 0 0 
"""


def make_images(root: Path, rels) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\xff\xd8\xff")  # existence is all the readers check


def rels_of(text: str, retinaface: bool = True):
    if retinaface:
        return [ln[2:] for ln in text.splitlines() if ln.startswith("# ")]
    return [ln for ln in text.splitlines() if ln.endswith(".jpg")]


@pytest.fixture()
def retina(tmp_path):
    tmp_path = tmp_path / "retina"
    (tmp_path / "train").mkdir(parents=True)
    (tmp_path / "train" / "label.txt").write_text(TRAIN_LABEL)
    make_images(tmp_path / "train" / "images", rels_of(TRAIN_LABEL))
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "label.txt").write_text(VAL_LABEL)
    make_images(tmp_path / "val" / "images", rels_of(VAL_LABEL))
    return tmp_path


@pytest.fixture()
def official(tmp_path):
    tmp_path = tmp_path / "official"
    (tmp_path / "wider_face_split").mkdir(parents=True)
    (tmp_path / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text(BBX_GT)
    make_images(tmp_path / "WIDER_val" / "images", rels_of(BBX_GT, retinaface=False))
    return tmp_path


def test_label_txt_train(retina):
    recs = read_label_txt(retina / "train" / "label.txt")
    assert [r.name for r in recs] == ["0_Parade_marchingband_1_849", "0_Parade_Parade_0_904",
                                      "1_Handshaking_Handshaking_1_35", "2_Demonstration_Demonstration_Or_Protest_2_58"]
    assert [r.event for r in recs] == ["0--Parade", "0--Parade", "1--Handshaking", "2--Demonstration"]
    assert recs[0].path == retina / "train" / "images" / "0--Parade" / "0_Parade_marchingband_1_849.jpg"
    assert recs[0].boxes.dtype == np.float32 and recs[0].landmarks.dtype == np.float32
    np.testing.assert_allclose(recs[0].boxes, [[449, 330, 122, 149]])
    np.testing.assert_allclose(recs[0].landmarks[0], [488.906, 373.643, 542.089, 376.442, 515.031, 412.83,
                                                      485.174, 425.893, 538.357, 431.491], rtol=1e-6)
    # a face without landmarks: all -1; a zero-width and an out-of-image box are kept as written
    assert recs[1].boxes.shape == (2, 4) and recs[1].landmarks.shape == (2, 10)
    assert (recs[1].landmarks[1] == -1).all() and recs[1].boxes[1, 2] == 0
    assert recs[2].boxes.shape == (0, 4) and recs[2].landmarks.shape == (0, 10)
    assert recs[3].boxes[0, 0] == -5
    assert recs.skipped == () and recs.skipped_count == 0


def test_label_txt_val_has_boxes_only(retina):
    recs = read_label_txt(retina / "val" / "label.txt")
    assert len(recs) == 2 and recs[0].boxes.shape == (2, 4)
    assert (recs[0].landmarks == -1).all() and recs[0].landmarks.shape == (2, 10)


@pytest.mark.parametrize("bad_line, lineno, message", [
    ("449 330 122 149 1 2", 3, "expected 4, 19 or 20 numbers"),
    ("449 330 abc 149", 3, "not numbers"),
    ("449 330 nan 149", 3, "non-finite"),
])
def test_label_txt_malformed_line_names_file_and_line(tmp_path, bad_line, lineno, message):
    label = tmp_path / "label.txt"
    label.write_text("# 0--Parade/a.jpg\n10 10 20 20\n" + bad_line + "\n")
    with pytest.raises(InputError, match=message) as exc:
        read_label_txt(label)
    assert f"{label}:{lineno}:" in str(exc.value)


def test_label_txt_face_before_header_and_empty(tmp_path):
    label = tmp_path / "label.txt"
    label.write_text("10 10 20 20\n")
    with pytest.raises(InputError, match=r"label\.txt:1: face line before"):
        read_label_txt(label)
    label.write_text("\n")
    with pytest.raises(InputError, match="not a RetinaFace label.txt"):
        read_label_txt(label)
    with pytest.raises(InputError, match="label file not found"):
        read_label_txt(tmp_path / "nope.txt")


def test_label_txt_missing_image_error_or_skip(retina):
    missing = retina / "train" / "images" / "1--Handshaking" / "1_Handshaking_Handshaking_1_35.jpg"
    missing.unlink()
    with pytest.raises(InputError, match="image not found: .*1_Handshaking_Handshaking_1_35.jpg"):
        read_label_txt(retina / "train" / "label.txt")
    recs = read_label_txt(retina / "train" / "label.txt", skip_missing=True)
    assert len(recs) == 3 and recs.skipped_count == 1 and recs.skipped == (missing,)


def test_label_txt_images_root_override(retina, tmp_path_factory):
    other = tmp_path_factory.mktemp("imgs")
    make_images(other, rels_of(VAL_LABEL))
    recs = read_label_txt(retina / "val" / "label.txt", images_root=other)
    assert recs[0].path.parent.parent == other


def test_bbx_gt(official):
    recs = read_bbx_gt(official / "wider_face_split" / "wider_face_val_bbx_gt.txt", official / "WIDER_val" / "images")
    assert [len(r.boxes) for r in recs] == [1, 0, 3]  # the 0-face image's line of zeros is not a face
    assert recs[1].boxes.shape == (0, 4) and recs[1].landmarks.shape == (0, 10)
    np.testing.assert_allclose(recs[2].boxes[2], [113, 212, 11, 15])
    assert (recs[2].landmarks == -1).all()
    assert recs[0].path == official / "WIDER_val" / "images" / "0--Parade" / "0_Parade_marchingband_1_849.jpg"
    dropped = read_bbx_gt(official / "wider_face_split" / "wider_face_val_bbx_gt.txt",
                          official / "WIDER_val" / "images", drop_invalid=True)
    assert [len(r.boxes) for r in dropped] == [1, 0, 2]


@pytest.mark.parametrize("text, lineno, message", [
    ("0--P/a.jpg\nx\n1 2 3 4 0 0 0 0 0 0\n", 2, "malformed face-count line"),
    ("0--P/a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n0--P/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n", 4, "expected 10 numbers"),
    ("0--P/a.jpg\n1\n1 2 3 4 0 0 0 0 0\n", 3, "expected 10 numbers"),
    ("0--P/a.jpg\n1\n1 2 3 four 0 0 0 0 0 0\n", 3, "not numbers"),
    ("0--P/a.jpg\n3\n1 2 3 4 0 0 0 0 0 0\n", 3, "file ends inside"),
    ("0--P/a.jpg\n", 2, "missing face-count line"),
    ("0--P/a.jpg\n-1\n", 2, "negative face count"),
])
def test_bbx_gt_malformed_names_file_and_line(tmp_path, text, lineno, message):
    gt = tmp_path / "gt.txt"
    gt.write_text(text)
    make_images(tmp_path / "images", ["0--P/a.jpg", "0--P/b.jpg"])
    with pytest.raises(InputError, match=message) as exc:
        read_bbx_gt(gt, tmp_path / "images")
    assert f"{gt}:{lineno}:" in str(exc.value)


def test_bbx_gt_missing_image(official):
    (official / "WIDER_val" / "images" / "0--Parade" / "0_Parade_Parade_0_452.jpg").unlink()
    args = (official / "wider_face_split" / "wider_face_val_bbx_gt.txt", official / "WIDER_val" / "images")
    with pytest.raises(InputError, match="0_Parade_Parade_0_452.jpg"):
        read_bbx_gt(*args)
    recs = read_bbx_gt(*args, skip_missing=True)
    assert len(recs) == 2 and recs.skipped_count == 1


def test_read_any_detects_both_layouts(retina, official):
    assert detect_layout(retina, "train").kind == "retinaface"
    assert detect_layout(official, "val").kind == "official"
    assert len(read_any(retina, "val")) == 2 and len(read_any(official, "val")) == 3
    with pytest.raises(InputError, match="no WIDERFace train annotations"):
        read_any(official, "train")
    with pytest.raises(InputError, match="unknown split"):
        read_any(official, "test")
    with pytest.raises(InputError, match="dataset folder not found"):
        read_any(official / "nowhere", "val")
