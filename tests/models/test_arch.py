"""The architecture's one description (`featherface_tune.models.arch`): every walker agrees with it,
instance by instance, and a new block type needs no change to the walkers."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from functools import lru_cache
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from featherface_tune.counter.analytic import clear_caches, count
from featherface_tune.models import arch
from featherface_tune.models.arch import BLOCKS, GROUPS, TERMS, Block, Priced, fields_of, layout
from featherface_tune.models.arch.block import ssh_width
from featherface_tune.models.arch.cost import Parts, conv
from featherface_tune.models.builder import build_model
from featherface_tune.models.checkpoint import infer_config
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.models.presets import get_preset
from featherface_tune.tuner.space import config_from_knobs as config_of
from strategies import configs


class OnlyReads(dict):  # type: ignore[type-arg]
    """A config's fields, refusing any a block did not declare in `reads`."""

    def __init__(self, fields: Any, allowed: tuple[str, ...]) -> None:
        super().__init__(fields)
        self.allowed = allowed

    def __getitem__(self, key: str) -> Any:
        if key not in self.allowed:
            raise AssertionError(f"reads {key!r}, not declared")
        return super().__getitem__(key)


@settings(max_examples=40, deadline=None)
@given(cfg=configs(max_width=48))
def test_each_instance_costs_what_its_module_holds(cfg):
    """Block by block, instance by instance: the price's parameters are the built module's numel(),
    and a block reads only the fields it declares (the solver's cache keys rely on it)."""
    model = build_model(cfg)
    at = arch.sizes(64, 96)
    for block, instances in layout(cfg):
        f = OnlyReads(fields_of(cfg), block.reads)
        assert block.present(f)
        assert block.instances(f) == instances
        for inst in instances:
            module = model.get_submodule(inst.key)
            price = arch.block_price(block, f, at, inst.level)
            assert len(price) == 1 and price[0].cost.params == sum(p.numel() for p in module.parameters()), inst
    built = {name for name, _ in model.named_children()}
    assert built == set(arch.key_groups(cfg))


@settings(max_examples=60, deadline=None)
@given(cfgs=st.lists(configs(max_width=48), min_size=1, max_size=4), size=st.sampled_from([(64, 96), (640, 640), (33, 7)]))
def test_true_groups_sum_the_instance_prices(cfgs, size):
    """The memoised true sums are the instances' prices summed, for configs counted one after another
    (a memo entry serves the next config only where it reads the same values), and again from memo."""
    for cfg in cfgs + cfgs[:1]:
        assert arch.true_groups(cfg, *size) == _priced_sums(cfg, size)


def _priced_sums(cfg, size):
    priced = arch.priced_groups(cfg, *size)
    return (tuple((sum(p.cost.params for p in ps), sum(p.cost.macs for p in ps)) for ps in priced.values()),
            sum(p.parts.dcn_aux_macs for ps in priced.values() for p in ps),
            sum(p.parts.dcn_sampling_macs for ps in priced.values() for p in ps))


def test_true_groups_from_polynomials_are_the_prices():
    """A sweep of new neck and SSH widths and CBAM reductions, counted one after another from empty
    memos as a search meets them: from a class's second width on, `true_groups` fills its misses from
    the declared polynomials (`Block.polynomial`), and every figure still equals the summed prices."""
    clear_caches()
    for i in range(120):
        cfg = FeatherFaceConfig(
            neck=("bifpn", "fpn")[i % 2], bifpn_repeats=1 + i % 3 if i % 2 == 0 else 0, neck_channels=16 + i,
            neck_cbam=i % 5 != 0, neck_cbam_reduction=(4, 8, 16)[i % 3], ssh_deformable=i % 4 < 2,
            ssh_channels=(4 * (4 + i % 29), 4 * (4 + (7 * i) % 31), 4 * (4 + (3 * i) % 23)),
            shuffle=("block", "plain", "none")[i % 3], landmarks=i % 7 != 0)
        assert arch.true_groups(cfg, 640, 640) == _priced_sums(cfg, (640, 640)), cfg


