"""Reading, inferring and strictly loading official-layout checkpoints."""

from __future__ import annotations

import json
import tomllib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.errors import ConfigError, InputError
from featherface_tune.models.builder import build_model
from featherface_tune.models.checkpoint import (
    compare_keys, count_learnable, infer_config, load_backbone_pretrained, load_model,
    load_state_dict_strict, read_checkpoint,
)
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.models.presets import get_preset, preset_names

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REIMPL = SHARED / "weights" / "featherface-reimpl-489015.pth"
MNV1 = SHARED / "weights" / "mobilenetV1X0.25_pretrain.tar"


def need(p: Path) -> Path:
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


def _one_line(msg: str) -> None:
    assert "\n" not in msg and len(msg) < 2000


def _randomised(cfg: FeatherFaceConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = build_model(cfg).state_dict()
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()) for k, v in sd.items()}


ODD_CONFIGS = [
    FeatherFaceConfig(backbone_width=0.5, neck_channels=40, bifpn_repeats=1, ssh_channels=(40, 48, 56),
                      backbone_cbam_reduction=8, neck_cbam_reduction=4, anchors_per_cell=3),
    FeatherFaceConfig(neck="fpn", bifpn_repeats=0, backbone_cbam=False, neck_cbam=False, ssh_deformable=True,
                      shuffle="plain", landmarks=False, anchors_per_cell=1),
    FeatherFaceConfig(neck="fpn", bifpn_repeats=0, neck_channels=32, ssh_deformable=False, shuffle="block"),
    FeatherFaceConfig(ssh_channels=(56, 72, 72), neck_channels=42, neck_cbam_reduction=8),
]


@pytest.mark.parametrize("name", preset_names())
def test_infer_config_round_trips_presets(name: str) -> None:
    cfg = get_preset(name)
    sd = build_model(cfg).state_dict()
    assert infer_config(sd) == cfg
    assert count_learnable(sd) == sum(p.numel() for p in build_model(cfg).parameters())


@pytest.mark.parametrize("cfg", ODD_CONFIGS, ids=range(len(ODD_CONFIGS)))
def test_infer_config_round_trips_odd_configs(cfg: FeatherFaceConfig) -> None:
    got = infer_config(build_model(cfg).state_dict())
    assert got == cfg


def test_plain_vs_none_shuffle_default_and_hint() -> None:
    retina = get_preset("retinaface-mnet025")  # FPN + plain SSH: RetinaFace -> no shuffle
    assert infer_config(build_model(retina).state_dict()).shuffle == "none"
    reimpl = get_preset("featherface-reimpl-489015")  # BiFPN + DCN: FeatherFace family -> plain
    sd = build_model(reimpl).state_dict()
    assert infer_config(sd).shuffle == "plain"
    assert infer_config(sd, shuffle_hint="none").shuffle == "none"
    block = get_preset("featherface-official")  # block keys decide, the hint cannot override
    assert infer_config(build_model(block).state_dict(), shuffle_hint="none").shuffle == "block"


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "net", "nested", "module", "dp_wrapped"])
def test_read_and_load_wrapped_and_prefixed(tmp_path: Path, wrap: str) -> None:
    cfg = get_preset("featherface-official")
    sd = _randomised(cfg)
    obj: object
    if wrap == "plain":
        obj = OrderedDict(sd)
    elif wrap == "nested":
        obj = {"epoch": 3, "model": {"state_dict": sd}}
    elif wrap == "module":
        obj = {"module." + k: v for k, v in sd.items()}
    elif wrap == "dp_wrapped":
        obj = {"state_dict": {"module." + k: v for k, v in sd.items()}, "optimizer": {"lr": 1e-3}}
    else:
        obj = {wrap: sd, "epoch": 10}
    path = tmp_path / "ck.pth"
    torch.save(obj, path)
    ck = read_checkpoint(path)
    assert set(ck.state_dict) == set(sd)
    model, got_cfg, inferred = load_model(path)
    assert inferred and got_cfg == cfg
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert not model.training


