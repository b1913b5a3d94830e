"""Torch-free run specs: what a training run (`TrainOptions`) and a proxy run (`Fidelity`) are, and
their checks, so the tuner can describe and check a search's proxy runs without importing torch
(`training.loop` and `training.proxy`, which train, import them from here and re-export them).

Errors name the argument's Python name (`InputError(field=..., value=..., rule=...)`); the command
layer shows its flag."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from featherface_tune.bounds import (
    MAX_BATCH, MAX_EPOCHS, MAX_WORKERS, check_build_size, check_finite, check_int, check_seed,
)
from featherface_tune.data.mat import SETTINGS as METRICS
from featherface_tune.errors import InputError

if TYPE_CHECKING:  # only for the annotation: resolved_workers is called where training runs
    import torch

PRUNERS = ("median", "hyperband", "none")
OPTIMIZERS = ("adamw", "sgd")
DEFAULT_LR = {"adamw": 1e-3, "sgd": 1e-3}
DEFAULT_WEIGHT_DECAY = {"adamw": 1e-2, "sgd": 5e-4}  # SGD: RetinaFace's 5e-4 with momentum 0.9


def check_pruner(name: str) -> str:
    """A pruner name, or a one-line InputError listing the choices (checked before any work)."""
    if name not in PRUNERS:
        raise InputError(field="pruner", value=name, rule=f"must be one of {', '.join(PRUNERS)}")
    return name


def check_subset(value: float, name: str = "subset") -> None:
    """The training subset: a fraction in (0, 1] or a whole image count above 1."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok or (value > 1 and value != int(value)):
        raise InputError(field=name, value=value, rule="must be a fraction in (0, 1] or a whole number of images")


def check_image_size(image_size: int, name: str = "image_size") -> None:
    """A square training size: a multiple of 32 (the deepest feature map's stride), at most the side
    the tool builds a model on (bounds.MAX_BUILD_SIDE)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32 or image_size % 32:
        raise InputError(field=name, value=image_size, rule="must be a positive multiple of 32")
    check_build_size(image_size, image_size, field=name, value=image_size)  # at most MAX_BUILD_SIDE; memory: with the model


def plain_number(value: float) -> float | int:
    """A number for a message as it was likely typed: 9.0 as 9, 0.5 as it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 10
    image_size: int = 640
    batch_size: int = 8
    subset: float = 1.0
    time_budget: float | None = None  # seconds of training (after setup); stops cleanly at a step boundary
    optimizer: str = "adamw"
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    weight_decay: float | None = None  # None: DEFAULT_WEIGHT_DECAY[optimizer]
    momentum: float = 0.9
    warmup_epochs: float = 1.0  # linear warm-up, then cosine to min_lr_ratio * lr; capped at half the run
    min_lr_ratio: float = 0.01
    pretrained: Path | None = None  # MobileNetV1-0.25 ImageNet checkpoint for the backbone
    out_dir: Path | None = None  # checkpoints; None: none written
    resume: bool = False
    seed: int = 0
    num_workers: int | None = None  # None: 0 on CPU (a worker competes with compute), min(4, cores) on CUDA
    cache_images: bool = False  # keep decoded images in memory (small data sets, proxy runs)
    augment: bool = True
    max_steps: int | None = None  # stop after this many optimizer steps in total (tests, benchmarks)
    bn_recalibrate: int = 0  # batches of BatchNorm recalibration for model.pt (see recalibrate_bn)
    progress: bool = True
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps (featherface_tune.training.device)
    amp: str = "auto"  # auto (CUDA only), off, bf16, fp16
    recipe: str = "short"  # featherface_tune.training.recipe.RECIPES: schedule, decay, image library, matching

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def resolved_weight_decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else DEFAULT_WEIGHT_DECAY[self.optimizer]

    def validate(self) -> None:
        """Every check that needs no torch; the device itself (is CUDA there?) is checked by train()."""
        from featherface_tune.training.device import check_amp
        from featherface_tune.training.recipe import get_recipe

        check_int(self.epochs, "epochs", 1, MAX_EPOCHS)
        check_image_size(self.image_size)
        check_int(self.batch_size, "batch_size", 1, MAX_BATCH)
        check_subset(self.subset)
        if self.time_budget is not None and not (self.time_budget > 0):
            raise InputError(field="time_budget", value=self.time_budget, rule="must be a positive number of seconds")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(field="optimizer", value=self.optimizer, rule=f"must be one of {', '.join(OPTIMIZERS)}")
        lr = self.resolved_lr()
        if not (math.isfinite(lr) and lr > 0):
            raise InputError(field="lr", value=lr, rule="must be a positive number")
        check_seed(self.seed)
        check_finite(self.warmup_epochs, "warmup_epochs")
        if self.warmup_epochs > self.epochs:  # the schedule caps it at half the run: more is a typo
            raise InputError(field="warmup_epochs", value=plain_number(self.warmup_epochs), refs=("epochs",),
                             rule=f"must be at most {{epochs}} ({self.epochs}); the warm-up takes at most half the run")
        if self.weight_decay is not None:
            check_finite(self.weight_decay, "weight_decay")
        if self.bn_recalibrate < 0:
            raise InputError(field="bn_recalibrate", value=self.bn_recalibrate, rule="must be >= 0")
        if self.num_workers is not None:  # each worker is a process: a few per core at most
            check_int(self.num_workers, "num_workers", 0, min(MAX_WORKERS, 4 * (os.cpu_count() or 1)),
                      "data-loader processes: at most 4 per core of this machine")
        if self.resume and self.out_dir is None:
            raise InputError(field="resume", rule="needs {out_dir} (the folder holding last.pt)", refs=("out_dir",))
        if self.pretrained is not None and not Path(self.pretrained).is_file():
            raise InputError(field="pretrained", value=Path(self.pretrained), rule="does not exist")
        check_amp(self.amp)  # the name; what it means on the device is train()'s to resolve
        get_recipe(self.recipe)

    def resolved_workers(self, device: torch.device) -> int:
        if self.num_workers is not None:
            return self.num_workers
        from featherface_tune.training.device import usable_cores

        return min(4, usable_cores()) if device.type == "cuda" else 0

    def run_key(self) -> dict[str, Any]:
        """Options that must match for a checkpoint to be resumed (but epochs: resuming with more
        epochs extends a run)."""
        return {"recipe": self.recipe, "epochs": self.epochs, "image_size": self.image_size, "batch_size": self.batch_size,
                "subset": self.subset, "optimizer": self.optimizer, "lr": self.resolved_lr(),
                "weight_decay": self.resolved_weight_decay(), "momentum": self.momentum,
                "warmup_epochs": self.warmup_epochs, "min_lr_ratio": self.min_lr_ratio,
                "seed": self.seed, "augment": self.augment}


