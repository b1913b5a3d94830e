"""`featherface-tune predict`: run a checkpoint over an image tree and write WIDERFace prediction files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import (
    ConfigOpt, DeviceOpt, JsonOpt, PresetOpt, SetOpt, ThreadsOpt, err, handle_errors, out, print_json,
)
from featherface_tune.commands._detection import (
    CheckpointOpt, ConfOpt, NmsOpt, UncappedKeepOpt, UncappedTopKOpt, check_thresholds,
)
from featherface_tune.errors import InputError


def check_prediction_out(out_dir: Path, overwrite: bool) -> None:
    """--out must not hold other predictions (evaluate would score stale files with the new ones):
    refused, or with --overwrite deleted before anything is written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {str(out_dir)!r} exists and is not a directory")
    stale = sorted(out_dir.rglob("*.txt")) if out_dir.is_dir() else []
    if stale and not overwrite:
        raise InputError(f"--out {str(out_dir)!r} already holds {len(stale)} prediction files; "
                         "pass --overwrite to delete them first, or choose an empty folder")
    for path in stale:
        path.unlink()


def find_images(root: Path) -> list[Path]:
    """Image files under root (any depth), sorted; WIDERFace has root/<event>/<image>.jpg."""
    from featherface_tune.inference.detector import IMAGE_SUFFIXES

    if not root.is_dir():
        raise InputError(f"--images {str(root)!r} is not a directory")
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {str(root)!r}")
    return found


def format_prediction(name: str, dets: Any, float_coords: bool = False) -> str:
    """The WIDERFace prediction file of one image, as RetinaFace's test_widerface.py writes it
    (evaluation.widerface.prediction_text of detection_rows: best first, coordinates truncated to
    integers unless float_coords)."""
    from featherface_tune.evaluation.widerface import detection_rows, prediction_text

    return prediction_text(name, detection_rows(dets.boxes, dets.scores, float_coords))


@handle_errors
def predict_cmd(
    checkpoint: CheckpointOpt,
    images: Annotated[Path, typer.Option("--images", "-i", help="Image tree: DIR/<event>/<image>.jpg (WIDER_val/images).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Prediction tree to write: OUT/<event>/<image stem>.txt.")],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    conf: ConfOpt = 0.02,
    nms_iou: NmsOpt = 0.4,
    top_k: UncappedTopKOpt = None,
    keep: UncappedKeepOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete the prediction files already in --out first (without it, an --out holding .txt files is refused).")] = False,
    float_coords: Annotated[bool, typer.Option("--float-coords", help="Write box coordinates with 2 decimals instead of RetinaFace's truncated integers.")] = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Detect faces in every image of a WIDERFace-style tree and write the standard prediction files.

    The official test protocol (test_widerface.py) by default: original image size, BGR minus
    (104, 117, 123), confidence 0.02, NMS IoU 0.4, every box that survives NMS (no top-k / keep cap). Without --preset/--config the config is
    inferred from the checkpoint (--set still applies, e.g. --set shuffle=none).
    """
    import torch
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    from featherface_tune.data.images import read_image_bgr
    from featherface_tune.evaluation.widerface import write_prediction_file
    from featherface_tune.inference.detector import detect
    from featherface_tune.inference.model import open_model, place_model
    from featherface_tune.inference.nms import backend_for

    check_thresholds(conf, nms_iou, top_k, keep)
    files = find_images(images)
    model, cfg, inferred = open_model(checkpoint, preset, config, set_, threads)
    dev = place_model(model, device, threads)
    if inferred and not json_:
        err.print(f"config inferred from the checkpoint: {cfg.to_dict()}", highlight=False, soft_wrap=True)
    cfg_json = cfg.to_dict() if cfg is not None else None
    check_prediction_out(out_dir, overwrite)
    total, t0 = 0, time.perf_counter()
    progress = Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[name]}", markup=False),
                        console=err, transient=True)
    with progress, torch.inference_mode():
        task = progress.add_task("predict", total=len(files), name="")
        for path in files:
            rel = path.relative_to(images)
            progress.update(task, name=str(rel))
            dets = detect(model, read_image_bgr(path), conf=conf, nms_iou=nms_iou, top_k=top_k, keep=keep,
                          nms_backend=backend_for(dev))
            target = out_dir / rel.parent / (path.stem + ".txt")
            try:
                write_prediction_file(target.parent, path.stem, format_prediction(path.stem, dets, float_coords))
            except OSError as exc:
                raise InputError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
            total += len(dets)
            progress.advance(task)
    seconds = time.perf_counter() - t0
    summary = {"images": len(files), "detections": total, "out": str(out_dir), "seconds": round(seconds, 3),
               "config_inferred": inferred, "config": cfg_json, "device": str(dev),
               "settings": {"conf": conf, "nms_iou": nms_iou, "top_k": top_k, "keep": keep}}
    if json_:
        print_json(summary)
    else:
        out.print(f"{len(files)} images, {total} detections -> {out_dir} ({seconds:.1f} s, "
                  f"{seconds / len(files):.3f} s/image)", highlight=False, soft_wrap=True)
