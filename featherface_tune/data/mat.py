"""The standard WIDERFace validation ground truth: ``wider_face_val.mat`` and the easy/medium/hard
keep-lists ``wider_{easy,medium,hard}_val.mat`` (MATLAB cell arrays, read with scipy.io.loadmat).

Structure (E events, per event n images, per image k faces), as the standard evaluators index it::

    event_list[i][0][0]            -> '0--Parade'
    file_list[i][0][j][0][0]       -> '0_Parade_marchingband_1_465'          (image stem)
    face_bbx_list[i][0][j][0]      -> int32 [k, 4] x y w h
    gt_list[i][0][j][0]            -> uint8/uint16 [m, 1] 1-based indices of the kept faces (easy/medium/hard files)
    {blur,expression,illumination,invalid,occlusion,pose}_label_list[i][0][j][0] -> uint8 [k, 1]

:func:`write_ground_truth` writes the same structure (used for the synthetic demo data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from featherface_tune.errors import InputError

SETTINGS = ("easy", "medium", "hard")
ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
FACE_FILE = "wider_face_val.mat"


def setting_file(setting: str) -> str:
    return f"wider_{setting}_val.mat"


@dataclass(frozen=True)
class FaceMat:
    """``wider_face_val.mat``: per event, its name, image stems and boxes (x y w h, as stored)."""

    events: Tuple[str, ...]
    files: Tuple[Tuple[str, ...], ...]
    boxes: Tuple[Tuple[np.ndarray, ...], ...]
    attributes: Mapping[str, Tuple[Tuple[np.ndarray, ...], ...]]  # name -> per event per image [k] uint8

    @property
    def image_count(self) -> int:
        return sum(len(f) for f in self.files)

    @property
    def face_count(self) -> int:
        return sum(len(b) for ev in self.boxes for b in ev)


@dataclass(frozen=True)
class GroundTruth:
    """Everything the evaluation needs: the faces and, per setting, the 1-based kept-face indices
    (per event, per image; an int64 vector each, exactly as stored, duplicates included)."""

    faces: FaceMat
    keep: Mapping[str, Tuple[Tuple[np.ndarray, ...], ...]]

    @property
    def events(self) -> Tuple[str, ...]:
        return self.faces.events

    @property
    def files(self) -> Tuple[Tuple[str, ...], ...]:
        return self.faces.files

    @property
    def image_keys(self) -> set[Tuple[str, str]]:
        """(event, image name) of every image in the file list."""
        return {(e, f) for e, files in zip(self.events, self.files) for f in files}

    @property
    def boxes(self) -> Tuple[Tuple[np.ndarray, ...], ...]:
        return self.faces.boxes


def _load(path: Path, needed: Sequence[str], optional: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """The named variables of a .mat file (only those: the keep-list files repeat the whole face
    structure, which is not parsed again)."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise InputError(f"ground-truth file not found: {path}")
    try:
        data = loadmat(str(path), variable_names=tuple(needed) + tuple(optional))
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError variants on bad files
        raise InputError(f"{path}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from None
    missing = [k for k in needed if k not in data]
    if missing:
        raise InputError(f"{path}: missing variable(s) {', '.join(missing)}: not a WIDERFace ground-truth file")
    return data


def _cells(arr: np.ndarray, path: Path, name: str) -> list:
    if not isinstance(arr, np.ndarray) or arr.dtype != object:
        raise InputError(f"{path}: {name} is not a cell array")
    return [arr.flat[i] for i in range(arr.size)]


def _string(x: object, path: Path, name: str) -> str:
    a = np.asarray(x)
    if a.size != 1 or a.dtype.kind not in "US":
        raise InputError(f"{path}: {name} holds a non-string entry")
    return str(a.flat[0])


def _per_image(arr: np.ndarray, path: Path, name: str, counts: Sequence[int]) -> Tuple[Tuple[np.ndarray, ...], ...]:
    events = _cells(arr, path, name)
    if len(events) != len(counts):
        raise InputError(f"{path}: {name} has {len(events)} events, expected {len(counts)}")
    out = []
    for i, ev in enumerate(events):
        imgs = _cells(np.asarray(ev), path, f"{name}{{{i + 1}}}")
        if len(imgs) != counts[i]:
            raise InputError(f"{path}: {name}{{{i + 1}}} has {len(imgs)} images, expected {counts[i]}")
        out.append(tuple(np.asarray(x) for x in imgs))
    return tuple(out)


def read_face_mat(path: Path) -> FaceMat:
    """Read ``wider_face_val.mat`` (event_list, file_list, face_bbx_list and any attribute lists)."""
    path = Path(path)
    data = _load(path, ("event_list", "file_list", "face_bbx_list"), [f"{a}_label_list" for a in ATTRIBUTES])
    events = tuple(_string(e, path, "event_list") for e in _cells(data["event_list"], path, "event_list"))
    file_cells = _cells(data["file_list"], path, "file_list")
    if len(file_cells) != len(events):
        raise InputError(f"{path}: file_list has {len(file_cells)} events, event_list {len(events)}")
    files = tuple(tuple(_string(f, path, "file_list") for f in _cells(np.asarray(ev), path, "file_list")) for ev in file_cells)
    counts = [len(f) for f in files]
    raw_boxes = _per_image(data["face_bbx_list"], path, "face_bbx_list", counts)
    boxes = []
    for i, ev in enumerate(raw_boxes):
        row = []
        for j, b in enumerate(ev):
            if b.size == 0:
                b = b.reshape(0, 4)
            if b.ndim != 2 or b.shape[1] != 4:
                raise InputError(f"{path}: face_bbx_list for {events[i]}/{files[i][j]} has shape {b.shape}, expected [k, 4]")
            row.append(b)
        boxes.append(tuple(row))
    attributes: Dict[str, Tuple[Tuple[np.ndarray, ...], ...]] = {}
    for name in ATTRIBUTES:
        key = f"{name}_label_list"
        if key in data:
            per = _per_image(data[key], path, key, counts)
            attributes[name] = tuple(tuple(a.reshape(-1) for a in ev) for ev in per)
    return FaceMat(events=events, files=files, boxes=tuple(boxes), attributes=attributes)


def read_keep_list(path: Path, counts: Optional[Sequence[int]] = None) -> Tuple[Tuple[np.ndarray, ...], ...]:
    """Read ``gt_list`` from an easy/medium/hard file: per event, per image, 1-based kept-face indices."""
    path = Path(path)
    data = _load(path, ("gt_list",))
    if counts is None:
        counts = [np.asarray(ev).size for ev in _cells(data["gt_list"], path, "gt_list")]
    per = _per_image(data["gt_list"], path, "gt_list", counts)
    return tuple(tuple(k.reshape(-1).astype(np.int64) for k in ev) for ev in per)


def read_ground_truth(gt_dir: Path) -> GroundTruth:
    """Read the four standard files from ``gt_dir`` and check they agree (same images, indices in range)."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise InputError(f"ground-truth folder not found: {gt_dir}")
    faces = read_face_mat(gt_dir / FACE_FILE)
    counts = [len(f) for f in faces.files]
    keep: Dict[str, Tuple[Tuple[np.ndarray, ...], ...]] = {}
    for setting in SETTINGS:
        path = gt_dir / setting_file(setting)
        lists = read_keep_list(path, counts)
        bad = _bad_keep_index(faces, lists)
        if bad is not None:
            i, j, n, index = bad
            raise InputError(f"{path}: gt_list for {faces.events[i]}/{faces.files[i][j]} has index "
                             f"{index} outside 1..{n}")
        keep[setting] = lists
    return GroundTruth(faces=faces, keep=keep)


def _cell(items: Sequence[object]) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for i, x in enumerate(items):
        out[i, 0] = x
    return out


def write_ground_truth(gt_dir: Path, events: Sequence[str], files: Sequence[Sequence[str]],
                       boxes: Sequence[Sequence[np.ndarray]], keep: Mapping[str, Sequence[Sequence[np.ndarray]]],
                       attributes: Optional[Mapping[str, Sequence[Sequence[np.ndarray]]]] = None) -> Tuple[Path, ...]:
    """Write ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` in the standard structure.

    boxes: per event, per image, [k, 4] x y w h (stored as int32, rounded); keep: setting -> per event,
    per image, 1-based indices; attributes: name -> per event, per image, [k] values (zeros if absent).
    """
    from scipy.io import savemat

    gt_dir = Path(gt_dir)
    gt_dir.mkdir(parents=True, exist_ok=True)
    if not (len(events) == len(files) == len(boxes)):
        raise InputError("write_ground_truth: events, files and boxes differ in length")
    missing = [s for s in SETTINGS if s not in keep]
    if missing:
        raise InputError(f"write_ground_truth: keep lists missing for {', '.join(missing)}")
    attributes = attributes or {}
    box_cells = []
    attr_cells: Dict[str, list] = {name: [] for name in ATTRIBUTES}
    for i in range(len(events)):
        if len(files[i]) != len(boxes[i]):
            raise InputError(f"write_ground_truth: event {events[i]} has {len(files[i])} files and {len(boxes[i])} box arrays")
        ev_boxes = [np.rint(np.asarray(b, dtype=np.float64).reshape(-1, 4)).astype(np.int32) for b in boxes[i]]
        box_cells.append(_cell(ev_boxes))
        for name in ATTRIBUTES:
            given = attributes.get(name)
            vals = [np.asarray(given[i][j], dtype=np.uint8).reshape(-1, 1) if given is not None
                    else np.zeros((len(ev_boxes[j]), 1), dtype=np.uint8) for j in range(len(ev_boxes))]
            attr_cells[name].append(_cell(vals))
    base = {
        "event_list": _cell(list(events)),
        "file_list": _cell([_cell(list(f)) for f in files]),
        "face_bbx_list": _cell(box_cells),
    }
    for name in ATTRIBUTES:
        base[f"{name}_label_list"] = _cell(attr_cells[name])
    written = [gt_dir / FACE_FILE]
    savemat(str(written[0]), base, do_compression=False)
    for setting in SETTINGS:
        lists = []
        for i in range(len(events)):
            vals = []
            for j in range(len(files[i])):
                k = np.asarray(keep[setting][i][j], dtype=np.int64).reshape(-1, 1)
                dtype = np.uint8 if (k.size == 0 or k.max() <= 255) else np.uint16
                vals.append(k.astype(dtype))
            lists.append(_cell(vals))
        path = gt_dir / setting_file(setting)
        savemat(str(path), {**base, "gt_list": _cell(lists)}, do_compression=False)
        written.append(path)
    return tuple(written)


def ground_truth_from_lists(events: Sequence[str], files: Sequence[Sequence[str]], boxes: Sequence[Sequence[np.ndarray]],
                            keep: Mapping[str, Sequence[Sequence[np.ndarray]]]) -> GroundTruth:
    """An in-memory :class:`GroundTruth` (what :func:`read_ground_truth` returns), e.g. for tests or for
    evaluating without writing ``.mat`` files. Boxes are kept as given (x y w h); keep lists are 1-based."""
    if not (len(events) == len(files) == len(boxes)):
        raise InputError("ground truth: events, files and boxes differ in length")
    faces = FaceMat(
        events=tuple(events),
        files=tuple(tuple(f) for f in files),
        boxes=tuple(tuple(np.asarray(b).reshape(-1, 4) for b in ev) for ev in boxes),
        attributes={},
    )
    lists: Dict[str, Tuple[Tuple[np.ndarray, ...], ...]] = {}
    for setting in SETTINGS:
        per = keep[setting]
        if len(per) != len(events) or any(len(per[i]) != len(files[i]) for i in range(len(events))):
            raise InputError(f"ground truth: the {setting} keep lists do not match the file lists")
        lists[setting] = tuple(tuple(np.asarray(k, dtype=np.int64).reshape(-1) for k in ev) for ev in per)
        bad = _bad_keep_index(faces, lists[setting])
        if bad is not None:
            i, j, n, _ = bad
            raise InputError(f"ground truth: {setting} keep list of {events[i]}/{files[i][j]} has an index outside 1..{n}")
    return GroundTruth(faces=faces, keep=lists)


def _bad_keep_index(faces: "FaceMat", lists: Sequence[Sequence[np.ndarray]]) -> Optional[Tuple[int, int, int, int]]:
    """The first (event, file, face count, offending index) whose 1-based keep list leaves 1..n."""
    for i, ev in enumerate(lists):
        for j, k in enumerate(ev):
            n = len(faces.boxes[i][j])
            if k.size and (k.min() < 1 or k.max() > n):
                return i, j, n, int(k.max() if k.max() > n else k.min())
    return None