@dataclass(frozen=True)
class Fidelity:
    """How much training a proxy run gets: the one description of a proxy training run, used by the
    search (CLI and API), proxy_objective and calibration. Keys of the `fidelity` dict; all optional.

    Training defaults come from TrainOptions; the fields set here differ on purpose (short runs).
    Constructing one validates it (InputError naming the field); `train_options()` is the only way
    a fidelity becomes a training run."""

    epochs: int = 5  # TrainOptions: 10
    subset: float = TrainOptions.subset  # fraction of train images (or, above 1, an image count), stratified
    image_size: int = 320  # square training crop size (TrainOptions: 640)
    time_budget: float | None = TrainOptions.time_budget  # seconds of training; stops cleanly, then evaluated
    metric: str = "hard"
    seed: int = TrainOptions.seed
    batch_size: int = TrainOptions.batch_size
    optimizer: str = TrainOptions.optimizer
    lr: float | None = 3e-3  # short runs want a higher peak LR than RetinaFace's 1e-3 (None: DEFAULT_LR)
    val_subset: float = 1.0  # fraction of val images evaluated (stratified; the GT is cut to match)
    val_max_side: int | None = None  # shrink val images whose long side exceeds this (None: as is)
    eval_every: int = 1  # with a trial: evaluate and report every N epochs
    bn_recalibrate: int = 8  # batches to recompute BatchNorm statistics before each evaluation (0: off)
    pretrained: str | None = None  # MobileNetV1-0.25 ImageNet checkpoint
    cache_images: bool = True  # keep decoded train images in memory
    recipe: str = TrainOptions.recipe  # "short"; "official" trains as FeatherFace's train.py (shortened)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InputError(field="metric", value=self.metric, rule=f"must be one of {', '.join(METRICS)}")
        if not (0 < self.val_subset <= 1):
            raise InputError(field="val_subset", value=self.val_subset, rule="must be a fraction in (0, 1]")
        if self.val_max_side is not None and self.val_max_side < 32:
            raise InputError(field="val_max_side", value=self.val_max_side, rule="must be at least 32")
        if self.bn_recalibrate < 0:
            raise InputError(field="bn_recalibrate", value=self.bn_recalibrate, rule="must be >= 0")
        if self.eval_every < 1:
            raise InputError(field="eval_every", value=self.eval_every, rule="must be at least 1")
        self.train_options().validate()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "Fidelity":
        data = dict(data or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InputError(f"fidelity: unknown key {unknown[0]!r}; valid keys: {', '.join(names)}")
        return cls(**data)

    @classmethod
    def from_search_options(cls, epochs: int | None = None, subset: float | None = None,
                            image_size: int | None = None, time_budget: float | None = None,
                            metric: str = "hard") -> "Fidelity":
        """The search's proxy options (None: the default), checked under their own names (`proxy_epochs`,
        ...: an error's field; the command layer shows the flag)."""
        for name, v in (("epochs", epochs), ("image_size", image_size)):
            if v is not None and v < 1:
                raise InputError(field=f"proxy_{name}", value=v, rule="must be at least 1")
        if subset is not None and not (subset > 0):
            raise InputError(field="proxy_subset", value=subset,
                             rule="must be positive (a fraction <= 1 or an image count)")
        if time_budget is not None and not (time_budget > 0):
            raise InputError(field="proxy_time_budget", value=time_budget, rule="must be positive seconds")
        given = {"epochs": epochs, "subset": subset, "image_size": image_size, "time_budget": time_budget}
        try:
            return cls(metric=metric, **{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]
        except InputError as exc:  # a training rule about one of them: the same error, about the search's argument
            if exc.field in given:
                raise exc.renamed(f"proxy_{exc.field}") from None
            raise

    def train_options(self, out_dir: Path | None = None, progress: bool = False, device: str = "auto",
                      amp: str = "auto", resume: bool = False) -> TrainOptions:
        return TrainOptions(epochs=self.epochs, image_size=self.image_size, batch_size=self.batch_size,
                            subset=self.subset, time_budget=self.time_budget, optimizer=self.optimizer,
                            lr=self.lr, seed=self.seed, cache_images=self.cache_images,
                            pretrained=Path(self.pretrained) if self.pretrained else None,
                            out_dir=out_dir, progress=progress, device=device, amp=amp, resume=resume,
                            recipe=self.recipe)

    def to_dict(self) -> dict[str, Any]:
        """The keys that differ from the defaults, and the metric: the `fidelity` dict the search
        hands to the proxy (`from_mapping(f.to_dict()) == f`)."""
        defaults = type(self)()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name == "metric" or getattr(self, f.name) != getattr(defaults, f.name)}

    def to_json(self) -> dict[str, Any]:
        """Every key, defaults included."""
        return asdict(self)