@settings(max_examples=40, deadline=None)
@given(cfg=configs(max_width=48), x=st.integers(0, 4096))
def test_prices_are_affine_in_what_blocks_say(cfg, x):
    """A block's `affine_in` holds: every instance's price at x is its price at 0 plus x times the
    change per unit, in every figure (`true_groups` keeps only those two)."""
    affine = [b for b in BLOCKS if b.affine_in]
    assert affine  # the claim is made (by the SSH), so it is checked
    at = arch.sizes(64, 96)
    for b in affine:
        f = fields_of(cfg)
        if not b.present(f):
            continue
        p0, p1, px = (arch.block_price(b, {**f, b.affine_in: v}, at) for v in (0, 1, x))
        for a, c, got in zip(p0, p1, px):
            flat = lambda p: (*p.cost, *p.parts)  # noqa: E731
            assert flat(got) == tuple(u + x * (v - u) for u, v in zip(flat(a), flat(c)))


@settings(max_examples=60, deadline=None)
@given(cfg=configs(max_width=48), x=st.integers(1, 4096))
def test_prices_are_polynomial_where_blocks_say(cfg, x):
    """A block's `polynomial` holds: along the residue class of x modulo the period, every
    instance's price at x is, in every figure, the value at x of the polynomial of that degree
    through its prices at the class's first degree + 1 values from one period up (the nodes
    `true_groups` fills a memo miss from). Restated by Lagrange's form, not the counter's Newton form."""
    claims = [b for b in BLOCKS if b.polynomial]
    assert {b.name for b in claims} >= {"bifpn", "fpn", "neck_cbam", "ssh", "shuffle", "ClassHead"}
    at = arch.sizes(64, 96)
    flat = lambda p: (*p.cost, *p.parts)  # noqa: E731
    for b in claims:
        f = fields_of(cfg)
        field, degree, period = b.polynomial
        step = period if isinstance(period, int) else f[period]
        if not b.present(f) or x < step:
            continue
        base = x % step
        nodes = [base + j * step for j in range(1, degree + 2)]
        prices = [arch.block_price(b, {**f, field: v}, at) for v in nodes]
        for i, got in enumerate(arch.block_price(b, {**f, field: x}, at)):
            want = [Fraction(0)] * len(flat(got))
            for k, node in enumerate(nodes):
                weight = Fraction(1)
                for other in nodes:
                    if other != node:
                        weight *= Fraction(x - other, node - other)
                want = [w + weight * v for w, v in zip(want, flat(prices[k][i]))]
            assert list(flat(got)) == want, (b.name, x)


def test_blocks_are_described_once():
    with pytest.raises(ValueError, match="described twice"):
        arch._registry(BLOCKS + (BLOCKS[0],))
    assert {b.group for b in BLOCKS} == set(GROUPS) and {b.term for b in BLOCKS} <= set(TERMS)
    with pytest.raises(ValueError, match="role 'stem'"):
        dataclasses.replace(BLOCKS[0], role="stem")
    with pytest.raises(ValueError, match="affine_in 'neck_channels' is not one of the fields it reads"):
        dataclasses.replace(BLOCKS[0], affine_in="neck_channels")
    with pytest.raises(ValueError, match="polynomial field 'neck_channels' is not one of the fields it reads"):
        dataclasses.replace(BLOCKS[0], polynomial=arch.Polynomial("neck_channels", 2))
    with pytest.raises(ValueError, match="polynomial degree 0 is not an int >= 1"):
        dataclasses.replace(arch.get_block("ssh"), polynomial=arch.Polynomial("ssh_channels", 0))
    with pytest.raises(ValueError, match="polynomial period 0 is not an int >= 1 or a field"):
        dataclasses.replace(arch.get_block("ssh"), polynomial=arch.Polynomial("ssh_channels", 2, 0))
    with pytest.raises(KeyError, match="no block 'csp'"):
        arch.get_block("csp")


