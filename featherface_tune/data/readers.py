"""Readers for the two WIDERFace annotation layouts people have on disk.

* RetinaFace ``label.txt`` (``root/{train,val}/label.txt`` with ``root/{train,val}/images/``)::

      # 0--Parade/0_Parade_marchingband_1_849.jpg
      449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 0.0 485.174 425.893 0.0 538.357 431.491 0.0 0.82
      ...

  One face per line: ``x y w h``, five landmarks as ``x y flag`` triples, a trailing score (20 numbers);
  a face without landmarks has -1 in every landmark field. The val ``label.txt`` has only ``x y w h``.
  19 numbers (no score) are accepted too.

* Official ``wider_face_split/wider_face_{train,val}_bbx_gt.txt`` with ``WIDER_{train,val}/images/``::

      0--Parade/0_Parade_marchingband_1_849.jpg
      1
      449 330 122 149 0 0 0 0 0 0

  Name line, face-count line, then ``x y w h blur expression illumination invalid occlusion pose`` per
  face. An image with 0 faces still has one line (of zeros), which is not a face and is dropped.

Both return :class:`~featherface_tune.data.records.ImageRecord` lists (a :class:`RecordList`, an ordinary
list that also says which images were skipped).

Degenerate boxes. The readers do what RetinaFace's ``WiderFaceDetection`` does: keep every annotated box
as written — zero-width/zero-height boxes (the real val set has a few) and boxes that reach outside the
image are *not* dropped or clipped here. Filtering is the training augmentation's job, as in RetinaFace's
``_crop``: a crop window is accepted only if it wholly contains at least one box; a face survives the
crop only if its centre lies strictly inside the window; kept boxes are clipped to the window, and a box
whose clipped inclusive width or height (``x2 - x1 + 1``, at the training scale) is not positive is
dropped; if none of 250 crop attempts is accepted, the whole image is used with all its boxes (padded to
square). The evaluation keeps zero-size boxes too (the standard IoU counts them as one pixel wide). A RetinaFace landmark row counts as absent when its first x is
negative; such rows are stored as all -1 here. Numbers that are not finite make a line malformed.
Evaluation never uses these readers: it reads the ``.mat`` ground truth (see ``data/mat.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from featherface_tune.data.records import ImageRecord
from featherface_tune.errors import InputError

NO_LANDMARKS = np.full(10, -1.0, dtype=np.float32)


class MissingImage(InputError):
    """An image the annotations list is not on disk (a command that can skip such images says how)."""


class RecordList(List[ImageRecord]):
    """The records a reader returns: a plain list, plus ``skipped`` (image paths that were missing and
    skipped because ``skip_missing`` was set) and ``source`` (the annotation file)."""

    def __init__(self, records: Iterable[ImageRecord] = (), skipped: Sequence[Path] = (), source: Optional[Path] = None):
        super().__init__(records)
        self._skipped: Tuple[Path, ...] = tuple(skipped)
        self._source = source

    @property
    def skipped(self) -> Tuple[Path, ...]:
        return self._skipped

    @property
    def skipped_count(self) -> int:
        return len(self._skipped)

    @property
    def source(self) -> Optional[Path]:
        return self._source


@dataclass(frozen=True)
class DatasetLayout:
    """Where a split lives: which layout, the annotation file and the image root."""

    kind: str  # "retinaface" or "official"
    annotation: Path
    images_root: Path


def _split_rel(rel: str, where: str) -> Tuple[str, str]:
    rel = rel.strip().replace("\\", "/")
    if not rel or "/" not in rel:
        raise InputError(f"{where}: expected an image path like 'event/name.jpg', got {rel!r}")
    event, _, fname = rel.rpartition("/")
    event = event.split("/")[-1]
    stem = fname.rsplit(".", 1)[0] if "." in fname else fname
    if not event or not stem:
        raise InputError(f"{where}: expected an image path like 'event/name.jpg', got {rel!r}")
    return event, stem


def _numbers(tokens: Sequence[str], where: str) -> List[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise InputError(f"{where}: malformed face line (not numbers): {' '.join(tokens)[:80]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{where}: malformed face line (non-finite number): {' '.join(tokens)[:80]!r}")
    return values


def _finish(path: Path, event: str, name: str, boxes: List[List[float]], lms: List[np.ndarray]) -> ImageRecord:
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    lm = np.asarray(lms, dtype=np.float32).reshape(-1, 10) if lms else np.zeros((0, 10), dtype=np.float32)
    return ImageRecord(path=path, event=event, name=name, boxes=b, landmarks=lm)


def _read_lines(path: Path, what: str) -> List[str]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return path.read_text(encoding="utf-8", errors="strict").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _check_images(records: List[ImageRecord], skip_missing: bool, source: Path) -> RecordList:
    kept: List[ImageRecord] = []
    skipped: List[Path] = []
    for rec in records:
        if rec.path.is_file():
            kept.append(rec)
        elif skip_missing:
            skipped.append(rec.path)
        else:
            raise MissingImage(f"image not found: {rec.path} (listed in {source})")
    return RecordList(kept, skipped, source)


def read_label_txt(label_path: Path, images_root: Optional[Path] = None, skip_missing: bool = False) -> RecordList:
    """Read a RetinaFace ``label.txt``. Images are looked up under ``images_root`` (default: the
    ``images/`` folder beside the label file). A malformed line raises InputError naming file and line;
    a missing image raises InputError unless ``skip_missing`` (then it is left out and counted in
    ``result.skipped``)."""
    label_path = Path(label_path)
    lines = _read_lines(label_path, "label file")
    root = Path(images_root) if images_root is not None else label_path.parent / "images"
    records: List[ImageRecord] = []
    current: Optional[Tuple[Path, str, str]] = None
    boxes: List[List[float]] = []
    lms: List[np.ndarray] = []
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        where = f"{label_path}:{lineno}"
        if not line:
            continue
        if line.startswith("#"):
            if current is not None:
                records.append(_finish(*current, boxes, lms))
            rel = line[1:].strip()
            event, stem = _split_rel(rel, where)
            current = (root / rel, event, stem)
            boxes, lms = [], []
            continue
        if current is None:
            raise InputError(f"{where}: face line before the first '# event/name.jpg' line")
        tokens = line.split()
        if len(tokens) not in (4, 19, 20):
            raise InputError(f"{where}: malformed face line: expected 4, 19 or 20 numbers "
                             f"(x y w h [5 x y flag landmarks] [score]), got {len(tokens)}")
        values = _numbers(tokens, where)
        boxes.append(values[:4])
        if len(values) >= 19:
            pts = np.array([values[4 + 3 * k + c] for k in range(5) for c in (0, 1)], dtype=np.float32)
            lms.append(NO_LANDMARKS if pts[0] < 0 else pts)
        else:
            lms.append(NO_LANDMARKS)
    if current is not None:
        records.append(_finish(*current, boxes, lms))
    if not records:
        raise InputError(f"{label_path}: no '# event/name.jpg' lines: not a RetinaFace label.txt")
    return _check_images(records, skip_missing, label_path)


def read_bbx_gt(gt_txt: Path, images_root: Path, skip_missing: bool = False, drop_invalid: bool = False) -> RecordList:
    """Read the official ``wider_face_{train,val}_bbx_gt.txt``; ``images_root`` is
    ``WIDER_{train,val}/images``. Faces carry no landmarks (all -1). ``drop_invalid`` leaves out faces
    whose ``invalid`` attribute is 1 (default: keep them, as the val ``.mat`` files do; the
    easy/medium/hard keep-lists never include them). Errors as in :func:`read_label_txt`."""
    gt_txt = Path(gt_txt)
    lines = _read_lines(gt_txt, "ground-truth file")
    root = Path(images_root)
    records: List[ImageRecord] = []
    i = 0
    n = len(lines)
    while i < n:
        name_line = lines[i].strip()
        if not name_line:
            i += 1
            continue
        where = f"{gt_txt}:{i + 1}"
        event, stem = _split_rel(name_line, where)
        if i + 1 >= n:
            raise InputError(f"{gt_txt}:{i + 2}: missing face-count line after {name_line!r}")
        count_text = lines[i + 1].strip()
        try:
            count = int(count_text)
        except ValueError:
            raise InputError(f"{gt_txt}:{i + 2}: malformed face-count line {count_text[:40]!r} (expected an integer)") from None
        if count < 0:
            raise InputError(f"{gt_txt}:{i + 2}: negative face count {count}")
        n_lines = max(count, 1)
        if i + 2 + n_lines > n:
            raise InputError(f"{gt_txt}:{n}: file ends inside {name_line!r} ({count} faces announced)")
        boxes: List[List[float]] = []
        for k in range(n_lines):
            lineno = i + 3 + k
            tokens = lines[lineno - 1].split()
            wh = f"{gt_txt}:{lineno}"
            if len(tokens) != 10:
                raise InputError(f"{wh}: malformed face line: expected 10 numbers "
                                 f"(x y w h blur expression illumination invalid occlusion pose), got {len(tokens)}")
            values = _numbers(tokens, wh)
            if count == 0:
                continue  # the placeholder line of a 0-face image
            if drop_invalid and values[7] == 1:
                continue
            boxes.append(values[:4])
        records.append(_finish(root / name_line, event, stem, boxes, [NO_LANDMARKS] * len(boxes)))
        i += 2 + n_lines
    if not records:
        raise InputError(f"{gt_txt}: no images listed: not a wider_face_*_bbx_gt.txt file")
    return _check_images(records, skip_missing, gt_txt)


def detect_layout(root: Path, split: str) -> DatasetLayout:
    """Find ``split`` ("train" or "val") under a dataset root in either layout (RetinaFace first)."""
    root = Path(root)
    if split not in ("train", "val"):
        raise InputError(f"unknown split {split!r}: expected 'train' or 'val'")
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    label = root / split / "label.txt"
    if label.is_file():
        return DatasetLayout("retinaface", label, root / split / "images")
    gt = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
    if gt.is_file():
        return DatasetLayout("official", gt, root / f"WIDER_{split}" / "images")
    raise InputError(f"no WIDERFace {split} annotations under {root}: expected {split}/label.txt (RetinaFace layout) "
                     f"or wider_face_split/wider_face_{split}_bbx_gt.txt (official layout)")


def read_any(root: Path, split: str, skip_missing: bool = False) -> RecordList:
    """Read ``split`` from a dataset root in whichever layout it has (see :func:`detect_layout`)."""
    layout = detect_layout(root, split)
    if layout.kind == "retinaface":
        return read_label_txt(layout.annotation, layout.images_root, skip_missing=skip_missing)
    return read_bbx_gt(layout.annotation, layout.images_root, skip_missing=skip_missing)
