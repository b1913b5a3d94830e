"""`featherface-tune evaluate`: WIDERFace easy/medium/hard AP, the same numbers as the standard evaluation."""

from __future__ import annotations

from pathlib import Path

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import JsonOpt, handle_errors, out, print_json, warn


@handle_errors
def evaluate_cmd(
    pred_dir: Annotated[Path, typer.Argument(metavar="PRED_DIR", help="Predictions: PRED_DIR/<event>/<image stem>.txt (name line, count line, 'x y w h score' lines).")],
    gt: Annotated[Path, typer.Option("--gt", "-g", help="Folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat.")],
    json_: JsonOpt = False,
) -> None:
    """Evaluate WIDERFace predictions: easy/medium/hard AP.

    Reproduces the standard Python WIDERFace evaluation exactly (score min-max normalisation, inclusive-pixel IoU >= 0.5, ignored faces, 1,000 thresholds, VOC AP), vectorised. Prediction files are sorted by score first; an image without a prediction file counts as no detections (with a warning).
    """
    from featherface_tune.evaluation.widerface import evaluate_dir

    result = evaluate_dir(pred_dir, gt)
    for w in result.warnings:
        warn(w)
    if json_:
        print_json(result.to_json())
        return
    from rich.table import Table

    t = Table(title=f"WIDERFace val AP ({result.images} images)")
    t.add_column("setting")
    t.add_column("AP", justify="right")
    t.add_column("faces", justify="right")
    for setting, value in result.ap.items():
        t.add_row(setting, f"{value:.4f}", f"{result.face_count[setting]:,}")
    out.print(t)
