"""Planning a budget search, before any study is opened: the arguments checked (`check_arguments`,
which imports neither Optuna nor torch, so a usage error costs neither), then the space, the
objectives, the reference config, the proof of reachability and the study's spec (`make_plan`).

Errors name the argument (`field`), its value and the rule; the command layer spells the flag."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from featherface_tune.counter.conventions import Convention, get_convention
from featherface_tune.errors import ConfigError, InputError
from featherface_tune.models.config import FeatherFaceConfig, from_mapping
from featherface_tune.tuner import records as R
from featherface_tune.tuner import registry
from featherface_tune.tuner.objectives import parse_objectives
from featherface_tune.tuner.solve import NoConfigInWindow, Proof, Repairer, check_reachable, check_values, prove
from featherface_tune.tuner.space import KNOBS, SearchSpace, applies, default_space, knobs_from_config, load_space

from featherface_tune.training.spec import Fidelity  # torch-free

DEFAULT_FINALISTS = 5  # best latency predictions timed whole (plus the macs optimum and the closest answer)
LATENCY_MODES = ("model", "sampled")
NAME_LIMIT = 512  # characters of a study name (Optuna's column)


class Notes(list[str]):
    """The one-line diagnostics of a search: kept (`SearchResult.notes`) and passed on to `note`."""

    def __init__(self, note: Callable[[str], None] | None):
        super().__init__()
        self.note = note

    def __call__(self, text: str) -> None:
        self.append(text)
        if self.note is not None:
            self.note(text)


# ---- checks --------------------------------------------------------------------------------------

def check_arguments(*, target: Any, tolerance: Any, max_macs: Any, trials: Any, timeout: Any, top: Any, seed: Any,
                    storage: Any, study: Any, input_size: Any, proxy_data: Any,
                    needs_proxy_data: Mapping[str, Any] | None = None, objective: Any = None, proxy: Any = None,
                    reference: Any = R.DEFAULT_REFERENCE, dcn_macs: Any = "full", convention: Any = "numel",
                    pruner: Any = "median", latency_runtime: Any = None, latency_threads: Any = 1,
                    latency_mode: Any = "model", finalists: Any = DEFAULT_FINALISTS) -> tuple[int, tuple[int, int]]:
    """Every check of `search`'s arguments, the one place both the API and `featherface-tune search`
    check them: InputError naming the parameter (`trials='5'`, not a TypeError deep inside). Returns
    the tolerance in parameters (a percent string such as "0.1%" is read as the command reads it) and
    the input size. `needs_proxy_data`: arguments given that only proxy training uses (the command's
    proxy options, the API's `fidelity`), refused without `proxy_data`. Imports neither Optuna nor torch."""
    tolerance = _check_budget(target, tolerance, max_macs)
    _check_run(trials, top, timeout, seed)
    _check_names(storage, study)
    size = _check_input_size(input_size)
    _check_proxy(proxy_data, needs_proxy_data or {})
    _check_counting(dcn_macs, convention, pruner)
    names, _ = objective_names(objective, proxy is not None or proxy_data is not None)
    if "latency" in names:  # it resolves the reference too
        _check_latency(size, reference, latency_runtime, latency_threads, latency_mode, finalists)
    elif "closest" in names:
        reference_config(reference)
    return tolerance, size


def _check_budget(target: Any, tolerance: Any, max_macs: Any) -> int:
    from featherface_tune.bounds import MAX_PARAMS, check_int
    from featherface_tune.tolerance import search_window

    if isinstance(target, bool) or not isinstance(target, int) or not 1 <= target <= MAX_PARAMS:
        raise InputError(field="target", value=target, rule=f"must be a positive parameter count, at most {MAX_PARAMS:,}")
    if max_macs is not None:
        check_int(max_macs, "max_macs", 1, 10**18)
    return search_window(tolerance, target, "tolerance")  # a count, or a percent string such as "0.1%"


def _check_run(trials: Any, top: Any, timeout: Any, seed: Any) -> None:
    from featherface_tune.bounds import MAX_TOP, MAX_TRIALS, check_int, check_seed

    check_int(trials, "trials", 1, MAX_TRIALS)
    check_int(top, "top", 1, MAX_TOP, "each of the top optima of a solved search is evaluated as a trial")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not (math.isfinite(timeout) and timeout > 0)):
        raise InputError(field="timeout", value=timeout, rule="must be a positive, finite number of seconds")
    check_seed(seed)


