"""Evaluating budgets: count each budget's model, compare with its bounds and its recorded baseline.

Results are frozen records; nothing here prints or writes files (see `formats` and `file`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from featherface_tune.budgets.file import load_budget
from featherface_tune.budgets.schema import Bound, Budget, BudgetFileError
from featherface_tune.counter.analytic import CountResult, count

PASS = "pass"
FAIL = "fail"


@dataclass(frozen=True)
class MetricCheck:
    """One measured count against its bound."""

    metric: str  # "params" or "macs"
    bound: Bound
    measured: int

    @property
    def ok(self) -> bool:
        return self.bound.contains(self.measured)

    @property
    def delta(self) -> int:
        return self.bound.delta(self.measured)

    @property
    def verdict(self) -> str:
        return PASS if self.ok else FAIL

    @property
    def keys(self) -> tuple[str, ...]:
        """The budget-file keys this check comes from (for pointing at a line)."""
        return (f"{self.metric}.target", f"{self.metric}.max", f"{self.metric}.min", self.metric)


@dataclass(frozen=True)
class ModuleDiff:
    """One module's count now against the recorded baseline (None: not recorded / not comparable)."""

    module: str
    params: int
    macs: int
    baseline_params: Optional[int]
    baseline_macs: Optional[int]

    @property
    def params_delta(self) -> Optional[int]:
        return None if self.baseline_params is None else self.params - self.baseline_params

    @property
    def macs_delta(self) -> Optional[int]:
        return None if self.baseline_macs is None else self.macs - self.baseline_macs

    @property
    def moved(self) -> bool:
        return bool(self.params_delta) or bool(self.macs_delta) or self.baseline_params is None


@dataclass(frozen=True)
class Verification:
    """The built model's numel() and fvcore counts agree with the analytic count, or where not."""

    ok: bool
    numel_params: int
    fvcore_macs: int
    mismatches: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateResult:
    budget: Budget
    count: CountResult
    checks: tuple[MetricCheck, ...]
    modules: tuple[ModuleDiff, ...]  # empty when the budget has no recorded baseline
    macs_comparable: bool = True  # baseline MACs were recorded at this input size and DCN convention
    verification: Optional[Verification] = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and (self.verification is None or self.verification.ok)

    @property
    def verdict(self) -> str:
        return PASS if self.ok else FAIL

    @property
    def has_baseline(self) -> bool:
        return self.budget.baseline is not None

    @property
    def moved(self) -> tuple[ModuleDiff, ...]:
        return tuple(d for d in self.modules if d.moved)

    def reasons(self) -> list[str]:
        """One line per broken bound or failed cross-check (empty when it passes)."""
        out = []
        for c in self.checks:
            if not c.ok:
                what = "params" if c.metric == "params" else f"MACs at {_size(self.budget.input_size)}"
                hint = ""
                dense = c.measured - self.count.dcn_offset_macs  # the figure without the DCN offset convs
                if (c.metric != "params" and self.budget.dcn_macs == "full" and "macs.dcn_macs" not in self.budget.lines
                        and self.count.dcn_offset_macs and c.bound.contains(dense)):
                    # budgets written before 0.2.0 meant dense MACs without saying so: the hint only
                    # where dense MACs would pass (not when the model itself changed)
                    hint = ("; MACs count every convolution by default since 0.2.0 (the DCN offset and modulator "
                            "convs too): add dcn_macs = \"dense\" under [macs] for the old figures")
                out.append(f"{what} ({self.budget.convention}) {c.measured:,} outside budget {c.bound.describe()} "
                           f"(delta {c.delta:+,}){hint}")
        if self.verification is not None and not self.verification.ok:
            out.append("cross-check failed: " + "; ".join(self.verification.mismatches))
        return out

    def moved_summary(self, update: str = "") -> str:
        """`neck -28,042 params, ssh +1,234 params` or a note that there is no baseline (with
        `update`, how to record one: the command layer's line)."""
        then = f" (run `{update}`)" if update else ""
        if not self.has_baseline:
            return f"no recorded baseline{then}"
        recorded = self.budget.baseline.convention  # type: ignore[union-attr]
        if recorded != self.budget.convention:
            return (f"baseline recorded in the {recorded} convention, the budget counts in "
                    f"{self.budget.convention}{then}")
        parts = []
        for d in self.moved:
            if d.baseline_params is None:
                parts.append(f"{d.module} (not in baseline)")
                continue
            bits = []
            if d.params_delta:
                bits.append(f"{d.params_delta:+,} params")
            if d.macs_delta:
                bits.append(f"{d.macs_delta:+,} MACs")
            parts.append(f"{d.module} {' '.join(bits)}")
        if not parts and not self.macs_comparable:
            base = self.budget.baseline
            return (f"baseline MACs recorded at {_size(base.input_size)} with dcn_macs={base.dcn_macs}: "  # type: ignore[union-attr]
                    "not compared")
        return ", ".join(parts) if parts else "no module moved from the recorded baseline"


