"""`featherface-tune data check`: is a WIDERFace folder and the backbone ready for a reproduction?"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import JsonOpt, fail, handle_errors, out, print_json


@handle_errors
def data_check_cmd(
    data: Annotated[Path, typer.Argument(metavar="DIR", help="Dataset root in the RetinaFace layout (train|val/label.txt + images/) or the official one (wider_face_split/ + WIDER_train|val/images/).")],
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="MobileNetV1-0.25 ImageNet file to check, or none (default: weights/mobilenetV1X0.25_pretrain.tar, where train --recipe official looks).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Check a WIDERFace folder and the backbone file: each split's annotations in either layout,
    every listed image present, image counts against WIDERFace's (12,880 train, 3,226 val), the val
    ground truth (.mat files, read and cross-checked) and the backbone loading. Prints what is
    missing; exit 1 when anything is.
    """
    from rich.table import Table

    from featherface_tune.data.check import check_data
    from featherface_tune.training.recipe import DEFAULT_BACKBONE

    if backbone is None:
        backbone_path: Optional[Path] = DEFAULT_BACKBONE
    elif backbone.strip().lower() == "none":
        backbone_path = None
    else:
        backbone_path = Path(backbone)
    result = check_data(data, backbone_path)
    if json_:
        print_json(result.to_json())
    else:
        table = Table(title=f"WIDERFace data in {data}", title_justify="left")
        for name, justify in (("split", "left"), ("layout", "left"), ("images", "right"),
                              ("missing", "right"), ("WIDERFace", "right")):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for s in result.splits:
            table.add_row(s.split, s.layout, f"{s.listed:,}", f"{len(s.missing):,}" if s.error is None else "?",
                          f"{s.to_json()['widerface_images']:,}")
        out.print(table)
        gt = result.ground_truth
        out.print(f"val ground truth: {gt if gt else 'none'}"
                  + (f" ({result.ground_truth_images:,} images)" if result.ground_truth_error is None else ""),
                  highlight=False)
        out.print(f"backbone: {result.backbone if result.backbone else 'not checked'}"
                  + (" (loads)" if result.backbone and result.backbone_error is None else ""), highlight=False)
        for note in result.notes:
            out.print(f"note: {note}", highlight=False)
        for problem in result.problems:
            out.print(f"missing: {problem}", highlight=False)
        if result.backbone is not None and not result.backbone.is_file():
            out.print("note: --backbone names another backbone file (or none to skip it)", highlight=False)
        if result.ok:
            out.print("ready", highlight=False)
    if not result.ok:
        raise fail(f"{len(result.problems)} problem(s): {str(data)!r} is not ready ({result.problems[0]})", 1)
