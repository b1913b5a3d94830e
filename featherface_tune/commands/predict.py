"""`featherface-tune predict`: run a checkpoint over an image tree and write WIDERFace prediction files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import (
    ConfigOpt, DeviceOpt, JsonOpt, PresetOpt, SetOpt, ThreadsOpt, err, handle_errors, out, print_json, resolve,
)
from featherface_tune.errors import InputError

CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-m", help="State dict saved by featherface-tune, the official FeatherFace code or RetinaFace, or an ONNX file from `export` (runs in onnxruntime).")]
ConfOpt = Annotated[float, typer.Option("--conf", help="Confidence threshold (scores strictly above it are kept).")]
NmsOpt = Annotated[float, typer.Option("--nms", help="NMS IoU threshold (py_cpu_nms convention).")]
TopKOpt = Annotated[int, typer.Option("--top-k", help="Best-scoring boxes that go into NMS.")]
KeepOpt = Annotated[int, typer.Option("--keep", help="Boxes kept after NMS.")]
# predict follows test_widerface.py, which has no caps (its top-k 5000 / keep 750 are commented out)
UncappedTopKOpt = Annotated[Optional[int], typer.Option("--top-k", help="Best-scoring boxes that go into NMS (default: all, as test_widerface.py; 5000 in deployment).")]
UncappedKeepOpt = Annotated[Optional[int], typer.Option("--keep", help="Boxes kept after NMS (default: all, as test_widerface.py; 750 in deployment).")]


def model_from_options(checkpoint: Path, preset: Optional[str], config: Optional[Path],
                       sets: Optional[list[str]], threads: Optional[int] = None) -> tuple[Any, Any, bool]:
    """(model, config, inferred): the config comes from --preset/--config/--set when one of
    --preset/--config is given, else it is inferred from the checkpoint (then --set applies). An ONNX
    model's session opens with `threads` (--threads) at once."""
    from featherface_tune.deploy.runtime import is_onnx_file

    if is_onnx_file(checkpoint):  # an exported model runs in onnxruntime; its config is stored in it
        return _onnx_model(checkpoint, preset, config, sets, threads)
    from featherface_tune.models.checkpoint import check_finite, load_model, read_checkpoint

    ck = read_checkpoint(checkpoint)
    check_finite(ck)  # NaN weights detect nothing: say so instead of printing an empty result
    if preset is None and config is None:
        return load_model(ck, None, sets or [])
    return load_model(ck, resolve(preset, config, sets))


def _onnx_model(checkpoint: Path, preset: Optional[str], config: Optional[Path],
                sets: Optional[list[str]], threads: Optional[int]) -> tuple[Any, Any, bool]:
    from featherface_tune.deploy.runtime import OnnxModel

    if preset is not None or config is not None or sets:
        raise InputError(f"--checkpoint {str(checkpoint)!r} is an ONNX model: its config is stored in it, so "
                         "--preset/--config/--set do not apply")
    model = OnnxModel.load(checkpoint, threads)
    return model, model.config, False


def place_model(model: Any, device: str, threads: Optional[int]) -> Any:
    """Set torch's CPU threads and move the model to --device; returns the torch.device. An ONNX
    model runs on onnxruntime's CPU provider, with --threads intra-op threads when given."""
    from featherface_tune.training.device import resolve_device, set_threads

    if not hasattr(model, "to"):  # featherface_tune.deploy.runtime.OnnxModel
        if device not in ("auto", "cpu"):
            raise InputError(f"--device {device}: an ONNX model runs on onnxruntime's CPU provider; use cpu")
        if threads is not None:
            model.set_threads(threads)
        import torch

        return torch.device("cpu")

    dev = resolve_device(device)
    set_threads(threads)
    model.to(dev)
    return dev


def check_thresholds(conf: float, nms_iou: float, top_k: int | None, keep: int | None) -> None:
    if not 0.0 <= conf < 1.0:
        raise InputError(f"--conf {conf}: must be in [0, 1)")
    if not 0.0 < nms_iou <= 1.0:
        raise InputError(f"--nms {nms_iou}: must be in (0, 1]")
    if (top_k is not None and top_k < 1) or (keep is not None and keep < 1):
        raise InputError(f"--top-k {top_k} / --keep {keep}: must be positive")


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
    from featherface_tune.inference.nms import backend_for

    check_thresholds(conf, nms_iou, top_k, keep)
    files = find_images(images)
    model, cfg, inferred = model_from_options(checkpoint, preset, config, set_, threads)
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