def _check_names(storage: Any, study: Any) -> None:
    from featherface_tune.tuner.storage_url import check_storage_url

    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise InputError(field="storage", value=storage,
                         rule="give a storage URL (a non-empty string), or leave it out for the default")
    if storage is not None:  # its form and folder now, before the proof (opening it comes later)
        check_storage_url(storage)
    if study is not None and (not isinstance(study, str) or not study.strip() or len(study) > NAME_LIMIT):
        raise InputError(field="study", value=study,
                         rule=f"give a name of 1 to {NAME_LIMIT} characters, or leave it out for the default")


def _check_input_size(input_size: Any) -> tuple[int, int]:
    from featherface_tune.bounds import check_input_side

    if not isinstance(input_size, (tuple, list)) or len(input_size) != 2:
        raise InputError(field="input_size", value=input_size, rule="give (height, width), two integers")
    return check_input_side(input_size[0], input_size[1], "input_size")


def _check_proxy(proxy_data: Any, needs_proxy_data: Mapping[str, Any]) -> None:
    if proxy_data is not None and not Path(proxy_data).is_dir():
        raise InputError(field="proxy_data", value=str(proxy_data), rule="not a directory (a WIDERFace-layout dataset)")
    given = {k: v for k, v in needs_proxy_data.items() if v is not None}
    if proxy_data is None and given:
        name, value = next(iter(given.items()))
        raise InputError(field=name, value=value, rule="proxy training options need {proxy_data} (the dataset to "
                         "train on)", refs=("proxy_data",))


def _check_counting(dcn_macs: Any, convention: Any, pruner: Any) -> None:
    from featherface_tune.training.spec import check_pruner

    try:
        get_convention(convention, dcn_macs)  # the pair's one check
    except ConfigError as exc:  # an argument of search: InputError, as every other argument's
        raise InputError(field=exc.field, value=exc.value, rule=exc.rule, refs=exc.refs) from None
    check_pruner(pruner)


def _check_latency(size: tuple[int, int], reference: Any, runtime: Any, threads: Any, mode: Any, finalists: Any) -> None:
    """The latency objective's options, and the model it builds at `size` fitting in memory (estimated
    on the reference config: the configs of the space vary around it)."""
    from featherface_tune.bounds import MAX_THREADS, MAX_TOP, check_build_size, check_int
    from featherface_tune.deploy.latency import RUNTIMES

    if runtime is not None and runtime not in RUNTIMES:
        raise InputError(field="latency_runtime", value=runtime, rule=f"use {' or '.join(RUNTIMES)}")
    check_int(threads, "latency_threads", 1, MAX_THREADS)
    if mode not in LATENCY_MODES:
        raise InputError(field="latency_mode", value=mode, rule=f"use {' or '.join(LATENCY_MODES)}")
    check_int(finalists, "finalists", 1, MAX_TOP, "each finalist is timed")
    check_build_size(size[0], size[1], cfg=reference_config(reference)[0], because="with {objective} latency",
                     refs=("objective",), field="input_size", value=(size[0], size[1]))


# ---- the plan ------------------------------------------------------------------------------------

def objective_names(objective: Any, proxy: bool) -> tuple[tuple[str, ...], dict[str, Callable[..., float]]]:
    """Objective names (built-ins and callables' names) and the callables by name."""
    if objective is None or isinstance(objective, str):
        return parse_objectives(objective, proxy), {}
    items = list(objective) if isinstance(objective, (list, tuple)) else [objective]
    if not items:
        raise InputError(field="objective", rule="give at least one objective")
    names: list[str] = []
    fns: dict[str, Callable[..., float]] = {}
    for item in items:
        if isinstance(item, str):
            names += [n for n in parse_objectives(item, proxy) if n not in names]
        elif callable(item):
            base = getattr(item, "__name__", "objective").strip("<>") or "objective"
            n, i = base, 2
            while n in names or registry.get(n) is not None:
                n, i = f"{base}_{i}", i + 1
            names.append(n)
            fns[n] = item
        else:
            raise InputError(field="objective", value=repr(item),
                             rule="give a built-in name or a callable f(config) -> float")
    if proxy and "proxy_ap" not in names:
        names.append("proxy_ap")
    return tuple(names), fns


