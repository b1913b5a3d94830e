"""`featherface-tune train`: RetinaFace-style training of a config on WIDERFace-layout data."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import (
    ConfigOpt, DeviceOpt, JsonOpt, PresetOpt, SetOpt, ThreadsOpt, err, fail, handle_errors, out, print_json, resolve,
)

# The fixed sets of values typer checks (and --help lists). Spelled out because the CLI must not
# import the training modules at start-up; tests/commands/test_choices.py holds them equal to
# training.recipe.RECIPES, training.spec.OPTIMIZERS and training.device.AMP_MODES.
RecipeName = Literal["official", "short"]
OptimizerName = Literal["adamw", "sgd"]
AmpMode = Literal["auto", "off", "bf16", "fp16"]


@handle_errors
def train_cmd(
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset root: DATA/train/label.txt + DATA/train/images (RetinaFace layout) or DATA/wider_face_split + DATA/WIDER_train (official layout).")],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    recipe: Annotated[RecipeName, typer.Option("--recipe", help="official: FeatherFace's train.py (OneCycleLR per batch, AdamW decay on every tensor, batch 32, 350 epochs, pretrained backbone, fp32, OpenCV); short: the proxy's (warm-up + cosine, batch 8, 10 epochs).")] = "official",
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs to train (default: the recipe's; with --resume the run's, or more to extend it).")] = None,
    image_size: Annotated[int, typer.Option("--image-size", help="Square training size in pixels (multiple of 32).")] = 640,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Images per step (default: the recipe's).")] = None,
    subset: Annotated[float, typer.Option("--subset", help="Fraction of training images (0-1], or above 1 a number of images; stratified by event, seeded.")] = 1.0,
    time_budget: Annotated[Optional[float], typer.Option("--time-budget", help="Stop cleanly after this many seconds of training (a checkpoint is written).")] = None,
    optimizer: Annotated[OptimizerName, typer.Option("--optimizer", help="adamw or sgd (momentum 0.9).")] = "adamw",
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (default 1e-3): OneCycle's max_lr (official) or the top of warm-up + cosine (short).")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="Default: 1e-2 for AdamW, 5e-4 for SGD.")] = None,
    warmup: Annotated[float, typer.Option("--warmup", help="Warm-up length in epochs (at most half the run; short recipe).")] = 1.0,
    pretrained: Annotated[Optional[str], typer.Option("--pretrained", help="MobileNetV1-0.25 ImageNet checkpoint for the backbone, or none (default: weights/mobilenetV1X0.25_pretrain.tar for the official recipe, none for short).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for last.pt (resumable, every epoch) and model.pt (weights + config, for predict); default: a new runs/train-<n>, named on stderr.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt (same config and options; a larger --epochs extends the run).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run already in --out (without it, an --out holding last.pt or model.pt is refused).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of weights, data order, augmentation and --subset.")] = 0,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader worker processes (0: load in the main process; default 0 on CPU, up to 4 with pinned memory on CUDA).")] = None,
    cache_images: Annotated[bool, typer.Option("--cache-images", help="Keep decoded images in memory (small data sets).")] = False,
    bn_recalibrate: Annotated[int, typer.Option("--bn-recalibrate", help="Before writing model.pt, recompute BatchNorm statistics over N fresh augmented batches (helps short runs; 0: off).")] = 0,
    skip_missing: Annotated[bool, typer.Option("--skip-missing", help="Skip (and count) images listed but missing on disk.")] = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    amp: Annotated[Optional[AmpMode], typer.Option("--amp", help="Mixed precision: auto (bf16 on CUDA when supported, else fp16; off on CPU/MPS), off, bf16 or fp16 (default: the recipe's: off for official, auto for short).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Train a FeatherFace config RetinaFace-style: random square crop, photometric distortion,
    mirror, resize; priors matched at IoU 0.35; MultiBox loss (smooth L1 boxes x2, cross-entropy
    with 7:1 hard negatives, smooth L1 landmarks). --recipe official (the default) trains as the
    official code does (docs/proxy.md has the table). Progress on stderr; with --json a summary on
    stdout. A NaN loss stops the run with an error (exit 1).
    """
    from featherface_tune.data.readers import read_any
    from featherface_tune.errors import InputError
    from featherface_tune.training.loop import (
        TrainOptions, checkpoint_epochs, fresh_run_dir, prepare_out_dir,
    )
    from featherface_tune.training.device import describe, resolve_amp, resolve_device, set_threads
    from featherface_tune.training.recipe import get_recipe, resolve_backbone

    from featherface_tune.training.distributed import launched_world

    cfg = resolve(preset, config, set_)
    chosen = get_recipe(recipe)
    world = launched_world()  # several processes under torchrun: rank 0 writes and reports
    if world.distributed and out_dir is None:
        raise InputError(f"--out is needed with {world.size} processes (torchrun): one folder they all resume from")
    if overwrite and out_dir is None:
        raise InputError("--overwrite needs --out")
    if epochs is None and resume and out_dir is not None:
        epochs = checkpoint_epochs(out_dir)
    amp_mode: str = amp if amp is not None else chosen.amp
    options = TrainOptions(epochs=epochs if epochs is not None else chosen.epochs, image_size=image_size,
                           batch_size=batch_size if batch_size is not None else chosen.batch_size,
                           subset=subset, time_budget=time_budget, optimizer=optimizer, lr=lr,
                           weight_decay=weight_decay, warmup_epochs=warmup,
                           out_dir=out_dir, resume=resume,
                           seed=seed, num_workers=workers, cache_images=cache_images,
                           bn_recalibrate=bn_recalibrate, progress=True, device=device, amp=amp_mode,
                           recipe=chosen.name)
    options.validate()
    dev = resolve_device(device)
    options = replace(options, pretrained=resolve_backbone(chosen, pretrained))
    n_threads = set_threads(threads)
    if not json_ and world.writes:
        err.print(f"training on {describe(dev, n_threads, resolve_amp(amp_mode, dev))}, recipe {chosen.name}",
                  highlight=False)
    from featherface_tune.data.readers import MissingImage

    try:
        records = read_any(data, "train", skip_missing=skip_missing)
    except MissingImage as exc:
        raise InputError(f"{exc}; pass --skip-missing to skip such images") from None
    skipped = getattr(records, "skipped_count", 0)
    if skipped:
        err.print(f"skipped {skipped} images listed but missing on disk", highlight=False)
    fresh = out_dir is None
    if out_dir is None:  # never train and throw the model away
        out_dir = fresh_run_dir()
        options = replace(options, out_dir=out_dir)
        err.print(f"writing the run to {out_dir} (--out names the folder)", highlight=False)
    if world.writes:
        prepare_out_dir(out_dir, resume, overwrite)  # before any training: never train, then fail to save
    try:
        result = _train(cfg, records, options, out_dir)
    except BaseException:
        if fresh and not any(out_dir.iterdir()):  # a run that failed before its first checkpoint leaves no litter
            out_dir.rmdir()
            with contextlib.suppress(OSError):  # nor an empty runs/ (rmdir refuses a folder with other runs)
                out_dir.parent.rmdir()
        raise
    summary = result.to_json()
    summary["model"] = str(out_dir / "model.pt")
    summary["config"] = cfg.to_dict()
    summary["device"] = str(dev)
    summary["recipe"] = chosen.name
    summary["epochs"] = options.epochs
    summary["batch_size"] = options.batch_size
    summary["pretrained"] = str(options.pretrained) if options.pretrained is not None else None
    summary["threads"] = n_threads
    if not world.writes:
        return
    if json_:
        print_json(summary)
        return
    h = result.history
    first_loss = h[0].loss if h else float("nan")
    last_loss = h[-1].loss if h else float("nan")
    out.print(f"trained {result.epochs_completed}/{options.epochs} epochs ({result.global_step} steps, "
              f"{result.train_images} images, {result.seconds:.1f} s, stopped: {result.stopped}); "
              f"mean loss first epoch {first_loss:.4f}, last {last_loss:.4f}", highlight=False)
    out.print(f"checkpoint {out_dir / 'last.pt'}, model {out_dir / 'model.pt'}", highlight=False)


def _train(cfg: Any, records: Any, options: Any, out_dir: Path) -> Any:
    """train(), with Ctrl-C or SIGTERM as a one-line exit that says whether --resume can continue."""
    from featherface_tune.training.loop import train

    try:
        return train(cfg, records, options)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the last checkpoint stays for --resume
        from featherface_tune.errors import interrupt_exit_code

        code = interrupt_exit_code(exc)
        what = "terminated" if code == 143 else "interrupted"
        last = out_dir / "last.pt"
        kept = (f"; checkpoint {str(last)!r} kept: rerun with --resume to continue"
                if last.is_file() else "; no checkpoint was written yet")
        raise fail(what + kept, code) from None
