"""A small SYNTHETIC WIDERFace-like dataset, so the whole pipeline runs on a fresh machine and in tests.

Faces are drawn procedurally (ellipse head, two eyes, nose, mouth with two corners; the five landmarks
are the eye centres, nose tip and mouth corners, image-left first as in RetinaFace's labels) over a
cluttered background, at widths from 6 px to several hundred, some partly covered by occluders; some
images have no face at all. Nothing here is a real photograph, and every event name says so
("0--Synthetic_Crowd", ...).

Written in both layouts, with the val ground truth as standard ``.mat`` files::

    OUT/README.txt                                        says it is synthetic
    OUT/train/label.txt, OUT/train/images/<event>/<name>.jpg   RetinaFace layout (20 numbers a face)
    OUT/val/label.txt,   OUT/val/images/<event>/<name>.jpg     (val: x y w h only)
    OUT/wider_face_split/wider_face_{train,val}_bbx_gt.txt     official layout
    OUT/WIDER_{train,val}/images/<event>/<name>.jpg            (hard links to the same JPEGs where possible)
    OUT/ground_truth/wider_{face,easy,medium,hard}_val.mat     standard val ground truth

Easy/medium/hard keep-lists follow the rough size rule of the real files (which were made from
detection difficulty): face height >= 50 px easy, >= 30 medium, >= 10 hard; smaller faces stay in
``face_bbx_list`` but are kept by no setting (ignored by the evaluation). Output is deterministic
for a given seed, counts and Pillow version.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from featherface_tune.errors import InputError

EVENTS: Tuple[str, ...] = ("0--Synthetic_Crowd", "1--Synthetic_Group", "2--Synthetic_Portrait", "3--Synthetic_Occluded")
README = """SYNTHETIC DEMO DATA - NOT WIDERFace

Written by `featherface-tune demo-data` (seed {seed}). Every image here is procedurally drawn: ellipse
heads with eyes, nose and mouth over random clutter, some faces occluded, widths from 6 px to hundreds.
No real photographs, no people. Numbers measured on it (AP, loss) say nothing about real face detection;
it exists so the data loaders, training, prediction and the evaluator can run end to end anywhere.

Layouts (the same images and faces in both):
  train/label.txt, val/label.txt (+ images/)              RetinaFace layout
  wider_face_split/wider_face_{{train,val}}_bbx_gt.txt      official layout, with WIDER_{{train,val}}/images/
  ground_truth/wider_{{face,easy,medium,hard}}_val.mat       standard val ground truth
