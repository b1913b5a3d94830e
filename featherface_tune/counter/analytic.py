"""Analytic parameter and MAC counts from a config alone (no model is built).

The prices come from the architecture's description (`featherface_tune.models.arch`): each block
instance's full cost (fvcore's convention, model in eval mode: one fused multiply-add counts 1; every
convolution counted, including the deformable convs' offset and modulator convs) and its Parts, which a
counting convention restates (`featherface_tune.counter.conventions`). `dcn_macs="dense"` leaves the
offset and modulator convs out of `macs`; they (`dcn_offset_macs`) and the bilinear sampling
(`dcn_sampling_macs`, never in `macs`) are also reported on their own lines.

`count(..., convention=get_convention(NAME))` (or the name) gives the figures other counting tools
report for the same config (thop, stock fvcore, torchinfo, torch's flop counter).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping, NamedTuple

from featherface_tune.bounds import MAX_INPUT_SIDE
from featherface_tune.counter.conventions import Convention, countable, get_convention
from featherface_tune.models.arch import GROUPS, Cost, priced_groups, true_groups
from featherface_tune.models.arch import clear_caches as _clear_arch
from featherface_tune.models.config import FeatherFaceConfig

__all__ = ["GROUPS", "CountResult", "clear_caches", "count", "count_params"]


class CountResult(NamedTuple):
    """Exact totals for one config and input size. `groups` holds (params, macs) per GROUPS entry;
    `modules` presents them by name. `params`, `macs` and `groups` are in `convention` (`macs` holds
    FLOPs under "flops"); the DCN offset and sampling lines are always the true MACs."""

    params: int
    macs: int
    input_size: tuple[int, int]
    groups: tuple[tuple[int, int], ...]
    dcn_offset_macs: int = 0
    dcn_sampling_macs: int = 0
    dcn_macs: str = "full"
    convention: str = "numel"

    @property
    def counting(self) -> Convention:
        """The convention the figures are in (its DCN MAC convention included)."""
        return get_convention(self.convention, self.dcn_macs)

    @property
    def modules(self) -> dict[str, Cost]:
        return {name: Cost(*pm) for name, pm in zip(GROUPS, self.groups)}

    def to_json(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "macs": self.macs,
            "input_size": list(self.input_size),
            "modules": {n: {"params": p, "macs": m} for n, (p, m) in zip(GROUPS, self.groups)},
            "dcn_offset_macs": self.dcn_offset_macs,
            "dcn_sampling_macs": self.dcn_sampling_macs,
            "dcn_macs": self.dcn_macs,
            "convention": self.convention,
        }


def count(cfg: FeatherFaceConfig | Mapping[str, Any], h: int = 640, w: int = 640, dcn_macs: str = "full",
          convention: str | Convention = "numel") -> CountResult:
    """Total and per-group params and MACs for an h x w input (see the module doc for `dcn_macs`),
    in a counting convention (default: true parameters, fvcore MACs): a `Convention` (which holds
    its DCN MAC convention: `dcn_macs` is then not read) or its name. `cfg` may be a mapping of
    config fields; anything else, or a size beyond the bounds, raises InputError/ConfigError.

        >>> count(FeatherFaceConfig()).params
        592371
    """
    if not isinstance(cfg, FeatherFaceConfig) or not (type(h) is int and type(w) is int and h <= MAX_INPUT_SIDE
                                                      and w <= MAX_INPUT_SIDE):
        cfg, (h, w) = _checked(cfg, h, w)
    return _count(cfg, h, w, get_convention(convention, dcn_macs))


def _checked(cfg: Any, h: Any, w: Any) -> tuple[FeatherFaceConfig, tuple[int, int]]:
    """`count`'s arguments as the API documents them, or the project's one-line errors."""
    from featherface_tune.bounds import check_input_side
    from featherface_tune.errors import InputError
    from featherface_tune.models.config import from_mapping

    if isinstance(cfg, Mapping):
        cfg = from_mapping(dict(cfg), source="cfg")
    elif not isinstance(cfg, FeatherFaceConfig):
        raise InputError(f"cfg {cfg!r}: give a FeatherFaceConfig or a mapping of its fields, not {type(cfg).__name__}")
    if type(h) is int and type(w) is int and (h < 1 or w < 1):
        return cfg, (h, w)  # the counter's own rule: "input size HxW must be positive"
    return cfg, check_input_side(h, w, "h, w")


@lru_cache(maxsize=8192)
def _count(cfg: FeatherFaceConfig, h: int, w: int, conv: Convention) -> CountResult:
    countable(conv, cfg)
    if conv.rules == () and conv.scale == 1:  # the true count (the common case): memoised group sums
        groups, offset, sampling = true_groups(cfg, h, w)
    else:
        priced = priced_groups(cfg, h, w)
        groups = tuple(conv.total(p) for p in priced.values())  # GROUPS order
        _, offset, sampling = true_groups(cfg, h, w)
    params = macs = 0
    for p, m in groups:
        params += p
        macs += m
    return CountResult(params, macs, (h, w), groups, offset, sampling, conv.dcn_macs, conv.name)


def count_params(cfg: FeatherFaceConfig) -> int:
    """Learnable parameters only (independent of the input size)."""
    return count(cfg, 32, 32).params


def clear_caches() -> None:
    """Forget every memoised count and block price (for cold-start timing)."""
    _count.cache_clear()
    _clear_arch()
