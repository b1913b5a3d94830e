"""The training loop: seeded, resumable, time-budgeted RetinaFace-style training of a config.

Checkpoints (OUT/last.pt) are written at the end of every epoch and when a time budget or step cap
stops the run, atomically (temporary file + os.replace), and hold the model, optimizer, scheduler,
position (epoch, batch), history and RNG states. Sample i of epoch e is augmented from
Generator([seed, e, i]) and epoch e's order is a permutation seeded by (seed, e), so a resumed run
produces the same batches, and on the same machine the same losses, as an uninterrupted one.

Devices: `device` (auto/cpu/cuda/cuda:N/mps) and `amp` (auto/off/bf16/fp16) choose where and in
which precision the steps run; checkpoints always hold CPU tensors' device-free state and load with
map_location="cpu", so a run started on a GPU resumes on a CPU and the other way round. On CUDA the
DataLoader pins memory and batches are copied with non_blocking=True. The loss is computed in
float32 outside autocast.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from featherface_tune.atomic import atomic_write, remove_stale_temporaries
from featherface_tune.bounds import check_build_size
from featherface_tune.data.records import ImageRecord
from featherface_tune.errors import FeatherFaceError, InputError, first_line
from featherface_tune.inference.detector import model_device
from featherface_tune.models.builder import FeatherFace, build_model
from featherface_tune.models.checkpoint import load_backbone_pretrained
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.training.device import autocast, grad_scaler, resolve_amp, resolve_device
from featherface_tune.training.distributed import (
    ShardedBatches, World, any_rank, check_batches, global_batch_norm, join, launched_world, sum_over_ranks, wrap,
)
from featherface_tune.training.dataset import (
    EpochSampler, FaceDataset, collate, stratified_subset,
)
from featherface_tune.training.loss import MultiBoxLoss
from featherface_tune.training.match import make_priors
from featherface_tune.training.recipe import get_recipe
# the run's description is torch-free (the tuner checks proxy runs without torch); re-exported here
from featherface_tune.training.spec import TrainOptions as TrainOptions, plain_number

CHECKPOINT_FORMAT = "featherface-tune/train-checkpoint"
RESUME_KEYS = ("config", "options", "model", "optimizer", "scheduler", "epoch", "batch", "global_step",
               "history", "step_losses", "rng")
MODEL_FORMAT = "featherface-tune/model"


class NonFiniteLoss(FeatherFaceError):
    """The loss became NaN or infinite; training stopped."""

    exit_code = 1

    def __init__(self, message: str, epoch: int, step: int, global_step: int):
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.global_step = global_step


class StopReason(str, Enum):
    """Why train() stopped; the value is what JSON summaries and trial attributes hold."""

    COMPLETED = "completed"  # every epoch ran
    TIME_BUDGET = "time_budget"  # --time-budget seconds of training were spent
    MAX_STEPS = "max_steps"  # max_steps optimizer steps ran

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    steps: int
    loss: float
    loc: float
    conf: float
    landm: float
    lr: float
    seconds: float
    data_seconds: float  # time spent waiting for batches
    images: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    model: FeatherFace
    history: tuple[EpochStats, ...]
    step_losses: tuple[float, ...]  # every optimizer step of the run, resumed parts included
    epochs_completed: int
    global_step: int
    stopped: StopReason
    checkpoint: Path | None
    seconds: float  # this invocation's training time (without on_epoch_end callbacks)
    dataset: FaceDataset  # the (subset) training set, e.g. for BatchNorm recalibration
    world_size: int = 1  # processes of a data-parallel run (torchrun)

    @property
    def train_images(self) -> int:
        return len(self.dataset)

    def to_json(self) -> dict[str, Any]:
        return {"epochs_completed": self.epochs_completed, "global_step": self.global_step,
                "stopped": self.stopped.value, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "seconds": round(self.seconds, 3), "train_images": self.train_images, "world_size": self.world_size,
                "first_loss": self.step_losses[0] if self.step_losses else None,
                "last_loss": self.step_losses[-1] if self.step_losses else None,
                "history": [h.to_json() for h in self.history]}


# ---- pieces ----------------------------------------------------------------------------------

def lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """Multiplier of the base LR for optimizer step `step` (0-based): linear warm-up to 1 over
    `warmup` steps, then cosine down to `floor` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup - 1)
    p = min(1.0, (step - warmup) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


def make_optimizer(model: nn.Module, options: TrainOptions) -> torch.optim.Optimizer:
    """AdamW or SGD. The official recipe decays every tensor (one group, as `AdamW(net.parameters())`);
    the short recipe spares biases and norm parameters (1-d tensors)."""
    if get_recipe(options.recipe).decay_every_tensor:
        groups = [{"params": list(model.parameters()), "weight_decay": options.resolved_weight_decay()}]
    else:
        groups = [{"params": [p for p in model.parameters() if p.ndim > 1],
                   "weight_decay": options.resolved_weight_decay()},
                  {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    lr = options.resolved_lr()
    if options.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=options.momentum)
    return torch.optim.AdamW(groups, lr=lr)


def make_scheduler(optimizer: torch.optim.Optimizer, options: TrainOptions,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's schedule, stepped once per batch: OneCycleLR (official: torch's defaults, momentum
    or Adam's beta1 cycling 0.95 -> 0.85 -> 0.95) or linear warm-up then cosine (short)."""
    total = options.epochs * steps_per_epoch
    if get_recipe(options.recipe).schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=options.resolved_lr(), epochs=options.epochs,
                                                   steps_per_epoch=steps_per_epoch)
    warmup = min(int(round(options.warmup_epochs * steps_per_epoch)), total // 2)
    floor = options.min_lr_ratio
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total, floor))


def fast_forward(scheduler: torch.optim.lr_scheduler.LRScheduler, step: int) -> None:
    """Put the schedule (learning rates, and OneCycle's momentum) at optimizer step `step`. Both
    schedules are closed forms of the step, so this equals stepping `step` times, also after the
    run's length changed (--resume --epochs N recomputes the schedule for the new length)."""
    import warnings

    scheduler.last_epoch = step - 1
    with warnings.catch_warnings():  # "step() before optimizer.step()": no optimizer step is due here
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()


def recalibrate_bn(model: nn.Module, dataset: FaceDataset, batches: int, batch_size: int,
                   key: int = 1_000_000) -> nn.Module:
    """A copy of `model` (in eval mode) whose BatchNorm running statistics are the plain average over
    `batches` fresh augmented batches, computed in train mode without gradients ("precise BN").

    After a short run the running averages lag far behind the quickly moving weights, and eval-mode
    outputs can be much worse than train-mode ones (seen on FeatherFace with BiFPN + CBAM + DCN after
    a few dozen steps); recomputing them for the final weights removes that gap. The batches use
    augmentation epoch keys from `key` on, so they do not repeat the training samples' draws.
    """
    m = copy.deepcopy(model)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    if batches < 1 or not bns or len(dataset) == 0:
        return m.eval()
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    g = torch.Generator().manual_seed(key)
    m.train()
    with torch.no_grad():
        for b in range(batches):
            idx = torch.randint(len(dataset), (max(2, batch_size),), generator=g).tolist()
            images, _ = collate([dataset[(key + b, i)] for i in idx])
            m(images.to(model_device(m)))
    for bn, mom in zip(bns, saved):
        bn.momentum = mom
    return m.eval()


def _to_cpu(obj: Any) -> Any:
    """A state (dict/list of tensors) with every tensor on the CPU, so checkpoints are device-free."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through `atomic_write`: a reader (or a crash) sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(obj, f))


def prepare_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Check --out before any work: a folder that can be created and written, and not a finished or
    started run unless --resume (continue it) or --overwrite (replace it) says what to do with it."""
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise InputError(field="resume", refs=("overwrite", "out_dir"),
                         rule="contradicts {overwrite}; continue the run in {out_dir} or replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(field="out_dir", value=out_dir, rule="exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(field="out_dir", value=out_dir, rule=f"cannot be created: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise InputError(field="out_dir", value=out_dir, rule="is not writable")
    for name in ("last.pt", "model.pt"):
        target = out_dir / name
        if target.exists() and not target.is_file():
            raise InputError(field="out_dir", value=out_dir, rule=f"{name} exists and is not a file")
    held = [n for n in ("model.pt", "last.pt") if (out_dir / n).is_file()]
    if held and not resume and not overwrite:
        raise InputError(field="out_dir", value=out_dir, refs=("resume", "overwrite"),
                         rule=f"already holds a training run ({', '.join(held)}); "
                              "pass {resume} to continue it or {overwrite} to replace it")
    if overwrite:  # the old run goes now: an early stop must not leave its last.pt for --resume to pick up
        for name in held:
            (out_dir / name).unlink()


def fresh_run_dir(root: Path = Path("runs"), prefix: str = "train") -> Path:
    """A new, empty folder root/prefix-<n> (the first free n from 1), created here so that two runs
    started at once never share one: training without --out still keeps its model."""
    root.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(p.name[len(prefix) + 1:]) for p in root.glob(f"{prefix}-*")
                 if p.name[len(prefix) + 1:].isdigit()), default=0)
    while True:
        path = root / f"{prefix}-{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def checkpoint_epochs(out_dir: Path) -> int | None:
    """The epochs a resumable run in out_dir was started with (None when last.pt is absent or does
    not say; --resume then reports the problem)."""
    try:
        state = torch.load(Path(out_dir) / "last.pt", map_location="cpu", weights_only=True)
        return int(state["options"]["epochs"])
    except Exception:  # noqa: BLE001 - any problem is _resume's to name
        return None


def save_model(path: Path, model: FeatherFace, image_size: int, epochs: int) -> None:
    """Weights + config for prediction (`predict --checkpoint`)."""
    from featherface_tune.models.checkpoint import DIGEST_KEY, weights_digest

    weights = _to_cpu(model.state_dict())
    atomic_save({"format": MODEL_FORMAT, "config": model.config.to_dict(), "state_dict": weights,
                 DIGEST_KEY: weights_digest(weights), "image_size": image_size, "epochs": epochs}, path)


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values, so checkpoints load with weights_only=True."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class _Progress:
    """Rich progress on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = Console(stderr=True, markup=False)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=self.console, transient=False)
        self.task = self.bar.add_task("training", total=total, completed=done, loss="-")

    def __enter__(self) -> "_Progress":
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)

    def step(self, epoch: int, epochs: int, loss: float) -> None:
        if self.enabled:
            self.bar.update(self.task, advance=1, description=f"epoch {epoch}/{epochs}", loss=f"{loss:.3f}")

    def log(self, text: str) -> None:
        if self.enabled:
            self.bar.console.print(text, highlight=False)


# ---- the loop --------------------------------------------------------------------------------
# train() = _setup (the pieces) -> _resume (the position, with --resume) -> _optimize (epochs until
# the end, a time budget or a step cap; _run_epoch, _checkpoint) -> _save_final_model.

EpochCallback = Callable[[int, FeatherFace, FaceDataset], None]


@dataclass
class _Run:
    """One train() call: what _setup builds, the position (_resume restores it, the epochs advance
    it, _checkpoint writes it) and the clock of the time budget."""

    cfg: FeatherFaceConfig
    options: TrainOptions
    device: torch.device
    amp_dtype: torch.dtype | None
    model: FeatherFace
    step_model: nn.Module  # what the steps run: the model, or DDP over it in a data-parallel run
    world: World
    dataset: FaceDataset
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Any  # torch.amp.GradScaler with fp16, else None
    criterion: MultiBoxLoss
    priors: torch.Tensor
    sampler: EpochSampler
    loader: DataLoader
    steps_per_epoch: int
    total_steps: int
    ckpt_path: Path | None
    epoch: int = 0  # epochs completed
    batch: int = 0  # steps of epoch `epoch` already run (a resume mid-epoch)
    global_step: int = 0
    history: list[EpochStats] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    started: float = 0.0  # perf_counter when the training steps began
    budget_end: float = math.inf  # moved back by the time spent in on_epoch_end
    callback_seconds: float = 0.0


def train(cfg: FeatherFaceConfig, records: Sequence[ImageRecord], options: TrainOptions,
          on_epoch_end: EpochCallback | None = None) -> TrainResult:
    """Train `cfg` on `records`. on_epoch_end(epoch (1-based), model, dataset) runs after each completed
    epoch's checkpoint (the proxy evaluates and reports there; it may raise to stop the run)."""
    run = _setup(cfg, records, options)
    if options.resume:
        _resume(run)
    global_batch_norm(run.model, run.world.distributed)
    try:
        stopped = _optimize(run, on_epoch_end)
    finally:
        global_batch_norm(run.model, False)
    if run.ckpt_path is not None and run.world.writes:
        _save_final_model(run)
    return TrainResult(model=run.model, history=tuple(run.history), step_losses=tuple(run.step_losses),
                       epochs_completed=run.epoch, global_step=run.global_step, stopped=stopped,
                       checkpoint=run.ckpt_path,
                       seconds=time.perf_counter() - run.started - run.callback_seconds, dataset=run.dataset,
                       world_size=run.world.size)


def _setup(cfg: FeatherFaceConfig, records: Sequence[ImageRecord], options: TrainOptions) -> _Run:
    """Validate the options, then build the device, model, data, optimizer and schedule (seeded, in
    this order: a resumed run rebuilds the same pieces before restoring their state)."""
    options.validate()
    world = launched_world()
    device = resolve_device(options.device)
    if world.distributed and device.type == "cuda":  # torchrun: one GPU per process
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    join(world, device)
    amp_dtype = resolve_amp(options.amp, device)
    if options.subset > 1 and options.subset > len(records):
        raise InputError(field="subset", value=plain_number(options.subset), rule=f"more than the {len(records)} training images")
    records = stratified_subset(records, options.subset, options.seed)
    if not records:
        raise InputError("no training images")
    # the memory of a training step, estimated before anything is allocated
    check_build_size(options.image_size, options.image_size, cfg=cfg, batch=min(options.batch_size, len(records)),
                     training=True, field="image_size", value=options.image_size)
    if len(records) == 1 and options.image_size == 32:
        raise InputError(field="image_size", value=32, rule="with one training image: BatchNorm needs two values "
                         "per channel, and the deepest map is 1x1; add images or train larger")
    _seed_all(options.seed)
    model = build_model(cfg)
    if options.pretrained is not None:
        load_backbone_pretrained(model, Path(options.pretrained))
    model.to(device)
    recipe = get_recipe(options.recipe)
    dataset = FaceDataset(records, options.image_size, options.seed, options.augment,
                          cache=options.cache_images, image_ops=recipe.image_ops)
    check_batches(len(dataset), options.batch_size, world)
    # a last batch of one image fails BatchNorm where a map is 1x1 ("Expected more than 1 value per
    # channel"): that image is left out of the epoch (the sampler draws another order every epoch)
    drop_last = len(dataset) > options.batch_size and len(dataset) % options.batch_size == 1
    spe = len(dataset) // options.batch_size if drop_last else math.ceil(len(dataset) / options.batch_size)
    total_steps = options.epochs * spe
    optimizer = make_optimizer(model, options)
    scheduler = make_scheduler(optimizer, options, spe)
    ckpt_path = Path(options.out_dir) / "last.pt" if options.out_dir is not None else None
    if ckpt_path is not None:
        remove_stale_temporaries(ckpt_path.parent)
    sampler = EpochSampler(len(dataset), options.seed)
    workers = options.resolved_workers(device)
    # global batches of the epoch order; in a data-parallel run this process's piece of each
    loader = DataLoader(dataset, batch_sampler=ShardedBatches(sampler, options.batch_size, world, drop_last),
                        collate_fn=collate, num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=device.type == "cuda")
    return _Run(cfg=cfg, options=options, device=device, amp_dtype=amp_dtype, model=model,
                step_model=wrap(model, world, device), world=world, dataset=dataset,
                optimizer=optimizer, scheduler=scheduler, scaler=grad_scaler(device, amp_dtype),
                criterion=MultiBoxLoss(official_match=recipe.official_match), priors=make_priors(options.image_size, cfg.anchors_per_cell).to(device),
                sampler=sampler, loader=loader, steps_per_epoch=spe, total_steps=total_steps,
                ckpt_path=ckpt_path)


def _resume(run: _Run) -> None:
    """Validate OUT/last.pt against this run (format, completeness, config, options, position) and
    restore the model, optimizer, scaler, scheduler, position, history and RNG states from it. Every
    problem is a one-line InputError naming the file."""
    ckpt_path, options = run.ckpt_path, run.options
    assert ckpt_path is not None  # validate(): resume needs out_dir
    where = repr(str(ckpt_path))

    def refused(rule: str) -> InputError:  # about the resume; the rule may name the overwrite
        return InputError(field="resume", rule=rule, refs=("overwrite",))

    if not ckpt_path.is_file():
        raise refused(f"no checkpoint at {where}")
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file is an input problem
        raise refused(f"{where} cannot be read: {first_line(exc, 160)}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise refused(f"{where} is not a training checkpoint")
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise refused(f"{where} is incomplete: no {', '.join(missing)}; start again with {{overwrite}}")
    if not isinstance(state["options"], dict):
        raise refused(f"{where} is damaged: options is not a table")
    if state["config"] != run.cfg.to_dict():
        raise refused(f"{where} was trained with a different config")
    diff = {k: (v, state["options"].get(k, "short" if k == "recipe" else None))
            for k, v in options.run_key().items()
            if k != "epochs" and state["options"].get(k, "short" if k == "recipe" else None) != v}
    if diff:
        k, (now, then) = next(iter(diff.items()))
        raise refused(f"{where} was written with {k}={then!r}, not {now!r}; resume with the same options")
    try:
        run.model.load_state_dict(state["model"])  # copies into the parameters on `device`
        run.optimizer.load_state_dict(state["optimizer"])  # moves its state to the parameters' device
        if run.scaler is not None and state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        epoch, batch, global_step = (int(state[k]) for k in ("epoch", "batch", "global_step"))
        history = [EpochStats(**h) for h in state["history"]]
        step_losses = [float(v) for v in state["step_losses"]]
        _set_rng_state(state["rng"])
    except Exception as exc:  # noqa: BLE001 - any damaged part is an input problem, named in one line
        raise refused(f"{where} is damaged ({type(exc).__name__}: {first_line(exc, 120)}); "
                      "start again with {overwrite}") from None
    spe = run.steps_per_epoch
    if not (0 <= batch <= spe and global_step >= 0 and epoch >= 0):
        raise refused(f"{where} is damaged: position epoch {epoch}, batch {batch} "
                      f"is outside the run ({spe} steps an epoch)")
    if epoch + (batch > 0) > options.epochs:
        raise InputError(field="epochs", value=options.epochs, refs=("epochs",),
                         rule=f"the run in {where} is past it (epoch {epoch}, step {batch}); "
                              "extend it with a larger {epochs}")
    fast_forward(run.scheduler, global_step)
    run.epoch, run.batch, run.global_step = epoch, batch, global_step
    run.history, run.step_losses = history, step_losses


def _checkpoint(run: _Run) -> None:
    """OUT/last.pt at the run's position (the next epoch and batch to run), atomically; nothing
    without --out."""
    if run.ckpt_path is None or not run.world.writes:
        return
    atomic_save({"format": CHECKPOINT_FORMAT, "config": run.cfg.to_dict(), "options": run.options.run_key(),
                 "model": _to_cpu(run.model.state_dict()), "optimizer": _to_cpu(run.optimizer.state_dict()),
                 "scheduler": run.scheduler.state_dict(), "epoch": run.epoch, "batch": run.batch,
                 "scaler": run.scaler.state_dict() if run.scaler is not None else None,
                 "global_step": run.global_step, "history": [h.to_json() for h in run.history],
                 "step_losses": run.step_losses, "rng": _rng_state()}, run.ckpt_path)


def _stop_reason(run: _Run) -> StopReason | None:
    """Why the run must stop before its next step (the time budget, then the step cap), or None."""
    if any_rank(time.perf_counter() >= run.budget_end):  # every process stops at the same step
        return StopReason.TIME_BUDGET
    if run.options.max_steps is not None and run.global_step >= run.options.max_steps:
        return StopReason.MAX_STEPS
    return None


def _optimize(run: _Run, on_epoch_end: EpochCallback | None) -> StopReason:
    """Run epochs from the run's position until the last one, the time budget or the step cap;
    checkpoint after each epoch and where a stop cuts one short. Returns why it stopped."""
    options = run.options
    epochs, spe = options.epochs, run.steps_per_epoch
    stopped = StopReason.COMPLETED
    run.started = time.perf_counter()
    # the time budget counts training only: evaluation in on_epoch_end moves the end back
    run.budget_end = run.started + options.time_budget if options.time_budget is not None else math.inf
    with _Progress(options.progress and run.world.writes, run.total_steps, run.global_step) as bar:
        while run.epoch < epochs:
            before = _stop_reason(run)
            if before is not None:
                stopped = before
                break
            stats, interrupted = _run_epoch(run, bar)
            if interrupted is not None:
                stopped = interrupted
                if run.batch < spe:  # cut short mid-epoch: keep the position for --resume
                    _checkpoint(run)
                    where = (f"stopped by {stopped.value.replace('_', ' ')} in epoch {run.epoch + 1} "
                             f"at step {run.batch}/{spe}")
                    bar.log(f"{where}; checkpoint {run.ckpt_path}" if run.ckpt_path else where)
                    break
            run.history.append(stats)
            run.epoch += 1
            run.batch = 0
            _checkpoint(run)
            bar.log(f"epoch {stats.epoch}/{epochs}: loss {stats.loss:.4f} (loc {stats.loc:.4f}, "
                    f"conf {stats.conf:.4f}, landm {stats.landm:.4f}), {stats.seconds:.1f} s")
            if on_epoch_end is not None:
                t_cb = time.perf_counter()
                try:
                    on_epoch_end(run.epoch, run.model, run.dataset)
                finally:
                    dt = time.perf_counter() - t_cb
                    run.callback_seconds += dt
                    run.budget_end += dt
                run.model.train()
            if interrupted is not None:
                break
    return stopped


def _run_epoch(run: _Run, bar: _Progress) -> tuple[EpochStats, StopReason | None]:
    """Steps of epoch `run.epoch` from `run.batch` on, advancing the position after each. Returns the
    epoch's statistics (an epoch resumed mid-way reports the steps run since the resume) and the
    reason a stop cut in after a step, if one did. Raises NonFiniteLoss on a NaN or infinite loss."""
    options, model, device = run.options, run.model, run.device
    spe = run.steps_per_epoch
    non_blocking = device.type == "cuda"
    model.train()
    run.sampler.set_epoch(run.epoch, run.batch * options.batch_size)  # global positions
    sums = np.zeros(4)
    n_steps, n_images = 0, 0
    t_epoch = time.perf_counter()
    data_s = 0.0
    t_wait = time.perf_counter()
    interrupted: StopReason | None = None
    for images, targets in run.loader:
        data_s += time.perf_counter() - t_wait
        images = images.to(device, non_blocking=non_blocking)
        with autocast(device, run.amp_dtype):
            outputs = run.step_model(images)
        # the loss (matching, softmax, hard-negative sort) stays in float32
        outputs = tuple(o.float() if o is not None else None for o in outputs)
        parts = run.criterion(outputs, run.priors, targets)
        # this process's shares summed over the processes: the global batch's loss (as is, in one process)
        shares = torch.stack([parts.total.detach(), parts.loc.detach(), parts.conf.detach(), parts.landm.detach(),
                              parts.total.new_tensor(float(images.shape[0]))])
        total, loc, conf, landm, batch_images = (float(v) for v in sum_over_ranks(shares))
        value = total
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"non-finite loss ({value}) at epoch {run.epoch + 1}, step {run.batch + 1}/{spe} "
                f"(global step {run.global_step + 1}): loc={loc:.4g}, conf={conf:.4g}, landm={landm:.4g}; "
                "try a lower learning rate", run.epoch + 1, run.batch + 1, run.global_step + 1)
        run.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over the processes; the shares' gradients must add up instead
        objective = parts.total * run.world.size if run.world.distributed else parts.total
        if run.scaler is not None:
            run.scaler.scale(objective).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            objective.backward()
            run.optimizer.step()
        run.scheduler.step()
        run.global_step += 1
        run.batch += 1
        n_steps += 1
        n_images += int(batch_images)
        run.step_losses.append(value)
        sums += (value, loc, conf, landm)
        bar.step(run.epoch + 1, options.epochs, value)
        interrupted = _stop_reason(run)
        if interrupted is not None:
            break
        t_wait = time.perf_counter()
    mean = sums / max(1, n_steps)
    stats = EpochStats(epoch=run.epoch + 1, steps=n_steps, loss=float(mean[0]), loc=float(mean[1]),
                       conf=float(mean[2]), landm=float(mean[3]),
                       lr=float(run.optimizer.param_groups[0]["lr"]),
                       seconds=time.perf_counter() - t_epoch, data_seconds=data_s, images=n_images)
    return stats, interrupted


def _save_final_model(run: _Run) -> None:
    """OUT/model.pt for prediction, its BatchNorm statistics recomputed first with --bn-recalibrate."""
    assert run.ckpt_path is not None
    options = run.options
    final = (recalibrate_bn(run.model, run.dataset, options.bn_recalibrate, options.batch_size)
             if options.bn_recalibrate > 0 else run.model)
    save_model(run.ckpt_path.with_name("model.pt"), final, options.image_size, run.epoch)  # type: ignore[arg-type]
