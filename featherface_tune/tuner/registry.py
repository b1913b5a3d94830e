"""The objectives of the budget search, one class each, and their registry (torch-free).

An objective says what it is called (`name`, `aliases`), which way is better (`direction`), how its
value is obtained (`kind`), where a trial records it (`attr`) and how people see it (`column`,
`show`). The study records (`records`), the search (`api`, `objectives`), the reports and the
`search` command read this registry; a new objective is one class passed to `register`.

Kinds:
    analytic   a function of the config alone (`value`, and `exact_values` over a listed exact set):
               solved over every exact config, the proven optimum recorded; never sampled
    model      predicted by a fitted model (the latency tables), solved like an analytic objective over
               the exact set under the model, then the finalists are measured (`api`)
    measured   only a measurement knows it (proxy AP, sampled latency, Python callables): sampled

Values are compared rounded to `decimals` places (None: exactly), so sums that differ only in
their last bits tie, and ties go to fewer MACs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from featherface_tune.counter.conventions import TRUE, Convention, CountedIn

KINDS = ("analytic", "model", "measured")
DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class Context(CountedIn):
    """What an objective may read to value configs: the study's facts (`counting`: how params and
    MACs are counted) and, for `closest`, the reference's knobs; for model latency, the fitted
    model (`deploy.latency_table.LatencyModel`)."""

    input_size: tuple[int, int]
    counting: Convention = TRUE
    reference: Mapping[str, Any] | None = None  # knobs (`space.knobs_from_config`)
    latency_model: Any = None


class Objective:
    """One objective of the search (see the module doc). Subclasses set the class attributes and,
    when analytic (or model), `value` (one config) and `exact_values` (a listed exact set)."""

    name: ClassVar[str]
    direction: ClassVar[str] = "minimize"
    kind: ClassVar[str] = "measured"
    attr: ClassVar[str]  # the trial user attribute that holds the value
    column: ClassVar[str]  # its header in tables
    aliases: ClassVar[tuple[str, ...]] = ()
    decimals: ClassVar[int | None] = None  # comparison rounding

    def value(self, cfg: Any, ctx: Context) -> float:  # pragma: no cover - analytic objectives override
        raise NotImplementedError(f"objective {self.name!r} is {self.kind}: it has no analytic value")

    def exact_values(self, exact: Any, ctx: Context) -> Any:
        """One value per config of an `ExactSet` (numpy array); default: `value` of each config."""
        import numpy as np

        return np.array([self.value(exact.config(i), ctx) for i in range(len(exact))], dtype="float64")

    def show(self, value: float) -> str:
        return f"{value:.4g}"

    def rounded(self, value: float) -> float:
        return value if self.decimals is None else round(value, self.decimals)

    @property
    def solvable(self) -> bool:
        return self.kind in ("analytic", "model")


_REGISTRY: dict[str, Objective] = {}
_ALIASES: dict[str, str] = {}
# objective name -> (attribute, direction): a live view kept for the readers that predate the registry
OBJECTIVES: dict[str, tuple[str, str]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    """Add an objective class to the registry (usable as a decorator); its name and aliases must be new."""
    obj = cls()
    if obj.kind not in KINDS or obj.direction not in DIRECTIONS:
        raise ValueError(f"objective {obj.name!r}: kind must be one of {KINDS}, direction one of {DIRECTIONS}")
    for key in (obj.name, *obj.aliases):
        if key in _ALIASES and _ALIASES[key] != obj.name:
            raise ValueError(f"objective name {key!r} is taken by {_ALIASES[key]!r}")
    _REGISTRY[obj.name] = obj
    for key in (obj.name, *obj.aliases):
        _ALIASES[key] = obj.name
    OBJECTIVES[obj.name] = (obj.attr, obj.direction)
    return cls


def unregister(name: str) -> None:
    """Remove an objective (tests that register their own)."""
    obj = _REGISTRY.pop(name, None)
    if obj is None:
        return
    for key in (obj.name, *obj.aliases):
        _ALIASES.pop(key, None)
    OBJECTIVES.pop(name, None)


def get(name: str) -> Objective | None:
    """The objective called `name` (or one of its aliases), None for a Python callable's name."""
    key = _ALIASES.get(name.strip().lower()) if isinstance(name, str) else None
    return _REGISTRY.get(key) if key is not None else None


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def aliases() -> dict[str, str]:
    return dict(_ALIASES)


def direction(name: str) -> str:
    """Optuna direction of an objective; Python callables (any other name) are minimised."""
    obj = get(name)
    return obj.direction if obj is not None else "minimize"


def kind(name: str) -> str:
    obj = get(name)
    return obj.kind if obj is not None else "measured"


# ---- the built-in objectives ---------------------------------------------------------------------

@register
class Closest(Objective):
    """Distance of the config to the reference (`space.distance`): changes FeatherFace least."""

    name = "closest"
    kind = "analytic"
    attr = "closest"
    column = "dist"
    decimals = 9

    def value(self, cfg: Any, ctx: Context) -> float:
        from featherface_tune.tuner.space import distance, knobs_from_config

        if ctx.reference is None:
            raise ValueError("closest needs a reference config")
        return distance(knobs_from_config(cfg), ctx.reference)

    def exact_values(self, exact: Any, ctx: Context) -> Any:
        from featherface_tune.tuner.space import SWITCH_COST

        if ctx.reference is None:
            raise ValueError("closest needs a reference config")
        sw, wd = exact.distances(ctx.reference)
        return sw * SWITCH_COST + wd

    def show(self, value: float) -> str:
        return f"{value:.3f}"


@register
class Macs(Objective):
    """Multiply-accumulates at the input size, in the study's convention."""

    name = "macs"
    kind = "analytic"
    attr = "macs"
    column = "MACs"
    decimals = 0

    def value(self, cfg: Any, ctx: Context) -> float:
        from featherface_tune.counter.analytic import count

        h, w = ctx.input_size
        return float(count(cfg, h, w, convention=ctx.counting).macs)

    def exact_values(self, exact: Any, ctx: Context) -> Any:
        return exact.macs.astype("float64")

    def show(self, value: float) -> str:
        return f"{value / 1e6:,.1f}M"


@register
class Latency(Objective):
    """Forward time (ms, batch 1) at the input size: predicted by the per-block latency model and
    solved over the exact set, then the finalists timed whole (`latency_ms`); with
    `latency_mode="sampled"` measured per trial instead."""

    name = "latency"
    kind = "model"
    attr = "latency_ms"
    column = "latency ms"
    decimals = 3  # model latencies tie within a microsecond

    def value(self, cfg: Any, ctx: Context) -> float:
        if ctx.latency_model is None:
            raise ValueError("model latency needs a latency model")
        return float(ctx.latency_model.predict(cfg))

    def exact_values(self, exact: Any, ctx: Context) -> Any:
        if ctx.latency_model is None:
            raise ValueError("model latency needs a latency model")
        return ctx.latency_model.predict_exact(exact)

    def show(self, value: float) -> str:
        return f"{value:.1f}"


@register
class ProxyAP(Objective):
    """Validation AP after short proxy training (`training.proxy`)."""

    name = "proxy_ap"
    direction = "maximize"
    attr = "proxy_ap"
    column = "AP"
    aliases = ("proxy", "ap")

    def show(self, value: float) -> str:
        return f"{value:.4f}"