def reference_config(reference: Any) -> tuple[FeatherFaceConfig, str]:
    """The reference config of `closest` (a config, a mapping, a preset name or a config file) and how
    notes name it."""
    from featherface_tune.models.presets import get_preset, resolve_config

    if isinstance(reference, FeatherFaceConfig):
        return reference, "the reference config"
    if isinstance(reference, Mapping):
        return from_mapping(dict(reference), source="reference"), "the reference config"
    text = str(reference)
    if Path(text).is_file():
        return resolve_config(config_file=text), f"reference {text!r}"
    if "/" in text or text.lower().endswith((".toml", ".json")):
        raise InputError(field="reference", value=text, rule="config file does not exist (and it is not a preset name)")
    from featherface_tune.models.presets import preset_names

    if text not in preset_names():
        raise InputError(field="reference", value=text, rule=f"unknown preset; known presets: {', '.join(preset_names())}")
    return get_preset(text), f"reference {text!r}"


def reference_in_space(reference: Any, space: SearchSpace, tell: Callable[[str], None]) -> FeatherFaceConfig:
    """The reference config; a note when the space cannot express some of its knobs."""
    cfg, label = reference_config(reference)
    knobs = knobs_from_config(cfg)
    outside = [f"{k}={knobs[k]!r}" for k in KNOBS if applies(k, knobs) and knobs[k] not in space.domain(k).values]
    if outside:
        tell(f"{label}: the space cannot express {', '.join(outside)}; closest measures the distance to it anyway")
    return cfg


@dataclass
class Plan:
    """What a search runs: the checked arguments, the space, the objectives, the proof and the spec."""

    target: int
    tolerance: int
    size: tuple[int, int]
    counting: Convention
    max_macs: int | None
    space: SearchSpace
    names: tuple[str, ...]
    callables: dict[str, Callable[..., float]]
    proxy: Any
    reference: FeatherFaceConfig | None  # the reference config, resolved once (closest, latency's finalists)
    ref_cfg: FeatherFaceConfig | None  # the reference of the closest objective (None without it)
    proof: Proof
    spec: R.StudySpec
    repairer: Repairer
    latency_runtime: str | None = None
    latency_model: Any = None
    fidelity: Fidelity | None = None

    def context(self, *, model: bool = True) -> registry.Context:
        """The registry context of the analytic objectives (the latency model with `model`)."""
        ref = knobs_from_config(self.ref_cfg) if self.ref_cfg is not None else None
        return registry.Context(self.size, self.counting, ref, self.latency_model if model else None)


def make_plan(target: int, tolerance: int, size: tuple[int, int], *, space: Any, objective: Any, proxy: Any,
              proxy_data: Path | None, reference: Any, counting: Convention, max_macs: int | None,
              latency_runtime: str | None, latency_threads: int, latency_mode: str, fidelity: Fidelity | None,
              tell: Callable[[str], None]) -> Plan:
    """The plan of a checked search: raises NoConfigInWindow (with `.certificate`) when the space
    provably holds no config in the window (or none within `max_macs`)."""
    sp = _space(space)
    if proxy is None and proxy_data is not None:  # proxy training on the data given
        from featherface_tune.tuner.objectives import load_proxy

        proxy = load_proxy(Path(proxy_data))
    names, callables = objective_names(objective, proxy is not None)
    if "latency" in names:
        latency_runtime = _latency_runtime(latency_runtime, latency_threads, latency_mode, size, tell)
    ref = reference_in_space(reference, sp, tell) if "closest" in names or "latency" in names else None
    ref_cfg = ref if "closest" in names else None
    proof = _proof(sp, target, tolerance, size, counting, max_macs, tell)
    spec = R.StudySpec(target, tolerance, size, names, max_macs, sp.to_dict(), counting=counting,
                       reference=ref_cfg.to_dict() if ref_cfg is not None else None)
    repairer = Repairer(sp, target, tolerance, size, counting, max_macs, proof.exact, proof.hit_structures)
    return Plan(target, tolerance, size, counting, max_macs, sp, names, callables, proxy, ref,
                ref_cfg, proof, spec, repairer, latency_runtime, fidelity=fidelity)


