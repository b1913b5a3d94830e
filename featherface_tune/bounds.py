"""Bounds on numbers where they enter the tool, so an absurd value gets a one-line error naming the
rule instead of reaching numpy, torch or the allocator. One place for every such limit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from featherface_tune.errors import InputError, shown_int

SEED_MAX = 2**32 - 1  # numpy's and Optuna's samplers take seeds in 0..2**32-1
MAX_PARAMS = 10**12  # parameter targets and tolerances: a trillion is beyond any face detector
MAX_BUILD_SIDE = 4096  # models are built and run (--check, gate --verify, train) at most 4096 px a side
MAX_BUILD_PARAMS = 500_000_000  # 2 GB of float32 weights: a thousand times FeatherFace


# Each check raises InputError(field=name, value=..., rule=...): `name` is the argument's Python
# name (the command layer shows its flag, `commands._common.flag_message`).

def check_seed(seed: object, name: str = "seed") -> None:
    """Seeds feed numpy's and Optuna's generators, which take integers in 0..2**32-1 (None: no seed)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        raise InputError(field=name, value=seed, rule=f"must be an integer in 0..{SEED_MAX} (2**32-1)")


def check_count(value: int, name: str, limit: int = MAX_PARAMS) -> None:
    """A parameter count given by the user: positive and at most `limit`."""
    if not 1 <= value <= limit:
        raise InputError(field=name, value=value, rule=f"must be a positive parameter count, at most {limit:,}")


def check_finite(value: float, name: str, minimum: float = 0.0) -> None:
    """A float argument that must be finite and at least `minimum`."""
    if not (math.isfinite(value) and value >= minimum):
        raise InputError(field=name, value=value, rule=f"must be a finite number >= {minimum:g}")


# Memory of a model run, estimated before allocating (as the proof estimates its tables): a forward
# of the official FeatherFace with the cross-check's tracing peaks at ~520 MB at 512x512 and ~1.08 GB
# at 1024x1024 (maxrss, this machine): ~330 MB of interpreter and weights plus ~720 bytes a pixel;
# `train` on batches of 8 peaks at 1.12 GB at 320 px and 3.04 GB at 640 px: ~480 MB plus ~780 bytes
# a pixel of each image. Other configs scale by their MACs relative to the official's (activations
# grow with width, MACs faster: an overestimate for wide configs, never a crash).
RUN_BASE_BYTES = 330_000_000
RUN_BYTES_PER_PIXEL = 720
TRAIN_BASE_BYTES = 480_000_000
TRAIN_BYTES_PER_PIXEL = 780
MAX_RUN_BYTES = 8 * 2**30  # the most a run may take; less on a machine with under 16 GiB (half of it)