Easy/medium/hard: face height >= 50 / >= 30 / >= 10 px (a rough stand-in for WIDERFace's rule).

train: {train_images} images, {train_faces} faces; val: {val_images} images, {val_faces} faces.
"""

SKIN = np.array([(224, 172, 105), (241, 194, 125), (198, 134, 66), (141, 85, 36), (255, 219, 172), (110, 70, 40)], dtype=np.float64)
LANDMARK_MIN_WIDTH = 10  # narrower faces carry no landmarks (-1), as tiny faces in the real labels
EASY_H, MEDIUM_H, HARD_H = 50, 30, 10


@dataclass(frozen=True)
class SyntheticFace:
    box: Tuple[int, int, int, int]  # x y w h
    landmarks: Optional[Tuple[float, ...]]  # 10 values, or None
    landmark_occluded: Tuple[bool, ...]  # 5 flags
    occlusion: int  # 0 none, 1 partial, 2 heavy (WIDERFace attribute codes)
    blur: int


@dataclass(frozen=True)
class SyntheticImage:
    event: str
    name: str
    width: int
    height: int
    faces: Tuple[SyntheticFace, ...]

    @property
    def rel(self) -> str:
        return f"{self.event}/{self.name}.jpg"


@dataclass(frozen=True)
class DemoSummary:
    root: Path
    seed: int
    train_images: int
    train_faces: int
    val_images: int
    val_faces: int
    seconds: float

    def to_json(self) -> Dict[str, object]:
        return {"root": str(self.root), "synthetic": True, "seed": self.seed, "train_images": self.train_images,
                "train_faces": self.train_faces, "val_images": self.val_images, "val_faces": self.val_faces,
                "seconds": round(self.seconds, 3)}


def _color(rng: np.random.Generator) -> Tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _clutter(draw, rng: np.random.Generator, w: int, h: int, n: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(n):
        kind = int(rng.integers(0, 4))
        x0, y0 = float(rng.uniform(-0.1 * w, w)), float(rng.uniform(-0.1 * h, h))
        sw, sh = float(rng.uniform(4, 0.4 * w)), float(rng.uniform(4, 0.4 * h))
        col = _color(rng)
        if kind == 0:
            draw.rectangle([x0, y0, x0 + sw, y0 + sh], fill=col)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + sw, y0 + sh], fill=col)
        elif kind == 2:
            draw.line([x0, y0, x0 + sw, y0 + sh], fill=col, width=int(rng.integers(1, 6)))
        else:  # a skin-coloured blob without features: a hard negative
            tone = SKIN[int(rng.integers(0, len(SKIN)))] + rng.normal(0, 10, 3)
            s = float(rng.uniform(6, 0.2 * min(w, h)))
            draw.ellipse([x0, y0, x0 + s, y0 + 1.2 * s], fill=tuple(int(np.clip(v, 0, 255)) for v in tone))


def _face_sizes(rng: np.random.Generator, event: int, w: int, h: int) -> List[float]:
    short = min(w, h)
    if event == 0:  # crowd: many small faces
        n, lo, hi = int(rng.integers(8, 22)), 6.0, 32.0
    elif event == 1:  # group
        n, lo, hi = int(rng.integers(2, 7)), 16.0, 110.0
    elif event == 2:  # portrait: one or two big faces
        n, lo, hi = int(rng.integers(1, 3)), 80.0, 0.7 * short
    else:  # occluded
        n, lo, hi = int(rng.integers(2, 6)), 12.0, 160.0
    hi = max(lo + 1, min(hi, 0.7 * short))
    return [float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) for _ in range(n)]


def _overlaps(box: Tuple[float, float, float, float], placed: Sequence[Tuple[int, int, int, int]]) -> bool:
    x, y, bw, bh = box
    for px, py, pw, ph in placed:
        iw = min(x + bw, px + pw) - max(x, px)
        ih = min(y + bh, py + ph) - max(y, py)
        if iw > 0 and ih > 0 and iw * ih > 0.05 * min(bw * bh, pw * ph):
            return True
    return False


def _draw_face(draw, rng: np.random.Generator, x: float, y: float, fw: float, fh: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Draw one face filling the box; return its five landmarks [5, 2]."""
    tone = SKIN[int(rng.integers(0, len(SKIN)))] + rng.normal(0, 12, 3)
    skin = tuple(int(np.clip(v, 0, 255)) for v in tone)
    dark = tuple(int(np.clip(v * 0.35, 0, 255)) for v in tone)
    # hair: a cap over the top of the head, drawn first
    hair = _color(rng) if rng.random() < 0.2 else tuple(int(v) for v in rng.integers(10, 90, 3))
    draw.ellipse([x - 0.04 * fw, y - 0.08 * fh, x + 1.04 * fw, y + 0.55 * fh], fill=hair)
    draw.ellipse([x, y, x + fw, y + fh], fill=skin)
    yaw = float(rng.uniform(-0.12, 0.12))
    cx = x + fw * (0.5 + yaw)
    jitter = rng.normal(0, 0.015, (5, 2)) * [fw, fh]
    pts = np.array([
        [cx - 0.19 * fw, y + 0.42 * fh],  # left eye (image left)
        [cx + 0.19 * fw, y + 0.42 * fh],  # right eye
        [cx + 0.5 * yaw * fw, y + 0.60 * fh],  # nose tip
        [cx - 0.15 * fw, y + 0.78 * fh],  # left mouth corner
        [cx + 0.15 * fw, y + 0.78 * fh],  # right mouth corner
    ]) + jitter
    er = max(0.6, 0.065 * fw)
    for ex, ey in pts[:2]:
        draw.ellipse([ex - 1.6 * er, ey - er, ex + 1.6 * er, ey + er], fill=(245, 245, 245))
        draw.ellipse([ex - er, ey - er, ex + er, ey + er], fill=dark)
    nx, ny = pts[2]
    draw.polygon([(nx, ny), (nx - 0.07 * fw, ny + 0.02 * fh), (cx + 0.3 * yaw * fw, y + 0.47 * fh)], fill=dark)
    lw = max(1, int(round(0.04 * fw)))
    mid = ((pts[3] + pts[4]) / 2) + [0, 0.04 * fh * float(rng.uniform(-1, 1))]
    draw.line([tuple(pts[3]), tuple(mid), tuple(pts[4])], fill=(150, 40, 40), width=lw)
    return pts


def draw_image(seed: int, split: str, index: int) -> Tuple["object", SyntheticImage]:
    """Draw one synthetic image (PIL Image) and its annotation, deterministic in (seed, split, index)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    event_idx = index % len(EVENTS)
    event = EVENTS[event_idx]
    name = f"{event.split('--')[0]}_{event.split('--')[1]}_synthetic_{split}_{index}"
    if event_idx == 2:
        w, h = int(rng.integers(448, 641)), int(rng.integers(448, 641))
    else:
        w, h = int(rng.integers(320, 641)), int(rng.integers(240, 481))
    base = np.array(_color(rng), dtype=np.float64)
    grad = np.linspace(0, 1, h)[:, None, None] * rng.normal(0, 40, 3)
    bg = np.clip(base + grad + np.zeros((h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(img)
    _clutter(draw, rng, w, h, int(rng.integers(6, 20)))

    empty = index % 16 == 15  # some images have no face at all
    faces: List[SyntheticFace] = []
    placed: List[Tuple[int, int, int, int]] = []
    for fw in ([] if empty else _face_sizes(rng, event_idx, w, h)):
        fh = fw * float(rng.uniform(1.12, 1.3))
        for _ in range(20):
            x, y = float(rng.uniform(0, w - fw - 1)), float(rng.uniform(0, h - fh - 1))
            if not _overlaps((x, y, fw, fh), placed):
                break
        else:
            continue
        pts = _draw_face(draw, rng, x, y, fw, fh)
        box = (int(round(x)), int(round(y)), max(1, int(round(fw))), max(1, int(round(fh))))
        placed.append(box)
        occluded = np.zeros(5, dtype=bool)
        occlusion = 0
        if rng.random() < (0.6 if event_idx == 3 else 0.12):
            frac = float(rng.uniform(0.2, 0.6))
            side = int(rng.integers(0, 3))
            col = _color(rng)
            if side == 0:  # from the left
                x1 = x + frac * fw
                draw.rectangle([x - 0.1 * fw, y - 0.1 * fh, x1, y + 1.1 * fh], fill=col)
                occluded = pts[:, 0] < x1
            elif side == 1:  # from the right
                x0 = x + (1 - frac) * fw
                draw.rectangle([x0, y - 0.1 * fh, x + 1.1 * fw, y + 1.1 * fh], fill=col)
                occluded = pts[:, 0] > x0
            else:  # from below (a hand, a scarf)
                y0 = y + (1 - frac) * fh
                draw.ellipse([x - 0.1 * fw, y0, x + 1.1 * fw, y + fh + frac * fh], fill=col)
                occluded = pts[:, 1] > y0
            occlusion = 1 if frac < 0.35 else 2
        landmarks = None if box[2] < LANDMARK_MIN_WIDTH else tuple(round(float(v), 3) for v in pts.reshape(-1))
        blur = 2 if fw < 12 else (1 if fw < 30 else 0)
        faces.append(SyntheticFace(box, landmarks, tuple(bool(o) for o in occluded), occlusion, blur))
    # light sensor noise, cheap and deterministic
    arr = np.asarray(img, dtype=np.int16)
    arr = np.clip(arr + rng.integers(-6, 7, arr.shape[:2])[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB"), SyntheticImage(event, name, w, h, tuple(faces))


def _label_line_train(f: SyntheticFace) -> str:
    x, y, w, h = f.box
    if f.landmarks is None:
        return f"{x} {y} {w} {h} " + " ".join(["-1.0"] * 16)
    parts = [f"{x} {y} {w} {h}"]
    for k in range(5):
        parts.append(f"{f.landmarks[2 * k]:.3f} {f.landmarks[2 * k + 1]:.3f} {1.0 if f.landmark_occluded[k] else 0.0:.1f}")
    parts.append("0.9" if f.occlusion == 0 else "0.5")
    return " ".join(parts)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _keep(faces: Sequence[SyntheticFace], min_h: int) -> np.ndarray:
    return np.array([k + 1 for k, f in enumerate(faces) if f.box[3] >= min_h], dtype=np.int64)


MAX_DEMO_IMAGES = 100_000
DEMO_BYTES_PER_IMAGE = 200_000  # a generous bound: JPEG (~30-80 kB) in both layouts, labels, .mat


def _check_free_space(out: Path, images: int) -> None:
    """Refuse to start when the disk under `out` cannot hold the images (rather than fill it)."""
    import shutil

    probe = Path(out).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    need = images * DEMO_BYTES_PER_IMAGE
    if need > free:
        raise InputError(f"{images:,} synthetic images need about {need / 1e9:,.1f} GB; only "
                         f"{free / 1e9:,.1f} GB are free under {str(probe)!r}")


def write_demo(out_dir: Path, train: int = 64, val: int = 32, seed: int = 0, force: bool = False) -> DemoSummary:
    """Write the synthetic dataset under ``out_dir`` (see the module docstring)."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    from featherface_tune.bounds import check_seed

    for split, n in (("train", train), ("val", val)):
        if n < 1:
            raise InputError(field=split, value=n, rule="must be at least 1")
        if n > MAX_DEMO_IMAGES:
            raise InputError(field=split, value=n, rule=f"at most {MAX_DEMO_IMAGES:,} synthetic images per split "
                                                        "(a demo set; use real WIDERFace for more)")
    check_seed(seed)
    _check_free_space(out, train + val)
    if out.exists() and not out.is_dir():
        raise InputError(field="out_dir", value=out, rule="exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(field="out_dir", value=out, refs=("force",),
                         rule="is not empty; choose a new folder or pass {force} to overwrite the demo files in it")
    split_images: Dict[str, List[SyntheticImage]] = {}
    for split, n in (("train", train), ("val", val)):
        images: List[SyntheticImage] = []
        for index in range(n):
            img, meta = draw_image(seed, split, index)
            path = out / split / "images" / meta.rel
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, format="JPEG", quality=90)  # type: ignore[attr-defined]
            _link_or_copy(path, out / f"WIDER_{split}" / "images" / meta.rel)
            images.append(meta)
        images.sort(key=lambda m: (EVENTS.index(m.event), int(m.name.rsplit("_", 1)[1])))
        split_images[split] = images

        label: List[str] = []
        bbx: List[str] = []
        for m in images:
            label.append(f"# {m.rel}")
            for f in m.faces:
                label.append(_label_line_train(f) if split == "train" else " ".join(str(v) for v in f.box))
            bbx.append(m.rel)
            bbx.append(str(len(m.faces)))
            if not m.faces:
                bbx.append("0 0 0 0 0 0 0 0 0 0 ")
            for f in m.faces:
                bbx.append(" ".join(str(v) for v in f.box) + f" {f.blur} 0 0 0 {f.occlusion} 0 ")
        (out / split / "label.txt").write_text("\n".join(label) + "\n", encoding="utf-8")
        (out / "wider_face_split").mkdir(parents=True, exist_ok=True)
        (out / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").write_text("\n".join(bbx) + "\n", encoding="utf-8")

    from featherface_tune.data.mat import write_ground_truth

    val_imgs = split_images["val"]
    events = [e for e in EVENTS if any(m.event == e for m in val_imgs)]
    per_event = [[m for m in val_imgs if m.event == e] for e in events]
    write_ground_truth(
        out / "ground_truth",
        events=events,
        files=[[m.name for m in ev] for ev in per_event],
        boxes=[[np.array([f.box for f in m.faces], dtype=np.int32).reshape(-1, 4) for m in ev] for ev in per_event],
        keep={
            "easy": [[_keep(m.faces, EASY_H) for m in ev] for ev in per_event],
            "medium": [[_keep(m.faces, MEDIUM_H) for m in ev] for ev in per_event],
            "hard": [[_keep(m.faces, HARD_H) for m in ev] for ev in per_event],
        },
        attributes={
            # plain int lists: write_face_mat turns each into the uint8 array the real files hold
            "blur": [[[f.blur for f in m.faces] for m in ev] for ev in per_event],  # type: ignore[misc]
            "occlusion": [[[f.occlusion for f in m.faces] for m in ev] for ev in per_event],  # type: ignore[misc]
        },
    )
    summary = DemoSummary(
        root=out, seed=seed,
        train_images=len(split_images["train"]), train_faces=sum(len(m.faces) for m in split_images["train"]),
        val_images=len(val_imgs), val_faces=sum(len(m.faces) for m in val_imgs),
        seconds=time.perf_counter() - t0,
    )
    (out / "README.txt").write_text(README.format(seed=seed, train_images=summary.train_images, train_faces=summary.train_faces,
                                                  val_images=summary.val_images, val_faces=summary.val_faces), encoding="utf-8")
    return summary
