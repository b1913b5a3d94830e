"""What one block of the architecture is, for every tool that walks the architecture (torch-free).

A `Block` says where the block sits (`role`, `group`), which module implements it (`module`, imported
only by the builder), which instances a config gets (`keys`, one per level or one, and `args`: the
constructor arguments, read off the config's fields by name), what one instance costs (`price`, from
the same arguments), which search term that cost belongs to (`term`) and how a checkpoint shows the
block (`infer`). timm's byobnet
block configs play the same part: one description, several walkers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

from featherface_tune.errors import InputError
from featherface_tune.models.arch.cost import Priced

Shapes = Mapping[str, tuple[int, ...]]  # state-dict key -> tensor shape
LEVELS = ("P3", "P4", "P5")  # strides 8, 16, 32

# How FeatherFace.features applies a block's modules to the running features:
#   body: the input image -> one feature map per level; neck: all levels -> all levels;
#   residual: relu(m(f) + f) per level; level: m(f) per level; head: read by forward, not by features.
ROLES = ("body", "neck", "residual", "level", "head")
# The search terms a cost belongs to: "base" depends on the structure alone, "level" on one level's SSH
# width too, a ratio field's term on that CBAM reduction too (`featherface_tune.tuner.solve` sums them).
TERMS = ("base", "level", "backbone_cbam_reduction", "neck_cbam_reduction")


class Instance(NamedTuple):
    """One module of a block in a config's model."""

    key: str  # attribute path in the model, the prefix of its state-dict keys ("ssh1", "ClassHead.0")
    level: int | None  # 0, 1, 2 for P3, P4, P5; None for a block over the whole input
    args: tuple[Any, ...]  # the module's constructor arguments; its price reads the same ones


class Sizes(NamedTuple):
    """An input size, the (height, width) of its three levels and their positions (`hws`: made by
    `featherface_tune.models.arch.sizes`, read by every per-level price)."""

    h: int
    w: int
    levels: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    hws: tuple[int, int, int]


Fields = Mapping[str, Any]  # config field -> value (a config's, or a solver's partial assignment)


class Polynomial(NamedTuple):
    """A price as a polynomial in one int field: along each residue class of the field modulo
    `period` (a number, or the int field holding it), params, MACs and every Part are a polynomial of
    `degree` in the field, for every value the price accepts from one period up (floor divisions by
    the period, such as the SSH's width // 4 or CBAM's channels // reduction, keep that true). The
    counter keeps, per class, the forward differences of the prices at the class's first degree + 1
    values from one period up, and serves every other value of the class from them
    (`featherface_tune.models.arch.true_groups`)."""

    field: str
    degree: int
    period: int | str = 1

    def check(self, block: str, reads: tuple[str, ...]) -> None:
        """ValueError unless the fields are ones the block reads and the numbers are positive ints."""
        for name in (self.field, self.period):
            if isinstance(name, str) and name not in reads:
                raise ValueError(f"block {block!r}: polynomial field {name!r} is not one of the fields it reads")
        if type(self.degree) is not int or self.degree < 1:
            raise ValueError(f"block {block!r}: polynomial degree {self.degree!r} is not an int >= 1")
        if not isinstance(self.period, str) and (type(self.period) is not int or self.period < 1):
            raise ValueError(f"block {block!r}: polynomial period {self.period!r} is not an int >= 1 or a field")


def always(fields: Fields) -> bool:
    return True


@dataclass(frozen=True)
class Block:
    """One block type of the architecture (see the module doc). Its functions read config fields by
    name (`reads` lists them), so a solver can price a partial assignment without building a config,
    and the counter memoises its prices by their values (a per-level instance reads a per-level field,
    such as `ssh_channels`, at its own level only)."""

    name: str
    group: str  # the breakdown group its cost is reported in (`count(...).modules`)
    role: str  # one of ROLES
    module: str  # "package.module:factory", called with an instance's args
    keys: tuple[str, ...]  # model attribute per level (P3, P4, P5), or the one attribute of a whole-input block
    args: Callable[[Fields, int | None], tuple[Any, ...]]  # (fields, level or None) -> constructor args
    reads: tuple[str, ...]  # the config fields `args` and `present` read
    price: Callable[..., Priced]  # price(*args, at): at = the level's positions, or Sizes (whole input)
    term: str = "base"  # one of TERMS
    present: Callable[[Fields], bool] = always
    infer: Callable[[Shapes, Fields], dict[str, Any]] | None = None  # the fields a checkpoint shows
    # an int field its price is affine in (params, MACs and every Part change by the same amount per
    # unit of it): `arch.true_groups` keeps the price at 0 and the change per unit, for every value
    affine_in: str | None = None
    # an int field its price is a polynomial in along each residue class (see `Polynomial`): the
    # counter fills a memo miss from the polynomial, not from new prices
    polynomial: "Polynomial | None" = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"block {self.name!r}: role {self.role!r} is not one of {', '.join(ROLES)}")
        if self.term not in TERMS:
            raise ValueError(f"block {self.name!r}: term {self.term!r} is not one of {', '.join(TERMS)}")
        if self.affine_in is not None and self.affine_in not in self.reads:
            raise ValueError(f"block {self.name!r}: affine_in {self.affine_in!r} is not one of the fields it reads")
        if self.polynomial is not None:
            self.polynomial.check(self.name, self.reads)
        if len(self.keys) not in (1, len(LEVELS)):
            raise ValueError(f"block {self.name!r}: one key, or one per level ({len(LEVELS)})")
        object.__setattr__(self, "per_level", len(self.keys) == len(LEVELS))  # read per price: a plain attribute
        object.__setattr__(self, "uncached_price", getattr(self.price, "__wrapped__", self.price))

    per_level: bool = dataclasses.field(init=False, repr=False, compare=False)
    uncached_price: Callable[..., Priced] = dataclasses.field(init=False, repr=False, compare=False)  # `price` unmemoised

    def instances(self, fields: Fields) -> tuple[Instance, ...]:
        """Its modules in a model with these fields (whether it is present is `present`'s answer)."""
        if self.per_level:
            return tuple(Instance(k, i, self.args(fields, i)) for i, k in enumerate(self.keys))
        return (Instance(self.keys[0], None, self.args(fields, None)),)


def ssh_width(fields: Fields, level: int | None) -> int:
    """The SSH width of a level (`ssh_channels` holds one for all levels, or one per level)."""
    s = fields["ssh_channels"]
    return s if isinstance(s, int) else s[level]  # type: ignore[index]


def need(shapes: Shapes, key: str, what: str) -> tuple[int, ...]:
    """The shape of `key`, or a one-line InputError saying which field cannot be inferred."""
    if key not in shapes:
        raise InputError(f"cannot infer {what}: key {key!r} is missing; not a FeatherFace/RetinaFace checkpoint?")
    return shapes[key]
