"""Shared test fixtures: where the optional real data (../shared beside the repo) lives, and a
hypothesis strategy for valid FeatherFace configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# one thread per pytest-xdist worker (CI runs one worker per core), else at most 2
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads())))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # the commands run in this process (CliRunner) set torch's threads from OMP_NUM_THREADS, else from
    # the load average, which lags: on an idle machine the first tests got both cores while the other
    # worker ran, and this worker's later tests kept them. The processes tests start inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# searches that only need a sampled objective measure latency for at most 2 s a config (the CLIs the
# tests start inherit it); tests of the measurement itself pass their own cap
os.environ.setdefault("FEATHERFACE_TUNE_LATENCY_SECONDS", "2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, the files with the most `slow` tests first (collection order otherwise).

    `--dist loadfile --no-loadscope-reorder` (.ci/run) hands whole files to the workers in this
    order, so the long ones start early and the many short ones even out where the workers end.
    xdist's own order (most tests first) left long files with few tests, such as the ONNX export
    ones, to the end, where one worker ran them while the other had finished. Every worker sorts
    the same collection the same way, as xdist requires."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        slow[path] = slow.get(path, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.nodeid.split("::", 1)[0]])  # stable: file and test order kept


@pytest.fixture
def cheap_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    """Latency measurement replaced by a cheap deterministic stand-in (tests/cheap_latency.py), for
    tests that need a sampled objective rather than a measurement."""
    import featherface_tune.deploy.latency as latency
    from cheap_latency import fake_measure

    monkeypatch.setattr(latency, "measure", fake_measure)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


def shared_file(*parts: str) -> Path:
    """A file under ../shared, or skip the test cleanly when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (shared/ exists only on developer and CI machines)")
    return p


@pytest.fixture(autouse=True)
def _latency_tables_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Latency tables go to the user's cache ($XDG_CACHE_HOME): never the real one in tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
