"""`featherface-tune detect`: faces in one image, as a table or JSON, optionally drawn on a copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import (
    ConfigOpt, DeviceOpt, JsonOpt, PresetOpt, SetOpt, ThreadsOpt, err, handle_errors, out, print_json,
)
from featherface_tune.commands._detection import (
    CheckpointOpt, ConfOpt, KeepOpt, NmsOpt, TopKOpt, check_thresholds,
)
from featherface_tune.errors import InputError

# RetinaFace's landmark colours (left eye, right eye, nose, left and right mouth corner), as RGB.
LANDMARK_COLOURS = ((255, 0, 0), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255))


def draw(image_bgr: Any, dets: Any, path: Path) -> None:
    """Save the image with boxes, scores and landmarks drawn (format from the file suffix)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image_bgr[:, :, ::-1].copy())
    d = ImageDraw.Draw(im)
    for i in range(len(dets)):
        x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
        d.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=2)
        d.text((x1, y1 + 2), f"{float(dets.scores[i]):.4f}", fill=(255, 255, 255))
        if dets.landmarks is not None:
            for (x, y), colour in zip(dets.landmarks[i].reshape(5, 2).tolist(), LANDMARK_COLOURS):
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot save {str(path)!r}: {exc}") from None


@handle_errors
def detect_cmd(
    image: Annotated[Path, typer.Argument(help="Image file (any format Pillow reads).")],
    checkpoint: CheckpointOpt,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    threshold: Annotated[float, typer.Option("--threshold", "-t", help="Show detections with score >= this.")] = 0.5,
    conf: ConfOpt = 0.02,
    nms_iou: NmsOpt = 0.4,
    top_k: TopKOpt = 5000,
    keep: KeepOpt = 750,
    save: Annotated[Optional[Path], typer.Option("--save", help="Write a copy of the image with the shown detections drawn.")] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Detect faces in one image: boxes (x1 y1 x2 y2, pixels), scores and five landmarks.

    RetinaFace convention: original size, BGR minus (104, 117, 123). Without --preset/--config the
    config is inferred from the checkpoint.
    """
    import time

    from rich.table import Table

    from featherface_tune.data.images import read_image_bgr
    from featherface_tune.inference.detector import detect
    from featherface_tune.inference.model import open_model, place_model
    from featherface_tune.inference.nms import backend_for

    check_thresholds(conf, nms_iou, top_k, keep)
    if not 0.0 <= threshold <= 1.0:  # NaN included
        raise InputError(f"--threshold {threshold}: must be a score in 0..1")
    if save is not None:
        from featherface_tune.atomic import check_replaceable

        if save.exists() and image.exists() and save.resolve() == image.resolve():
            raise InputError(f"--save {str(save)!r} is the input image; give another file name")
        check_replaceable(save, "--save")
    img = read_image_bgr(image)
    model, cfg, inferred = open_model(checkpoint, preset, config, set_, threads)
    dev = place_model(model, device, threads)
    t0 = time.perf_counter()
    dets = detect(model, img, conf=conf, nms_iou=nms_iou, top_k=top_k, keep=keep, nms_backend=backend_for(dev))
    seconds = time.perf_counter() - t0
    shown = dets.above(threshold)
    if save is not None:
        draw(img, shown, save)
    if json_:
        print_json({"image": str(image), "height": int(img.shape[0]), "width": int(img.shape[1]),
                    "threshold": threshold, "seconds": round(seconds, 4), "config_inferred": inferred,
                    "detections": shown.to_json()})
    else:
        t = Table(title=f"{image.name}: {len(shown)} face(s) with score >= {threshold}")
        for col in ("#", "x1", "y1", "x2", "y2", "score", "landmarks (x,y) x5"):
            t.add_column(col, justify="left" if col.startswith("landmarks") else "right")
        for i in range(len(shown)):
            b = shown.boxes[i]
            lm = ("" if shown.landmarks is None else
                  " ".join(f"({x:.0f},{y:.0f})" for x, y in shown.landmarks[i].reshape(5, 2).tolist()))
            t.add_row(str(i + 1), *(f"{v:.1f}" for v in b.tolist()), f"{float(shown.scores[i]):.4f}", lm)
        out.print(t)
        err.print(f"{len(dets)} detections above --conf {conf}, {len(shown)} shown; "
                  f"{seconds:.2f} s for {img.shape[1]}x{img.shape[0]}", highlight=False, soft_wrap=True)
    if save is not None and not json_:
        err.print(f"saved {save}", highlight=False, soft_wrap=True)