def _space(space: SearchSpace | str | Path | None) -> SearchSpace:
    from featherface_tune.bounds import check_space_size
    from featherface_tune.tuner.space import SSH_KNOBS, STRUCTURE_KNOBS

    if space is None:
        sp = default_space()
    elif isinstance(space, SearchSpace):
        sp = space
    elif isinstance(space, (str, Path)):
        sp = load_space(space)
    else:
        raise InputError(field="space", value=type(space).__name__, rule="give a SearchSpace or a TOML file path")
    check_space_size({k: len(sp.domain(k).values) for k in KNOBS}, STRUCTURE_KNOBS, SSH_KNOBS)
    return sp


def _latency_runtime(runtime: str | None, threads: int, mode: str, size: tuple[int, int],
                     tell: Callable[[str], None]) -> str:
    """The latency objective's runtime (the default resolved; torch required: every trial builds its model)."""
    from featherface_tune.deploy.latency import check_runtime
    from featherface_tune.extras import require

    require("torch", "the latency objective")
    runtime = check_runtime(runtime)
    h, w = size
    tell(f"latency: {runtime}, {threads} thread(s), batch 1 at {h}x{w}, "
         + ("median to +/-3 % (95 %)" if mode == "sampled" else "per-block latency model, finalists timed"))
    return runtime


def _proof(sp: SearchSpace, target: int, tolerance: int, size: tuple[int, int], counting: Convention,
           max_macs: int | None, tell: Callable[[str], None]) -> Proof:
    """The exhaustive count of the window (`solve.prove`), refusing an empty window, and its note."""
    proof = prove(sp, target, tolerance, input_size=size, counting=counting, max_macs=max_macs)
    cert = proof.certificate
    check_values(cert)
    try:
        check_reachable(cert)
        _check_max_macs(proof, max_macs)
    except NoConfigInWindow as exc:
        exc.certificate = cert  # type: ignore[attr-defined]
        raise
    window = R.window_text(target, tolerance)
    if cert.complete:
        tell(f"space: {cert.configs:,} valid configs, {cert.in_window:,} with {window} params "
             f"(counted exhaustively over {cert.structures:,} structures in {cert.seconds:.1f} s)")
    else:
        tell(f"space: more than {cert.structures:,} structures; too large to count exhaustively, "
             "searching without a proof of reachability")
    return proof


def _check_max_macs(proof: Proof, max_macs: int | None) -> None:
    if max_macs is None or proof.exact is None or len(proof.exact):
        return
    c = proof.certificate
    raise NoConfigInWindow(f"no config with {R.window_text(c.target, c.tolerance)} params has MACs <= {max_macs:,}; "
                           f"the fewest in the window: {proof.least_macs:,} (proof: {c.evidence()})")


def add_latency_model(plan: Plan, mode: str, given: Any, threads: int,
                      progress: Callable[[str, int, int], None] | None, tell: Callable[[str], None]) -> None:
    """The latency model of a `model`-mode latency search (`given`, or the cached per-block table,
    extended and validated on first use, covering every exact config); none when the window is too
    large to list (then every sampled trial is measured)."""
    if "latency" not in plan.names or mode != "model":
        return
    ex = plan.proof.exact
    if ex is None:
        tell("latency: the window holds too many configs to list; measuring sampled trials instead")
        return
    if given is not None:
        plan.latency_model = given
        return
    from featherface_tune.deploy.latency_table import LatencyModel, get_table

    cfgs = [ex.config(i) for i in range(len(ex))]
    plan.latency_model = LatencyModel(get_table(cfgs, plan.latency_runtime or "torch", threads, plan.size,
                                                note=tell, progress=progress))