def test_mismatch_lists_keys_and_fields(tmp_path: Path) -> None:
    sd = _randomised(get_preset("featherface-reimpl-489015"))
    model = build_model(get_preset("featherface-official"))
    with pytest.raises(ConfigError) as e:
        load_state_dict_strict(model, sd)
    msg = str(e.value)
    _one_line(msg)
    assert "missing (bacbkbone_0_cbam" in msg and "more)" in msg
    assert "wrongly shaped (" in msg and "[56,1,3,3] vs model [64,1,3,3]" in msg
    for change in ("backbone_cbam=false", "neck_channels=56", "bifpn_repeats=2", "neck_cbam=false",
                   "ssh_channels=56", 'shuffle="plain"'):
        assert change in msg
    # unexpected keys are named too
    extra = dict(_randomised(get_preset("featherface-official")))
    extra["ssh1.extra.weight"] = torch.zeros(3)
    with pytest.raises(ConfigError, match=r"1 unexpected \(ssh1\.extra\.weight\)"):
        load_state_dict_strict(model, extra)
    # a wrong dtype kind is caught too
    bad = dict(_randomised(get_preset("featherface-official")))
    bad["body.stage1.0.1.num_batches_tracked"] = torch.tensor(0.5)
    with pytest.raises(InputError, match="wrong kind"):
        load_state_dict_strict(model, bad)


def test_missing_num_batches_tracked_is_tolerated() -> None:
    cfg = get_preset("retinaface-mnet025")
    sd = {k: v for k, v in _randomised(cfg).items() if not k.endswith("num_batches_tracked")}
    model = load_state_dict_strict(build_model(cfg), sd)
    assert torch.equal(model.state_dict()["fpn.output1.0.weight"], sd["fpn.output1.0.weight"])
    report = compare_keys(build_model(cfg), sd)
    assert report.ok


def test_other_architecture_is_input_error(tmp_path: Path) -> None:
    other = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}
    path = tmp_path / "resnet.pth"
    torch.save(other, path)
    with pytest.raises(InputError, match="body.stage1.0.0.weight") as e:
        load_model(path)
    _one_line(str(e.value))
    with pytest.raises(InputError, match="not a FeatherFace-family checkpoint") as e:
        load_model(path, get_preset("featherface-official"))
    _one_line(str(e.value))


@pytest.mark.parametrize("content,pattern", [
    (b"hello, I am text\n", "not a PyTorch checkpoint"),
    (b"", "not a PyTorch checkpoint"),
    (b"PK\x03\x04garbage", "not a PyTorch checkpoint"),
])
def test_not_a_checkpoint(tmp_path: Path, content: bytes, pattern: str) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(InputError, match=pattern) as e:
        read_checkpoint(path)
    _one_line(str(e.value))


class _Pickled:
    pass


def test_unsafe_and_empty_contents(tmp_path: Path) -> None:
    p = tmp_path / "obj.pth"
    torch.save({"model": _Pickled()}, p)
    with pytest.raises(InputError, match="Python objects besides tensors"):
        read_checkpoint(p)
    p2 = tmp_path / "nums.pth"
    torch.save({"epoch": 3, "lr": 0.1}, p2)
    with pytest.raises(InputError, match="holds no state dict"):
        read_checkpoint(p2)
    with pytest.raises(InputError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(InputError, match="not a file"):
        read_checkpoint(tmp_path)


# ---- the real files -----------------------------------------------------------------------

def test_real_reimpl_checkpoint_loads_strictly() -> None:
    ck = read_checkpoint(need(REIMPL))
    assert ck.wrapper is None and ck.stripped_prefix is None
    assert ck.learnable_params == 489_015
    cfg = infer_config(ck.state_dict)
    assert cfg == get_preset("featherface-reimpl-489015")
    model = build_model(cfg)
    load_state_dict_strict(model, ck)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ck.state_dict[k]), k
    assert sum(p.numel() for p in model.parameters()) == 489_015


def test_real_backbone_pretrained() -> None:
    path = need(MNV1)
    ck = read_checkpoint(path)
    assert ck.wrapper == "state_dict" and ck.stripped_prefix == "module."
    model = build_model(get_preset("featherface-official"))
    n = load_backbone_pretrained(model, path)
    body = model.body.state_dict()
    assert n == len(body) == len(ck.state_dict) - 2
    for k, v in body.items():
        assert torch.equal(v, ck.state_dict[k]), k


