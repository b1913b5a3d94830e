"""The standard .mat ground truth: the real files parse (skipped when absent), the writer produces the
structure the standard evaluator indexes, and bad files give one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat

from featherface_tune.data.mat import (
    SETTINGS, ground_truth_from_lists, read_face_mat, read_ground_truth, read_keep_list, write_ground_truth,
)
from featherface_tune.errors import InputError

GT_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "widerface" / "ground_truth"


def real_gt_dir() -> Path:
    if not (GT_DIR / "wider_face_val.mat").is_file():
        pytest.skip(f"{GT_DIR} not present (real WIDERFace ground truth lives only on dev and CI machines)")
    return GT_DIR


def test_real_mat_files_parse():
    gt = read_ground_truth(real_gt_dir())
    assert len(gt.events) == 61 and gt.events[0] == "0--Parade"
    assert gt.faces.image_count == 3226 and gt.faces.face_count == 39708
    assert gt.files[0][0] == "0_Parade_marchingband_1_465"
    np.testing.assert_array_equal(gt.boxes[0][0][:2], [[345, 211, 4, 4], [331, 126, 3, 3]])
    kept = {s: sum(len(k) for ev in gt.keep[s] for k in ev) for s in SETTINGS}
    assert kept == {"easy": 7211, "medium": 13319, "hard": 31958}
    assert set(gt.faces.attributes) == {"blur", "expression", "illumination", "invalid", "occlusion", "pose"}
    # the keep lists never keep an invalid face
    for i in range(len(gt.events)):
        for j in range(len(gt.files[i])):
            k = gt.keep["hard"][i][j]
            assert not gt.faces.attributes["invalid"][i][j][k - 1].any()


def test_real_keep_list_alone():
    lists = read_keep_list(real_gt_dir() / "wider_hard_val.mat")
    assert len(lists) == 61 and sum(len(ev) for ev in lists) == 3226


def sample():
    events = ["0--Synthetic_A", "1--Synthetic_B"]
    files = [["a_1", "a_2"], ["b_1"]]
    boxes = [[np.array([[1, 2, 3, 4], [5, 6, 70, 80]]), np.zeros((0, 4))], [np.array([[1, 1, 300, 300]] * 300)]]
    keep = {"easy": [[np.array([2]), np.array([])], [np.array([1])]],
            "medium": [[np.array([2]), np.array([])], [np.arange(1, 301)]],
            "hard": [[np.array([1, 2]), np.array([])], [np.arange(1, 301)]]}
    return events, files, boxes, keep


def test_writer_round_trip_and_standard_indexing(tmp_path):
    events, files, boxes, keep = sample()
    write_ground_truth(tmp_path, events, files, boxes, keep, attributes={"occlusion": [[[0, 2], []], [[1] * 300]]})
    gt = read_ground_truth(tmp_path)
    assert gt.events == tuple(events) and gt.files == (("a_1", "a_2"), ("b_1",))
    np.testing.assert_array_equal(gt.boxes[0][0], boxes[0][0])
    assert gt.boxes[0][1].shape == (0, 4) and gt.boxes[1][0].shape == (300, 4)
    np.testing.assert_array_equal(gt.keep["hard"][1][0], np.arange(1, 301))  # > 255: stored as uint16
    np.testing.assert_array_equal(gt.faces.attributes["occlusion"][0][0], [0, 2])
    # exactly the indexing the standard evaluator uses
    face = loadmat(str(tmp_path / "wider_face_val.mat"))
    hard = loadmat(str(tmp_path / "wider_hard_val.mat"))
    assert str(face["event_list"][1][0][0]) == "1--Synthetic_B"
    assert str(face["file_list"][0][0][1][0][0]) == "a_2"
    assert face["face_bbx_list"][0][0][0][0].dtype == np.int32
    np.testing.assert_array_equal(face["face_bbx_list"][0][0][0][0].astype("float"), boxes[0][0])
    k = hard["gt_list"][0][0][0][0]
    assert k.shape == (2, 1) and list(k.ravel()) == [1, 2]
    assert len(hard["gt_list"][0][0][1][0]) == 0


def test_in_memory_ground_truth_equals_written(tmp_path):
    events, files, boxes, keep = sample()
    write_ground_truth(tmp_path, events, files, boxes, keep)
    a, b = read_ground_truth(tmp_path), ground_truth_from_lists(events, files, boxes, keep)
    assert a.events == b.events and a.files == b.files
    for s in SETTINGS:
        for ka, kb in zip(a.keep[s], b.keep[s]):
            assert all(np.array_equal(x, y) for x, y in zip(ka, kb))


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="ground-truth folder not found"):
        read_ground_truth(tmp_path / "nope")
    with pytest.raises(InputError, match="ground-truth file not found"):
        read_ground_truth(tmp_path)
    (tmp_path / "wider_face_val.mat").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable MATLAB"):
        read_face_mat(tmp_path / "wider_face_val.mat")
    from scipy.io import savemat

    savemat(str(tmp_path / "wider_face_val.mat"), {"something": np.zeros(3)})
    with pytest.raises(InputError, match="missing variable"):
        read_face_mat(tmp_path / "wider_face_val.mat")


def test_keep_index_out_of_range_is_rejected(tmp_path):
    events, files, boxes, keep = sample()
    keep = dict(keep, easy=[[np.array([3]), np.array([])], [np.array([1])]])  # image a_1 has 2 faces
    write_ground_truth(tmp_path, events, files, boxes, keep)
    with pytest.raises(InputError, match=r"wider_easy_val.mat: gt_list for 0--Synthetic_A/a_1 has index 3 outside 1..2"):
        read_ground_truth(tmp_path)
    with pytest.raises(InputError, match="outside"):
        ground_truth_from_lists(events, files, boxes, keep)