@pytest.mark.parametrize("name", ["featherface-official", "retinaface-mnet025", "featherface-489k"])
def test_inference_walks_the_same_blocks(name):
    """Each block reads its own fields back off the state dict of the model built from them."""
    cfg = get_preset(name)
    assert infer_config(build_model(cfg).state_dict()) == cfg


# ---- a block type the tool has never seen: a 1x1 conv after each SSH ----------------------------

@lru_cache(maxsize=64)
def _price_mixer(c: int, hw: int) -> Priced:
    return Priced(conv(c, c, 1, hw), Parts())


def _mixer(c: int) -> nn.Module:
    return nn.Conv2d(c, c, 1, bias=False)


MIXER = Block("mixer", "ssh", "level", f"{__name__}:_mixer", ("mix1", "mix2", "mix3"),
              args=lambda f, i: (ssh_width(f, i),), reads=("ssh_channels",), price=_price_mixer,
              term="level")


def _clear_all() -> None:
    """Every memoised count, price and solver table (they were made with the old BLOCKS)."""
    from featherface_tune.tuner import solve

    clear_caches()
    for f in vars(solve).values():
        getattr(f, "cache_clear", lambda: None)()


def test_a_new_block_is_one_entry(monkeypatch):
    """Appending one Block (its module, its price) is all it takes: the builder builds and applies
    it, the counter counts it, checkpoint keys name it, the solver's proof and repair price it in its
    term, and the search space needs no change; nothing else changes."""
    from featherface_tune.tuner.solve import Repairer, prove
    from featherface_tune.tuner.space import apply_fixes, default_space, knobs_from_config

    cfg = get_preset("featherface-official")
    before = count(cfg, 64, 64)
    at = BLOCKS.index(arch.get_block("ssh")) + 1
    space = apply_fixes(default_space(), [f"{k}={str(v).lower()}" for k, v in cfg.to_dict().items()
                                          if k not in ("ssh_channels", "backbone_cbam_reduction", "backbone_width")])
    monkeypatch.setattr(arch, "BLOCKS", BLOCKS[:at] + (MIXER,) + BLOCKS[at:])
    _clear_all()
    try:
        model = build_model(cfg)
        after = count(cfg, 64, 64)
        assert sum(p.numel() for p in model.parameters()) == after.params == before.params + 3 * 64 * 64
        assert after.modules["ssh"].macs - before.modules["ssh"].macs == 64 * 64 * (8 * 8 + 4 * 4 + 2 * 2)
        assert {"mix1.weight", "mix2.weight", "mix3.weight"} <= set(model.state_dict())
        calls: list[int] = []
        model.mix2.register_forward_hook(lambda m, i, o: calls.append(o.shape[-1]))
        model.eval()(torch.zeros(1, 3, 64, 64))
        assert calls == [4]  # applied to P4 (64 / 16), in forward order
        # the solver: the official config, mixer included, is in the window of its own count
        proof = prove(space, after.params, 0, input_size=(64, 64))
        assert proof.exact is not None and proof.certificate.in_window >= 1
        listed = {tuple(sorted(proof.exact.knobs(i).items())) for i in range(len(proof.exact.params))}
        assert tuple(sorted(knobs_from_config(cfg).items())) in listed
        for i in range(len(proof.exact.params)):
            assert count(config_of(proof.exact.knobs(i)), 64, 64).params == after.params
        sol = Repairer(space, after.params, 0, (64, 64), exact=proof.exact).repair(knobs_from_config(cfg))
        assert sol is not None and sol.params == after.params and sol.macs == after.macs and sol.distance == 0
    finally:
        monkeypatch.undo()
        _clear_all()
    assert count(cfg, 64, 64) == before
