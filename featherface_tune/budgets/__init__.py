"""Budget files and the CI budget gate: loading (`file`), evaluating (`gate`), presenting (`formats`)."""

from featherface_tune.budgets.file import discover, load_budget, write_baseline
from featherface_tune.budgets.gate import GateReport, GateResult, evaluate, run_gate
from featherface_tune.budgets.schema import Bound, Budget, BudgetFileError, Tolerance

__all__ = [
    "Bound", "Budget", "BudgetFileError", "GateReport", "GateResult", "Tolerance",
    "discover", "evaluate", "load_budget", "run_gate", "write_baseline",
]
