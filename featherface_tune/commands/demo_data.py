"""`featherface-tune demo-data`: write a small SYNTHETIC WIDERFace-like dataset in both layouts."""

from __future__ import annotations

from pathlib import Path

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import JsonOpt, err, handle_errors, out, print_json


@handle_errors
def demo_data_cmd(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to write (must be new or empty unless --force).")],
    train: Annotated[int, typer.Option("--train", help="Number of synthetic training images.")] = 64,
    val: Annotated[int, typer.Option("--val", help="Number of synthetic validation images.")] = 32,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same files.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty folder, overwriting demo files.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Write a small SYNTHETIC face dataset (procedurally drawn faces, not WIDERFace).

    Both layouts: RetinaFace (train|val/label.txt + images/) and official (wider_face_split/*_bbx_gt.txt + WIDER_train|val/images/), plus ground_truth/wider_*_val.mat in the standard structure, so train, predict and evaluate run anywhere. Labelled synthetic throughout.
    """
    from featherface_tune.data.demo import write_demo

    with err.status("drawing synthetic faces..."):
        summary = write_demo(out_dir, train=train, val=val, seed=seed, force=force)
    if json_:
        print_json(summary.to_json())
        return
    out.print(f"SYNTHETIC demo data (not WIDERFace) written to {summary.root}", highlight=False)
    out.print(f"  train: {summary.train_images} images, {summary.train_faces} faces; "
              f"val: {summary.val_images} images, {summary.val_faces} faces (seed {summary.seed})", highlight=False)
    out.print(f"  RetinaFace layout: {summary.root / 'train' / 'label.txt'}, {summary.root / 'val' / 'label.txt'}", highlight=False)
    out.print(f"  official layout:   {summary.root / 'wider_face_split'}, {summary.root / 'WIDER_train'}", highlight=False)
    out.print(f"  val ground truth:  {summary.root / 'ground_truth'}", highlight=False)
    err.print(f"done in {summary.seconds:.1f} s; see {summary.root / 'README.txt'}", highlight=False)
