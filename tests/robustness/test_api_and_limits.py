"""The Python API checks what the CLI checks and raises the project's errors (FeatherFaceError:
InputError for arguments, ConfigError for config rules) naming the parameter, never a TypeError or
OverflowError from deep inside; integers beyond the bounds of `featherface_tune.bounds` are refused
wherever they come from (options, config files, budgets, plan files); a damaged calibration folder is
one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from featherface_tune.errors import ConfigError, FeatherFaceError, InputError

HUGE = 10**40


@pytest.mark.parametrize("kwargs,needle", [
    ({"tolerance": "0.1%x"}, "tolerance"), ({"tolerance": 0.5}, "tolerance"), ({"tolerance": "1e2%"}, "half the target"),
    ({"tolerance": 300_000}, "half the target"),
    ({"trials": "5"}, "trials"), ({"trials": HUGE}, "trials"), ({"seed": -1}, "seed"), ({"storage": 5}, "storage"),
    ({"storage": ""}, "storage"), ({"study": ""}, "study"), ({"input_size": "640"}, "input_size"),
    ({"input_size": (640.5, 640.5)}, "input_size"), ({"input_size": (HUGE, 640)}, "input_size"),
    ({"objective": "closest,closest"}, "named twice"), ({"objective": ""}, "empty"), ({"top": 5000}, "top"),
    ({"timeout": float("nan")}, "timeout"), ({"proxy_data": "/nonexistent/data"}, "proxy_data"),
    ({"max_macs": "5"}, "max_macs"),
])
def test_search_api_arguments(kwargs: dict, needle: str):  # type: ignore[type-arg]
    from featherface_tune import search

    with pytest.raises(InputError) as caught:
        search(489_000, **kwargs)
    assert needle in str(caught.value) and "--" not in str(caught.value).split(":")[0]


def test_search_api_target_and_percent_tolerance():
    from featherface_tune import search
    from featherface_tune.tuner.api import check_arguments

    with pytest.raises(InputError, match="^target='489000': must be a positive parameter count"):
        search("489000")  # type: ignore[arg-type]
    args = dict(target=489_000, max_macs=None, trials=5, timeout=None, top=3, seed=None, storage=None,
                study=None, input_size=(640, 640), proxy_data=None)
    assert check_arguments(tolerance="5%", **args) == (24_450, (640, 640))  # a percent, as the CLI reads it
    assert check_arguments(tolerance=500, **args)[0] == 500


@pytest.mark.parametrize("arg", [None, "featherface-official", 5, [1, 2]])
def test_count_api_refuses_what_is_not_a_config(arg: object):
    from featherface_tune import count

    with pytest.raises(InputError, match="^cfg "):
        count(arg)  # type: ignore[arg-type]


def test_count_api_reads_a_mapping_and_checks_sizes():
    from featherface_tune import FeatherFaceConfig, count

    assert count({"neck_channels": 40}).params == count(FeatherFaceConfig(neck_channels=40)).params
    with pytest.raises(ConfigError, match="bogus"):
        count({"bogus": 1})
    for h, w in (("640", 640), (640.0, 640), (HUGE, 640)):
        with pytest.raises(InputError, match="^h, w"):
            count(FeatherFaceConfig(), h, w)  # type: ignore[arg-type]


@pytest.mark.parametrize("source", [{"state_dict": {}}, {}, 5, None])
def test_load_model_api_refuses_a_mapping(source: object):
    from featherface_tune import load_model

    with pytest.raises(InputError, match="^source: give a checkpoint file path"):
        load_model(source)  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value", [("backbone_width", HUGE), ("neck_channels", 2**63), ("ssh_channels", [8, 8, HUGE]),
                                         ("anchors_per_cell", 4096), ("bifpn_repeats", 10**6)])
def test_config_integers_beyond_the_bounds_from_every_source(cli, tmp_path: Path, field: str, value: object):
    from featherface_tune import FeatherFaceConfig

    with pytest.raises(ConfigError, match=field):
        FeatherFaceConfig(**{field: value})  # type: ignore[arg-type]
    text = json.dumps(value)
    assert_one_line_error(cli("count", "--set", f"{field}={text}"), 2, field, "at most")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"{field} = {text}\n", encoding="utf-8")
    assert_one_line_error(cli("count", "--config", cfg), 2, field, "at most")
    budget = tmp_path / "b.toml"
    budget.write_text(f"[model]\n{field} = {text}\n[params]\nmax = 1\n", encoding="utf-8")
    r = cli("gate", budget)
    assert r.exit_code == 2 and field in r.stderr and "Traceback" not in r.output


def test_a_set_integer_of_5000_digits_is_one_line(cli):
    assert_one_line_error(cli("count", "--set", "neck_channels=" + "9" * 5000), 2, "too long")


@pytest.mark.parametrize("args,needle", [
    (("count", "--input-size", "4096", str(10**23)), "--input-size"),
    (("search", "--target", "489000", "--top", "5000"), "--top"),
    (("search", "--target", "489000", "--tolerance", "1e2%"), "half the target"),
    (("search", "--target", "489000", "--study", ""), "--study"),
    (("search", "--target", "489000", "--storage", " "), "--storage"),
    (("search", "--target", "489000", "--objective", ""), "empty"),
    (("search", "--target", "489000", "--objective", "macs,macs"), "named twice"),
    (("train", "--data", "{tmp}", "--epochs", str(HUGE)), "--epochs"),
    (("train", "--data", "{tmp}", "--batch-size", str(HUGE)), "--batch-size"),
    (("train", "--data", "{tmp}", "--workers", "1000000"), "--workers"),
    (("train", "--data", "{tmp}", "--epochs", "2", "--warmup", "1e9"), "--warmup"),
    (("calibrate", "--proxy-data", "{tmp}", "--seeds", str(HUGE)), "--seeds"),
    (("calibrate", "--proxy-data", "{tmp}", "--target", str(HUGE)), "--target"),
    (("calibrate", "--proxy-data", "{tmp}", "--epochs", "1", "--reference-epochs", str(HUGE)), "--reference-epochs"),
])
def test_cli_bounds(cli, tmp_path: Path, args: tuple[str, ...], needle: str):
    assert_one_line_error(cli(*(a.format(tmp=tmp_path) for a in args)), 2, needle)


def test_build_memory_is_estimated_before_allocating():
    from featherface_tune.bounds import check_build_size, estimate_run_bytes, run_memory_limit
    from featherface_tune.models.config import FeatherFaceConfig

    cfg = FeatherFaceConfig()
    assert estimate_run_bytes(cfg, 4096, 4096) > estimate_run_bytes(cfg, 1024, 1024) > 10**9
    check_build_size(640, 640, "x", cfg)  # a normal run passes
    if estimate_run_bytes(cfg, 4096, 4096, batch=8, training=True) > run_memory_limit():
        with pytest.raises(InputError, match="needs about .* GB"):
            check_build_size(4096, 4096, "--image-size 4096", cfg, batch=8, training=True)


@pytest.mark.parametrize("plan_bytes", [
    b"\xff\xfe{not utf-8", b"[" * 100_000 + b"]" * 100_000, b"[1, 2]", b'{"format": 5}',
    json.dumps({"settings": [], "configs": {}}).encode(),
], ids=["not-utf8", "deep", "list", "format", "shapes"])
def test_a_damaged_calibration_folder_is_one_line(cli, tmp_path: Path, plan_bytes: bytes):
    from featherface_tune import calibration as C

    (tmp_path / C.PLAN_FILE).write_bytes(plan_bytes.replace(b'"settings"', f'"format": "{C.PLAN_FORMAT}", "settings"'.encode()))
    assert_one_line_error(cli("report", tmp_path), 2, "plan.json")


def test_damaged_plan_settings_and_runs(cli, tmp_path: Path):
    from featherface_tune import calibration as C

    good = C.CalibrationSettings(data=str(tmp_path), target=489_000, epochs=(1,), reference_epochs=2)
    configs = [{"neck_channels": 40}, {"neck_channels": 44}]
    for settings in ({**good.to_json(), "seeds": HUGE}, {**good.to_json(), "epochs": [[1]]},
                     {**good.to_json(), "bogus": 1}):
        (tmp_path / C.PLAN_FILE).write_text(json.dumps({"format": C.PLAN_FORMAT, "settings": settings,
                                                        "configs": configs}), encoding="utf-8")
        assert_one_line_error(cli("report", tmp_path), 2, "plan.json")
    (tmp_path / C.PLAN_FILE).write_text(json.dumps({"format": C.PLAN_FORMAT, "settings": good.to_json(),
                                                    "configs": configs}), encoding="utf-8")
    runs = [{"key": "x"}, [1, 2], {"key": {"a": 1}, "role": "proxy", "value": 1, "seconds": 1},
            {"key": C.RunSpec(0, "proxy", 1, 0).key, "role": "proxy", "value": 0.5}]  # no seconds
    (tmp_path / C.RUNS_FILE).write_bytes(b"\n".join(json.dumps(r).encode() for r in runs) + b"\n\xff\xfe\n")
    r = cli("report", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["runs"] == []  # no record was whole: each run would be redone


def test_errors_share_one_base():
    assert issubclass(InputError, FeatherFaceError) and issubclass(ConfigError, FeatherFaceError)


@pytest.mark.slow
def test_train_whose_last_batch_is_one_image(cli, tmp_path: Path):
    """At 32 px the deepest map is 1x1: BatchNorm failed on a last batch of one image."""
    from featherface_tune.data.demo import write_demo

    write_demo(tmp_path / "d", train=3, val=1, seed=0)
    r = cli("train", "--data", tmp_path / "d", "--epochs", "1", "--image-size", "32", "--batch-size", "2", "--pretrained", "none",
            "--subset", "3", "--out", tmp_path / "run")  # --out: without it train writes runs/ in the working folder
    assert r.exit_code == 0, r.output
    assert_one_line_error(cli("train", "--data", tmp_path / "d", "--subset", "1e9", "--pretrained", "none"), 2,
                          "--subset")


@pytest.mark.parametrize("kind,needle", [("fifo", "not a regular file"), ("zero", "not a regular file"),
                                         ("boxes", "200,000 boxes"), ("big", "bytes")])
def test_evaluate_refuses_predictions_it_cannot_hold(tmp_path: Path, kind: str, needle: str):
    import os

    from featherface_tune.bounds import MAX_PREDICTION_BYTES
    from featherface_tune.evaluation.widerface import read_predictions

    ev = tmp_path / "pred" / "0--Parade"
    ev.mkdir(parents=True)
    f = ev / "x.txt"
    if kind == "fifo":
        os.mkfifo(f)  # a reader would wait for ever
    elif kind == "zero":
        f.symlink_to("/dev/zero")  # a reader would take gigabytes
    elif kind == "boxes":
        f.write_text("x\n200000\n", encoding="utf-8")
    else:
        with open(f, "wb") as out:
            out.truncate(MAX_PREDICTION_BYTES + 1)
    with pytest.raises(InputError, match=needle):
        read_predictions(tmp_path / "pred")


@pytest.mark.parametrize("text,needle", [
    ("neck_channels = { min = 1, max = 4096 }\n", "786,432 structures"),
    ("neck_channels = [" + ",".join(str(i) for i in range(1, 5001)) + "]\n", "structures"),
    ("ssh_channels = { min = 4, max = 1024, step = 4 }\n", "SSH width combinations"),
    ("anchors_per_cell = { min = 1, max = 4096 }\n", "anchors_per_cell"),
], ids=["neck-4096", "list-5000", "ssh-1024", "anchors-4096"])
def test_spaces_that_never_finished_are_refused_at_once(cli, tmp_path: Path, text: str, needle: str):
    import time

    from featherface_tune import search

    space = tmp_path / "s.toml"
    space.write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    with pytest.raises(FeatherFaceError, match=needle):
        search(489_000, space=space)
    assert_one_line_error(cli("search", "--target", "489000", "--space", space, "--storage",
                              f"sqlite:///{tmp_path / 's.db'}"), 2, needle)
    assert time.perf_counter() - t0 < 20