def run_memory_limit() -> int:
    import os

    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return MAX_RUN_BYTES
    return min(MAX_RUN_BYTES, physical // 2)


def estimate_run_bytes(cfg: object, height: int, width: int, batch: int = 1, training: bool = False) -> int:
    """Bytes a forward (training: forward and backward) of `cfg` on `batch` HxW images takes, roughly."""
    from featherface_tune.counter.analytic import count
    from featherface_tune.models.config import FeatherFaceConfig

    scale = 1.0
    if isinstance(cfg, FeatherFaceConfig):
        scale = max(0.25, count(cfg, 64, 64).macs / count(FeatherFaceConfig(), 64, 64).macs)
    base, per_pixel = (TRAIN_BASE_BYTES, TRAIN_BYTES_PER_PIXEL) if training else (RUN_BASE_BYTES, RUN_BYTES_PER_PIXEL)
    return int(base + per_pixel * height * width * scale * batch)


def check_build_size(height: int, width: int, what: str = "", cfg: object = None, batch: int = 1,
                     training: bool = False, because: str = "", refs: Sequence[str] = (), field: str | None = None,
                     value: object = None) -> None:
    """A model built and run on an HxW input must fit in memory: at most MAX_BUILD_SIDE a side and,
    with `cfg`, an estimated peak (`estimate_run_bytes`) within `run_memory_limit()`. The error
    carries `field`, the argument the size came from, with the `value` given for it (and `because`
    says why a model is built, e.g. "with {objective} latency", naming the arguments in `refs`);
    without a field, `what` describes where the size comes from (e.g. "input size of the cross-check")."""
    rule = ""
    if height > MAX_BUILD_SIDE or width > MAX_BUILD_SIDE:
        rule = (f"{height}x{width} is beyond the {MAX_BUILD_SIDE}x{MAX_BUILD_SIDE} input the tool builds and runs "
                "a model on in memory (the analytic count alone has no limit)")
    elif cfg is not None:
        need, limit = estimate_run_bytes(cfg, height, width, batch, training), run_memory_limit()
        if need > limit:
            run = f"batches of {batch} at " if batch > 1 else ""
            rule = (f"{'training' if training else 'running'} this model on {run}{height}x{width} needs about "
                    f"{need / 1e9:,.1f} GB (estimated), more than the {limit / 1e9:,.1f} GB allowed on this "
                    "machine; use a smaller size" + (" or batch" if training else ""))
    if not rule:
        return
    if because:
        rule = f"{because}: {rule}"
    if field is not None:
        raise InputError(field=field, value=value, rule=rule, refs=refs)
    raise InputError(f"{what}: {rule}")


def check_build_params(params: int) -> None:
    """A model is built only when its weights fit in memory (the analytic count has no limit)."""
    if params > MAX_BUILD_PARAMS:
        raise InputError(f"the model has {params:,} parameters ({params * 4 / 1e9:,.1f} GB of float32 weights), "
                         f"beyond the {MAX_BUILD_PARAMS:,} the tool builds in memory; count it without building")


# ---- integers from anywhere (options, config and budget files, checkpoint/ONNX metadata, plans) ----

MAX_WIDTH = 16_384  # channels of any config width: 16x MobileNetV1's widest stage; counts stay in int64
MAX_REPEATS = 64  # bifpn_repeats: FeatherFace uses 3; each repeat is a whole BiFPN layer
MAX_ANCHORS = 64  # anchors_per_cell: RetinaFace uses 2; the heads grow linearly with it
MAX_INPUT_SIDE = 65_536  # --input-size of the analytic count (no model is built)
MAX_TRIALS = 1_000_000  # --trials: a study of a million trials is far past any useful search
MAX_TOP = 1_000  # --top: optima enqueued (and evaluated) by a solved search, rows of a report
MAX_EPOCHS = 100_000  # --epochs, --reference-epochs: years of training on this machine
MAX_SEEDS = 1_000  # calibrate --seeds: runs per config
MAX_BATCH = 4_096  # --batch-size before the memory estimate (training.loop) is even asked
MAX_THREADS = 1024  # --threads: beyond any machine this runs on; torch would try to start them all
MAX_WORKERS = 256  # --workers: data-loader processes; each is a Python process with its own memory
MAX_PREDICTION_BOXES = 20_000  # boxes in one prediction file: the official protocol (no cap) kept 6,248 on a crowded synthetic image
MAX_PREDICTION_BYTES = 8 * 2**20  # one prediction file: 20,000 boxes take about 1 MB
# a config field's limit; widths not named here take MAX_WIDTH
FIELD_LIMITS = {"bifpn_repeats": MAX_REPEATS, "anchors_per_cell": MAX_ANCHORS}


# The proof enumerates every structure of a search space (1-2 s for the default space's 13,560, whose
# structure knobs multiply out to 21,696 before context rules drop the inapplicable ones) and sorts the
# SSH-level sums of each (29^3 = 24,389 for the default space). neck_channels 1..4096 (786,432) or SSH
# 4..1024 on every level (16.8 million) never finished; ten times the default space still does.
MAX_SPACE_STRUCTURES = 250_000  # product of the structure knobs' value counts (an upper bound)
MAX_SSH_COMBINATIONS = 4_000_000  # product of the three SSH levels' value counts


def check_space_size(sizes: dict[str, int], structure_knobs: tuple[str, ...], ssh_knobs: tuple[str, ...]) -> None:
    """A search space whose proof finishes: InputError naming the largest knobs otherwise, estimated
    from the value counts before anything is enumerated (`sizes`: knob -> number of values)."""
    structures = math.prod(sizes.get(k, 1) for k in structure_knobs)
    ssh = math.prod(sizes.get(k, 1) for k in ssh_knobs)
    for total, limit, knobs, what in ((structures, MAX_SPACE_STRUCTURES, structure_knobs, "structures"),
                                      (ssh, MAX_SSH_COMBINATIONS, ssh_knobs, "SSH width combinations")):
        if total > limit:
            widest = sorted(knobs, key=lambda k: -sizes.get(k, 1))[:2]
            named = ", ".join(f"{k} ({sizes.get(k, 1):,} values)" for k in widest)
            raise InputError(f"space: {total:,} {what}, beyond the {limit:,} the proof enumerates in reasonable "
                             f"time on this machine; narrow {named} or take a larger step")


def check_regular_file(path: Path, what: str, max_bytes: int) -> None:
    """`path` (links followed) is a regular file of at most `max_bytes`: a FIFO would block a reader
    for ever, a link to /dev/zero would feed it gigabytes. InputError naming `what` otherwise."""
    import os
    import stat

    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {str(path)!r} is not a regular file (a FIFO, device or socket); refusing to read it")
    if st.st_size > max_bytes:
        raise InputError(f"{what} {str(path)!r} holds {st.st_size:,} bytes, more than the {max_bytes:,} "
                         "such a file can hold; is it the right file?")


def check_int(value: object, name: str, minimum: int, maximum: int, what: str = "") -> int:
    """`value` as an int in minimum..maximum, else InputError naming the argument `name` (its Python
    name, e.g. "trials") and the rule; a bool, a float or a string is refused (the API is typed; the
    CLI parses its text first). `what` explains the bound."""
    if isinstance(value, bool) or not isinstance(value, int):
        rule = f"must be an integer in {minimum:,}..{maximum:,}, not {type(value).__name__}"
    elif not minimum <= value <= maximum:
        rule = (f"must be at least {minimum:,}" if value < minimum else f"must be at most {maximum:,}") \
            + (f" ({what})" if what else "")
    else:
        return value
    # field, value and rule (`trials=0: ...`; the command layer names its flag)
    raise InputError(field=name, value=value, rule=rule)


def check_config_numbers(values: dict[str, object]) -> None:
    """Every integer of a config (`FeatherFaceConfig` fields, SSH levels included) within its limit
    before any arithmetic: an integer too big for a float or a C long used to raise OverflowError deep
    in the counter or the solver, from --set, --config, budgets, --reference, checkpoint or ONNX
    metadata and plan files alike. Raises ConfigError naming the field."""
    from featherface_tune.errors import ConfigError

    for name, v in values.items():
        items = list(enumerate(v)) if isinstance(v, (list, tuple)) else [(None, v)]
        for i, x in items:
            if isinstance(x, bool) or not isinstance(x, int):
                continue
            limit = FIELD_LIMITS.get(name, MAX_WIDTH)
            if name == "backbone_width":
                limit = 1_000  # beyond MAX_BACKBONE_WIDTH anyway; refused here before float() overflows
            if abs(x) > limit:
                label = name if i is None else f"{name}[{i}]"
                raise ConfigError(f"{label}={shown_int(x)} must be at most {limit:,} (the tool's bound on a "
                                  f"config {'width' if limit == MAX_WIDTH else 'value'})", field=name)


def check_input_side(height: object, width: object, name: str = "input_size") -> tuple[int, int]:
    """An input size (H, W) for the analytic count: positive integers up to MAX_INPUT_SIDE."""
    for v in (height, width):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InputError(field=name, value=(height, width), rule="height and width must be integers")
    assert isinstance(height, int) and isinstance(width, int)
    if not (1 <= height <= MAX_INPUT_SIDE and 1 <= width <= MAX_INPUT_SIDE):
        raise InputError(field=name, value=(height, width),
                         rule=f"height and width must be in 1..{MAX_INPUT_SIDE:,}")
    return height, width
