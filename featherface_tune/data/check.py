"""`data check`: is a WIDERFace folder (either layout) and the backbone file ready for a reproduction?

Checked: each split's annotation file in each layout found (RetinaFace: DATA/{train,val}/label.txt;
official: DATA/wider_face_split/wider_face_{train,val}_bbx_gt.txt), every listed image present, the
image count against WIDERFace's; the val ground truth (the four .mat files, read and cross-checked,
and their images present); the MobileNetV1-0.25 backbone file loading into a FeatherFace backbone.
Problems make the check fail; a count below WIDERFace's is a note (subsets and demo data are fine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featherface_tune.errors import InputError, first_line

WIDERFACE_IMAGES = {"train": 12_880, "val": 3_226}  # WIDER FACE v1 (Yang et al., 2016)
LAYOUTS = {  # layout -> split -> (annotation, image root), relative to DATA
    "retinaface": {s: (Path(s) / "label.txt", Path(s) / "images") for s in ("train", "val")},
    "official": {s: (Path("wider_face_split") / f"wider_face_{s}_bbx_gt.txt", Path(f"WIDER_{s}") / "images")
                 for s in ("train", "val")},
}
GROUND_TRUTH_DIRS = (Path("ground_truth"), Path("val") / "ground_truth")  # where the proxy looks (load_val)


@dataclass(frozen=True)
class SplitCheck:
    layout: str
    split: str
    annotation: Path
    listed: int  # images the annotation lists
    missing: tuple[Path, ...]  # listed but not on disk
    error: str | None = None  # the annotation could not be read

    @property
    def ok(self) -> bool:
        return self.error is None and not self.missing and self.listed > 0

    def to_json(self) -> dict[str, Any]:
        return {"layout": self.layout, "split": self.split, "annotation": str(self.annotation),
                "listed": self.listed, "missing": len(self.missing),
                "missing_examples": [str(p) for p in self.missing[:5]],
                "widerface_images": WIDERFACE_IMAGES[self.split], "error": self.error, "ok": self.ok}


@dataclass(frozen=True)
class DataCheck:
    root: Path
    splits: tuple[SplitCheck, ...]
    ground_truth: Path | None  # the folder found, None when none
    ground_truth_error: str | None
    ground_truth_images: int  # val images the .mat files list
    ground_truth_missing: int  # of those, not found in any val image tree
    backbone: Path | None  # None: not checked (--backbone none)
    backbone_error: str | None
    problems: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"root": str(self.root), "ok": self.ok, "splits": [s.to_json() for s in self.splits],
                "ground_truth": {"folder": str(self.ground_truth) if self.ground_truth else None,
                                 "images": self.ground_truth_images, "missing": self.ground_truth_missing,
                                 "error": self.ground_truth_error},
                "backbone": {"file": str(self.backbone) if self.backbone else None, "error": self.backbone_error},
                "problems": list(self.problems), "notes": list(self.notes)}


def _check_split(root: Path, layout: str, split: str) -> SplitCheck | None:
    from featherface_tune.data.readers import read_bbx_gt, read_label_txt

    annotation, images = (root / p for p in LAYOUTS[layout][split])
    if not annotation.is_file():
        return None
    try:
        read = read_label_txt if layout == "retinaface" else read_bbx_gt
        records = read(annotation, images, skip_missing=True)
    except InputError as exc:
        return SplitCheck(layout, split, annotation, 0, (), first_line(exc, 200))
    return SplitCheck(layout, split, annotation, len(records) + records.skipped_count, records.skipped)


def _check_backbone(path: Path) -> str | None:
    """None when `path` loads into a FeatherFace backbone, else why not (one line)."""
    from featherface_tune.models.builder import build_model
    from featherface_tune.models.checkpoint import load_backbone_pretrained
    from featherface_tune.models.presets import get_preset

    if not path.is_file():
        return (f"{str(path)!r} is absent: put mobilenetV1X0.25_pretrain.tar (RetinaFace/FeatherFace releases) "
                "there, or name another file")
    try:
        load_backbone_pretrained(build_model(get_preset("retinaface-mnet025")), path)
    except Exception as exc:  # noqa: BLE001 - any load problem is the finding
        return first_line(exc, 200)
    return None


def check_data(root: Path, backbone: Path | None) -> DataCheck:
    """Check DATA and the backbone; never raises for what it finds (a missing DATA folder is an InputError)."""
    from featherface_tune.data.mat import read_ground_truth

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"DATA {str(root)!r} is not a folder")
    problems: list[str] = []
    notes: list[str] = []
    splits = tuple(c for layout in LAYOUTS for split in ("train", "val")
                   if (c := _check_split(root, layout, split)) is not None)
    for split in ("train", "val"):
        found = [c for c in splits if c.split == split]
        if not found:
            want = " or ".join(str(LAYOUTS[lay][split][0]) for lay in LAYOUTS)
            problems.append(f"{split}: no annotations ({want})")
        for c in found:
            where = f"{split} ({c.layout} layout, {c.annotation.relative_to(root)})"
            if c.error is not None:
                problems.append(f"{where}: {c.error}")
            elif c.missing:
                problems.append(f"{where}: {len(c.missing):,} of {c.listed:,} listed images missing, "
                                f"e.g. {c.missing[0]}")
            elif c.listed < WIDERFACE_IMAGES[split]:
                notes.append(f"{where}: {c.listed:,} images, not the full WIDERFace {split} set "
                             f"({WIDERFACE_IMAGES[split]:,})")
    gt_dir = next((root / d for d in GROUND_TRUTH_DIRS if (root / d).is_dir()), None)
    gt_error, gt_images, gt_missing = None, 0, 0
    if gt_dir is None:
        gt_error = (f"no val ground truth: expected wider_{{face,easy,medium,hard}}_val.mat in "
                    f"{root / GROUND_TRUTH_DIRS[0]} (from WIDERFace's eval_tools)")
    else:
        try:
            gt = read_ground_truth(gt_dir)
            val_roots = [root / LAYOUTS[lay]["val"][1] for lay in LAYOUTS]
            for event, names in zip(gt.faces.events, gt.faces.files):
                for name in names:
                    gt_images += 1
                    if not any((r / event / f"{name}.jpg").is_file() for r in val_roots):
                        gt_missing += 1
        except InputError as exc:
            gt_error = first_line(exc, 200)
        if gt_error is None and gt_missing:
            gt_error = f"{gt_missing:,} of {gt_images:,} val images the .mat files list are missing"
    if gt_error is not None:
        problems.append(f"ground truth: {gt_error}")
    backbone_error = _check_backbone(backbone) if backbone is not None else None
    if backbone_error is not None:
        problems.append(f"backbone: {backbone_error}")
    return DataCheck(root, splits, gt_dir, gt_error, gt_images, gt_missing, backbone, backbone_error,
                     tuple(problems), tuple(notes))