@dataclass(frozen=True)
class GateReport:
    results: tuple[GateResult, ...]
    errors: tuple[BudgetFileError, ...]

    @property
    def passed(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        """2: a budget file is invalid; 1: a budget is violated; 0: all pass."""
        if self.errors:
            return 2
        return 1 if self.failed else 0


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def module_diffs(budget: Budget, result: CountResult) -> tuple[tuple[ModuleDiff, ...], bool]:
    """Per-module diff of `result` against the budget's baseline (and whether MACs compare)."""
    base = budget.baseline
    if base is None:
        return (), True
    same_convention = base.convention == budget.convention  # params: the DCN MAC choice changes MACs only
    comparable = base.counting == budget.counting and base.input_size == result.input_size
    diffs = []
    for name, (params, macs) in result.modules.items():  # baselines name no other module
        rec = base.modules.get(name)
        diffs.append(ModuleDiff(
            module=name,
            params=params,
            macs=macs,
            baseline_params=rec.params if rec and same_convention else None,
            baseline_macs=(rec.macs if rec and comparable else None),
        ))
    return tuple(diffs), comparable


def verify(budget: Budget) -> Verification:
    """Build the model and cross-check the analytic count (numel() and fvcore, per module)."""
    from featherface_tune.counter.crosscheck import check

    h, w = budget.input_size
    res = check(budget.config, h, w, dcn_macs=budget.dcn_macs)  # the true count, whatever the convention
    return Verification(ok=res.ok, numel_params=res.numel_params, fvcore_macs=res.fvcore_macs,
                        mismatches=tuple(res.mismatches()))


def evaluate(budget: Budget, with_verify: bool = False) -> GateResult:
    """Count the budget's model analytically (and optionally cross-check it) and judge it."""
    h, w = budget.input_size
    result = count(budget.config, h, w, convention=budget.counting)
    checks = [MetricCheck("params", budget.params, result.params)]
    if budget.macs is not None:
        checks.append(MetricCheck("macs", budget.macs, result.macs))
    diffs, comparable = module_diffs(budget, result)
    return GateResult(budget=budget, count=result, checks=tuple(checks), modules=diffs,
                      macs_comparable=comparable,
                      verification=verify(budget) if with_verify else None)


def _check_verifiable(budget: Budget) -> None:
    """Verifying builds the model at the budget's input size: refuse one beyond what fits in memory."""
    from featherface_tune.bounds import check_build_size
    from featherface_tune.errors import InputError

    h, w = budget.input_size
    try:
        check_build_size(h, w, f"the cross-check at macs.input_size [{h}, {w}]", budget.config)
    except InputError as exc:
        raise BudgetFileError(budget.shown, str(exc), "macs.input_size", budget.line("macs.input_size")) from None


def run_gate(paths: Iterable[str | Path], with_verify: bool = False) -> GateReport:
    """Load and evaluate every budget file; invalid files are collected, not raised."""
    results: list[GateResult] = []
    errors: list[BudgetFileError] = []
    for path in paths:
        try:
            budget = load_budget(path)
            if with_verify:
                _check_verifiable(budget)
        except BudgetFileError as exc:
            errors.append(exc)
            continue
        results.append(evaluate(budget, with_verify))
    return GateReport(results=tuple(results), errors=tuple(errors))


def baseline_record(result: CountResult) -> dict[str, Any]:
    """The `[baseline]` table that records `result` (plain TOML-ready values)."""
    return {
        "input_size": list(result.input_size),
        "dcn_macs": result.dcn_macs,
        "convention": result.convention,
        "params": result.params,
        "macs": result.macs,
        "modules": result.to_json()["modules"],
    }
