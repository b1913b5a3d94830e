"""Absurd numbers are refused where they enter, with the rule in a one-line message, before they reach
numpy, torch, the allocator or a loop that never ends."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error

BIG = str(10**30)
HUGE_SEED = str(2**70)

CASES = {
    "search target 10**30": (("search", "--target", BIG), "--target", "at most 1,000,000,000,000"),
    "search tolerance 10**30": (("search", "--target", "489000", "--tolerance", BIG), "--tolerance", "at most"),
    "search tolerance 1e300%": (("search", "--target", "489000", "--tolerance", "1e300%"), "--tolerance", "100%"),
    "search seed -1": (("search", "--target", "489000", "--seed", "-1"), "--seed -1", "0..4294967295"),
    "search seed 2**70": (("search", "--target", "489000", "--seed", HUGE_SEED), "--seed", "0..4294967295"),
    "train seed -1": (("train", "--data", "nowhere", "--seed", "-1"), "--seed -1", "0..4294967295"),
    "train seed 2**70": (("train", "--data", "nowhere", "--seed", HUGE_SEED), "--seed", "0..4294967295"),
    "demo-data seed -1": (("demo-data", "{tmp}/d", "--seed", "-1"), "--seed -1", "0..4294967295"),
    "demo-data seed 2**70": (("demo-data", "{tmp}/d", "--seed", HUGE_SEED), "--seed", "0..4294967295"),
    "demo-data train 10**9": (("demo-data", "{tmp}/d", "--train", str(10**9)), "--train", "at most 100,000"),
    "train warmup nan": (("train", "--data", "nowhere", "--warmup", "nan"), "--warmup nan", "finite"),
    "train warmup inf": (("train", "--data", "nowhere", "--warmup", "inf"), "--warmup inf", "finite"),
    "train warmup -5": (("train", "--data", "nowhere", "--warmup", "-5"), "--warmup -5", ">= 0"),
    "train weight-decay -1": (("train", "--data", "nowhere", "--weight-decay", "-1"), "--weight-decay", ">= 0"),
    "train image-size 100000": (("train", "--data", "nowhere", "--image-size", "100000"), "--image-size", "4096x4096"),
    "count width 1e308": (("count", "--set", "backbone_width=1e308"), "backbone_width", "at most 4"),
    "count width 1e300": (("count", "--set", "backbone_width=1e300"), "backbone_width", "at most 4"),
    "count check 100000": (("count", "--input-size", "100000", "100000", "--check"), "--input-size", "4096x4096"),
    "count check huge widths": (("count", "--set", "neck_channels=1000000000", "--check"), "parameters",
                                "builds in memory"),
    "search latency 100000": (("search", "--target", "489000", "--objective", "latency", "--latency-mode", "sampled", "--input-size", "100000",
                               "100000"), "--objective latency", "4096x4096"),
    "count deep --set": (("count", "--set", "ssh_channels=" + "[" * 50_000 + "]" * 50_000), "nested too deeply"),
    "search space 10**12 values": (("search", "--target", "489000", "--space", "{tmp}/wide.toml"), "neck_channels",
                                   "at most 4,096"),
}


@pytest.mark.parametrize("case", CASES)
def test_absurd_value_is_refused_with_the_rule(cli, tmp_path: Path, case: str):
    args, *needles = CASES[case]
    (tmp_path / "wide.toml").write_text(f"neck_channels = {{ min = 1, max = {10**12} }}\n", encoding="utf-8")
    t0 = time.perf_counter()
    r = cli(*(a.format(tmp=tmp_path) for a in args))
    assert time.perf_counter() - t0 < 20
    assert_one_line_error(r, 2, *needles)


@pytest.mark.parametrize("width", [4 * 10**12, 4 * 999_999_999_989, 2**62])
def test_huge_ssh_width_with_seven_shuffle_groups_finishes(cli, tmp_path: Path, width: int):
    """The nearest-valid-divisor search used to walk every integer up to the width."""
    t0 = time.perf_counter()
    r = cli("count", "--set", f"ssh_channels={width}", "--set", "shuffle_groups=7")
    assert_one_line_error(r, 2, "shuffle_groups=7", "nearest valid")
    budget = tmp_path / "b.toml"
    budget.write_text(f"[model]\nssh_channels = {width}\nshuffle_groups = 7\n[params]\nmax = 1\n", encoding="utf-8")
    r = cli("gate", budget)
    assert r.exit_code == 2 and "shuffle_groups" in r.stderr
    assert time.perf_counter() - t0 < 10


def test_gate_verify_refuses_an_input_it_cannot_build(cli, tmp_path: Path):
    budget = tmp_path / "b.toml"
    budget.write_text('[model]\npreset = "featherface-official"\n[params]\nmax = 600000\n'
                      "[macs]\ninput_size = [100000, 100000]\nmax = 10000000000000000\n", encoding="utf-8")
    assert cli("gate", budget).exit_code == 0  # the analytic count has no size limit
    r = cli("gate", budget, "--verify", "--format", "github")
    assert r.exit_code == 2
    assert "::error file=" in r.stdout and "4096x4096" in r.stdout and "line=6" in r.stdout


def test_heartbeat_grace_shorter_than_interval_is_refused(cli, tmp_path: Path, narrow_space: Path):
    r = cli("search", "--target", "489000", "--tolerance", "5%", "--space", narrow_space, "--trials", "1",
            "--storage", f"sqlite:///{tmp_path / 's.db'}", env={"FEATHERFACE_TUNE_HEARTBEAT": "5,1"})
    assert_one_line_error(r, 2, "FEATHERFACE_TUNE_HEARTBEAT", "longer than the heartbeat interval")


def test_demo_data_checks_free_disk_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import shutil
    from collections import namedtuple

    from featherface_tune.data.demo import write_demo
    from featherface_tune.errors import InputError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(InputError, match="free"):
        write_demo(tmp_path / "d", train=1000, val=10)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. "
                                                             "DefaultCPUAllocator: can't allocate memory: you tried "
                                                             "to allocate 120000000000 bytes.")])
def test_allocator_failure_is_one_line(cli, monkeypatch: pytest.MonkeyPatch, exc: BaseException):
    """A size the bounds let through but this machine cannot hold: one line, exit 1, no traceback."""
    import featherface_tune.counter.analytic as analytic

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise exc

    monkeypatch.setattr(analytic, "count", boom)
    assert_one_line_error(cli("count"), 1, "out of memory")