def _fake_backbone(tmp_path: Path, mutate: str) -> Path:
    body = build_model(get_preset("retinaface-mnet025")).body.state_dict()
    sd = {"module." + k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in body.items()}
    sd["module.fc.weight"], sd["module.fc.bias"] = torch.zeros(1000, 256), torch.zeros(1000)
    if mutate == "extra":
        sd["module.stage4.0.weight"] = torch.zeros(3)
    elif mutate == "missing":
        del sd["module.stage3.1.3.weight"]
    elif mutate == "shape":
        sd["module.stage1.0.0.weight"] = torch.zeros(16, 3, 3, 3)
    path = tmp_path / f"mnv1_{mutate}.tar"
    torch.save({"epoch": 1, "arch": "mobilenet", "state_dict": sd}, path)
    return path


def test_backbone_pretrained_strictness(tmp_path: Path) -> None:
    model = build_model(get_preset("retinaface-mnet025"))
    assert load_backbone_pretrained(model, _fake_backbone(tmp_path, "ok")) == len(model.body.state_dict())
    assert load_backbone_pretrained(model.body, _fake_backbone(tmp_path, "ok")) > 0
    with pytest.raises(InputError, match=r"unexpected \(stage4\.0\.weight\)"):
        load_backbone_pretrained(model, _fake_backbone(tmp_path, "extra"))
    with pytest.raises(InputError, match=r"missing \(stage3\.1\.3\.weight\)"):
        load_backbone_pretrained(model, _fake_backbone(tmp_path, "missing"))
    with pytest.raises(InputError, match="wrongly shaped"):
        load_backbone_pretrained(model, _fake_backbone(tmp_path, "shape"))
    text = tmp_path / "t.tar"
    text.write_text("nope")
    with pytest.raises(InputError, match="not a PyTorch checkpoint"):
        load_backbone_pretrained(model, text)


# ---- `count --checkpoint` -----------------------------------------------------------------

def test_count_checkpoint_cli(tmp_path: Path) -> None:
    cfg = ODD_CONFIGS[0]
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in _randomised(cfg).items()}}, path)
    runner = CliRunner()
    r = runner.invoke(app, ["count", "--checkpoint", str(path)])
    assert r.exit_code == 0, r.output
    data = tomllib.loads(r.stdout)
    assert FeatherFaceConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}) == cfg
    params = sum(p.numel() for p in build_model(cfg).parameters())
    assert f"# learnable parameters: {params:,}" in r.stdout and "(matches)" in r.stdout
    r = runner.invoke(app, ["count", "--checkpoint", str(path), "--json"])
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert js["params"] == js["analytic_params"] == params and js["wrapper"] == "state_dict"
    # against a config it does not fit: one-line error naming the fields
    r = runner.invoke(app, ["count", "--checkpoint", str(path), "--preset", "featherface-official"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert r.stderr.strip().count("\n") == 0 and "backbone_width=0.5" in r.stderr
    # a text file
    bad = tmp_path / "notes.pth"
    bad.write_text("not a checkpoint")
    r = runner.invoke(app, ["count", "--checkpoint", str(bad)])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert r.stderr.strip().count("\n") == 0 and "not a PyTorch checkpoint" in r.stderr


def test_count_checkpoint_cli_real() -> None:
    r = CliRunner().invoke(app, ["count", "--checkpoint", str(need(REIMPL)), "--json"])
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert js["params"] == 489_015 == js["analytic_params"]
    assert js["config"] == get_preset("featherface-reimpl-489015").to_dict()


def test_stored_config_beats_inference(tmp_path):
    """A config saved beside the weights (train's model.pt) settles what tensors cannot show:
    plain shuffle and no shuffle leave identical keys."""
    from featherface_tune.models.builder import build_model
    from featherface_tune.models.checkpoint import load_model
    from featherface_tune.models.presets import get_preset

    cfg = get_preset("featherface-reimpl-489015").replace(shuffle="none")
    path = tmp_path / "model.pt"
    torch.save({"format": "featherface-tune/model", "config": cfg.to_dict(),
                "state_dict": build_model(cfg).state_dict()}, path)
    _, loaded, _ = load_model(path)
    assert loaded == cfg
    plain = tmp_path / "plain.pt"
    torch.save(build_model(cfg).state_dict(), plain)
    _, inferred, _ = load_model(plain)
    assert inferred.shuffle == "plain"  # the documented default when nothing says otherwise
