"""The whole network against an independent, functional transcription of the official code.

`official_forward` below re-computes FeatherFace / RetinaFace from a state dict alone, transcribing
dohun-mat/FeatherFace models/net.py + models/retinaface.py and biubug6/Pytorch_Retinaface line by
line with torch.nn.functional (the official code itself needs torchvision, which does not import
here). Its modulated deformable conv is a direct gather-based bilinear sampler written after
torchvision's CPU kernel (offsets as (dy, dx) per kernel position, row-major; corners outside the
image read 0; a point at or beyond -1 / size reads 0), not grid_sample. Nothing from
featherface_tune.models is used by it. Plus explicit per-block checks the issue names: the
ChannelShuffle2 permutation, the BiFPN's zero same-padding, CBAM's pooling, BN eps and LeakyReLU
slopes.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featherface_tune.models.blocks.bifpn import SameMaxPool
from featherface_tune.models.blocks.cbam import ChannelGate, SpatialGate
from featherface_tune.models.blocks.shuffle import ChannelShuffle
from featherface_tune.models.builder import build_model
from featherface_tune.models.checkpoint import infer_config, read_checkpoint
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.models.presets import get_preset

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REIMPL = SHARED / "weights" / "featherface-reimpl-489015.pth"

SD = dict[str, torch.Tensor]


# ---- the transcription ---------------------------------------------------------------------

def bn(x: torch.Tensor, sd: SD, p: str, eps: float) -> torch.Tensor:
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                        sd[p + ".bias"], False, 0.0, eps)


def leaky(x: torch.Tensor, slope: float) -> torch.Tensor:
    return torch.where(x >= 0, x, x * slope)


def conv_bn_leaky(x: torch.Tensor, sd: SD, p: str, stride: int, slope: float | None, pad: int = 1) -> torch.Tensor:
    y = F.conv2d(x, sd[p + ".0.weight"], None, stride, pad, groups=x.shape[1] // sd[p + ".0.weight"].shape[1])
    y = bn(y, sd, p + ".1", 1e-5)
    return y if slope is None else leaky(y, slope)


def mobilenet(x: torch.Tensor, sd: SD) -> list[torch.Tensor]:
    # stage1: conv_bn(3, 8, 2, leaky=0.1) then conv_dw units, all LeakyReLU(0.1)
    strides = {"stage1": [2, 1, 2, 1, 2, 1], "stage2": [2, 1, 1, 1, 1, 1], "stage3": [2, 1]}
    outs = []
    for stage, ss in strides.items():
        for i, s in enumerate(ss):
            p = f"body.{stage}.{i}"
            if stage == "stage1" and i == 0:
                x = conv_bn_leaky(x, sd, p, s, 0.1)
                continue
            w = sd[p + ".0.weight"]
            x = leaky(bn(F.conv2d(x, w, None, s, 1, groups=w.shape[0]), sd, p + ".1", 1e-5), 0.1)
            x = leaky(bn(F.conv2d(x, sd[p + ".3.weight"]), sd, p + ".4", 1e-5), 0.1)
        outs.append(x)
    return outs


def cbam(x: torch.Tensor, sd: SD, p: str) -> torch.Tensor:
    def mlp(v: torch.Tensor) -> torch.Tensor:
        v = v.reshape(v.shape[0], -1)
        v = F.relu(F.linear(v, sd[p + ".ChannelGate.mlp.1.weight"], sd[p + ".ChannelGate.mlp.1.bias"]))
        return F.linear(v, sd[p + ".ChannelGate.mlp.3.weight"], sd[p + ".ChannelGate.mlp.3.bias"])
    h, w = x.shape[2:]
    att = mlp(F.avg_pool2d(x, (h, w), stride=(h, w))) + mlp(F.max_pool2d(x, (h, w), stride=(h, w)))
    x = x * torch.sigmoid(att)[:, :, None, None]
    comp = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
    s = F.conv2d(comp, sd[p + ".SpatialGate.spatial.conv.weight"], None, 1, 3)
    s = bn(s, sd, p + ".SpatialGate.spatial.bn", 1e-5)
    return x * torch.sigmoid(s)


def same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    extra_h = (math.ceil(w / s) - 1) * s - w + k
    extra_v = (math.ceil(h / s) - 1) * s - h + k
    left, top = extra_h // 2, extra_v // 2
    return F.pad(x, [left, extra_h - left, top, extra_v - top])


def bifpn_cell(feats: list[torch.Tensor], sd: SD, p: str, first: bool) -> list[torch.Tensor]:
    def down(x: torch.Tensor, name: str) -> torch.Tensor:
        y = F.conv2d(same_pad(x, 1, 1), sd[f"{p}.{name}.0.conv.weight"], sd[f"{p}.{name}.0.conv.bias"])
        return bn(y, sd, f"{p}.{name}.1", 1e-3)

    def sep(x: torch.Tensor, name: str) -> torch.Tensor:
        w = sd[f"{p}.{name}.depthwise_conv.conv.weight"]
        x = F.conv2d(same_pad(x, 3, 1), w, None, groups=w.shape[0])
        x = F.conv2d(same_pad(x, 1, 1), sd[f"{p}.{name}.pointwise_conv.conv.weight"],
                     sd[f"{p}.{name}.pointwise_conv.conv.bias"])
        return bn(x, sd, f"{p}.{name}.bn", 1e-3)

    def weights(name: str) -> torch.Tensor:
        w = F.relu(sd[f"{p}.{name}"])
        return w / (torch.sum(w, dim=0) + 1e-4)

    def swish(x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)

    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(same_pad(x, 3, 2), 3, 2)

    if first:
        p3, p4, p5 = feats
        p3_in, p4_in, p5_in = down(p3, "p3_down_channel"), down(p4, "p4_down_channel"), down(p5, "p5_down_channel")
    else:
        p3_in, p4_in, p5_in = feats
    w = weights("p4_w1")
    p4_up = sep(swish(w[0] * p4_in + w[1] * F.interpolate(p5_in, size=list(p4_in.shape[2:]), mode="nearest")), "conv4_up")
    w = weights("p3_w1")
    p3_out = sep(swish(w[0] * p3_in + w[1] * F.interpolate(p4_up, size=list(p3_in.shape[2:]), mode="nearest")), "conv3_up")
    if first:
        p4_in, p5_in = down(p4, "p4_down_channel_2"), down(p5, "p5_down_channel_2")
    w = weights("p4_w2")
    p4_out = sep(swish(w[0] * p4_in + w[1] * p4_up + w[2] * pool(p3_out)), "conv4_down")
    w = weights("p5_w2")
    p5_out = sep(swish(w[0] * p5_in + w[1] * pool(p4_out)), "conv5_down")
    return [p3_out, p4_out, p5_out]


def fpn(feats: list[torch.Tensor], sd: SD, n: int) -> list[torch.Tensor]:
    slope = 0.1 if n <= 64 else 0.0
    o1, o2, o3 = (conv_bn_leaky(f, sd, f"fpn.output{i + 1}", 1, slope, pad=0) for i, f in enumerate(feats))
    o2 = conv_bn_leaky(o2 + F.interpolate(o3, size=[o2.size(2), o2.size(3)], mode="nearest"), sd, "fpn.merge2", 1, slope)
    o1 = conv_bn_leaky(o1 + F.interpolate(o2, size=[o1.size(2), o1.size(3)], mode="nearest"), sd, "fpn.merge1", 1, slope)
    return [o1, o2, o3]


def bilinear_gather(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """torchvision's bilinear_interpolate: x [B,C,H,W], points [B,K,Ho,Wo] -> [B,C,K,Ho,Wo]."""
    b, c, h, w = x.shape
    valid = (py > -1) & (py < h) & (px > -1) & (px < w)
    y0, x0 = torch.floor(py), torch.floor(px)
    ly, lx = py - y0, px - x0
    flat = x.reshape(b, c, h * w)
    out = torch.zeros((b, c) + py.shape[1:], dtype=x.dtype)
    for dy, dx, wt in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx), (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yy, xx = (y0 + dy).long(), (x0 + dx).long()
        inside = valid & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(b, 1, -1).expand(b, c, -1)
        v = torch.gather(flat, 2, idx).reshape(out.shape)
        out = out + v * (wt * inside).unsqueeze(1)
    return out


def deform_conv(x: torch.Tensor, sd: SD, p: str) -> torch.Tensor:
    """DeformableConv2d.forward of the official code: offset conv, 2*sigmoid modulator, then
    torchvision.ops.deform_conv2d (stride 1, padding 1, 3x3)."""
    offset = F.conv2d(x, sd[p + ".offset_conv.weight"], sd[p + ".offset_conv.bias"], 1, 1)
    mask = 2.0 * torch.sigmoid(F.conv2d(x, sd[p + ".modulator_conv.weight"], sd[p + ".modulator_conv.bias"], 1, 1))
    weight = sd[p + ".regular_conv.weight"]
    b, _, h, w = x.shape
    ki = torch.arange(3).repeat_interleave(3).view(1, 9, 1, 1).to(x.dtype)  # kernel row of position k
    kj = torch.arange(3).repeat(3).view(1, 9, 1, 1).to(x.dtype)
    oy = torch.arange(h, dtype=x.dtype).view(1, 1, h, 1) - 1
    ox = torch.arange(w, dtype=x.dtype).view(1, 1, 1, w) - 1
    py = oy + ki + offset[:, 0::2]  # channel 2k: dy of kernel position k
    px = ox + kj + offset[:, 1::2]  # channel 2k+1: dx
    cols = bilinear_gather(x, py, px) * mask.unsqueeze(1)  # [B, C, 9, H, W]
    return torch.einsum("ock,bckhw->bohw", weight.reshape(weight.shape[0], weight.shape[1], 9), cols)


def ssh(x: torch.Tensor, sd: SD, p: str, out_c: int, deformable: bool) -> torch.Tensor:
    slope = 0.1 if out_c <= 64 else 0.0

    def unit(v: torch.Tensor, name: str, act: bool) -> torch.Tensor:
        q = f"{p}.{name}"
        y = deform_conv(v, sd, q + ".0") if deformable else F.conv2d(v, sd[q + ".0.weight"], None, 1, 1)
        y = bn(y, sd, q + ".1", 1e-5)
        return leaky(y, slope) if act else y

    c3 = unit(x, "conv3X3", False)
    c5_1 = unit(x, "conv5X5_1", True)
    c5 = unit(c5_1, "conv5X5_2", False)
    c7 = unit(unit(c5_1, "conv7X7_2", True), "conv7x7_3", False)
    return F.relu(torch.cat([c3, c5, c7], dim=1))


def channel_shuffle2(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.size()
    return torch.transpose(x.view(b, c // groups, groups, h, w), 1, 2).contiguous().view(b, c, h, w)


def shuffle_block(x: torch.Tensor, sd: SD, p: str) -> torch.Tensor:
    x = channel_shuffle2(x, 2)
    x = bn(F.conv2d(x, sd[p + ".1.weight"]), sd, p + ".2", 1e-5)
    w = sd[p + ".3.weight"]
    x = bn(F.conv2d(x, w, None, 1, 1, groups=w.shape[0]), sd, p + ".4", 1e-5)
    x = bn(F.conv2d(x, sd[p + ".5.weight"]), sd, p + ".6", 1e-5)
    return F.relu(x)


def official_forward(x: torch.Tensor, sd: SD, cfg: FeatherFaceConfig) -> tuple[torch.Tensor, ...]:
    feats = mobilenet(x, sd)
    if cfg.backbone_cbam:
        feats = [F.relu(cbam(f, sd, f"bacbkbone_{i}_cbam") + f) for i, f in enumerate(feats)]
    if cfg.neck == "bifpn":
        for r in range(cfg.bifpn_repeats):
            feats = bifpn_cell(feats, sd, f"bifpn.{r}", r == 0)
    else:
        feats = fpn(feats, sd, cfg.neck_channels)
    if cfg.neck_cbam:
        feats = [F.relu(cbam(f, sd, f"bif_cbam_{i}") + f) for i, f in enumerate(feats)]
    feats = [ssh(f, sd, f"ssh{i + 1}", w, cfg.ssh_deformable) for i, (f, w) in enumerate(zip(feats, cfg.ssh_widths))]
    if cfg.shuffle == "block":
        feats = [shuffle_block(f, sd, f"ssh{i + 1}_cs") for i, f in enumerate(feats)]
    elif cfg.shuffle == "plain":
        feats = [channel_shuffle2(f, 2) for f in feats]

    def head(name: str, n: int) -> torch.Tensor:
        outs = []
        for i, f in enumerate(feats):
            o = F.conv2d(f, sd[f"{name}.{i}.conv1x1.weight"], sd[f"{name}.{i}.conv1x1.bias"])
            o = o.permute(0, 2, 3, 1).contiguous()
            outs.append(o.view(o.shape[0], -1, n))
        return torch.cat(outs, dim=1)

    ldm = head("LandmarkHead", 10) if cfg.landmarks else None
    return head("BboxHead", 4), head("ClassHead", 2), ldm


# ---- tests ---------------------------------------------------------------------------------

def _randomised_state(cfg: FeatherFaceConfig, seed: int, x: torch.Tensor) -> SD:
    """Random weights, fusion weights (some negative: the relu matters) and DCN offsets of a few
    pixels; BatchNorm statistics calibrated on `x` and then perturbed, so activations stay of order
    one through the whole network and every BN's eps, every slope and every padding value matter."""
    g = torch.Generator().manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for k, v in model.named_parameters():
            if k.endswith(("_w1", "_w2")):
                v.copy_(torch.rand(v.shape, generator=g) * 2 - 0.3)
            elif "offset_conv" in k:
                v.copy_(torch.randn(v.shape, generator=g) * (0.03 if k.endswith("weight") else 1.5))
            elif "modulator_conv" in k or v.dim() > 1:
                fan_in = v[0].numel() if v.dim() > 1 else 1
                v.copy_(torch.randn(v.shape, generator=g) / math.sqrt(fan_in))
            elif k.endswith("weight"):  # BN scale
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
            else:  # biases
                v.copy_(torch.randn(v.shape, generator=g) * 0.3)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in bns:
            m.momentum = 1.0  # running stats := this batch's stats
        model.train()
        model(x)
        for m in bns:
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.2 * m.running_var.sqrt())
    return {k: v.clone() for k, v in model.state_dict().items()}


def _compare(cfg: FeatherFaceConfig, sd: SD, x: torch.Tensor, rtol: float = 1e-7) -> None:
    """Model vs transcription in float64 (so rounding cannot hide or fake a difference): the largest
    difference must be below rtol x the std of the output."""
    model = build_model(cfg)
    model.load_state_dict(sd, strict=True)
    model.double().eval()
    sd = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    x = x.double()
    with torch.no_grad():
        got = model(x)
        want = official_forward(x, sd, cfg)
    names = ("boxes", "logits", "landmarks")
    for name, a, b in zip(names, got, want):
        if b is None:
            assert a is None
            continue
        assert a.shape == b.shape, name
        scale = b.std().item() + 1e-6
        err = (a - b).abs().max().item() / scale
        assert err < rtol, f"{name}: max error {err:.2e} of the outputs' std"


@pytest.mark.parametrize("name", ["featherface-official", "retinaface-mnet025", "featherface-489k",
                                  "featherface-reimpl-489015"])
def test_network_matches_official_transcription(name: str) -> None:
    cfg = get_preset(name)
    x = torch.randn(1, 3, 72, 104, generator=torch.Generator().manual_seed(1)) * 60
    _compare(cfg, _randomised_state(cfg, len(name), x), x)


def test_wide_ssh_and_fpn_variant_matches() -> None:
    # SSH and FPN widths above 64 use slope 0; FPN with deformable SSH and a block shuffle
    cfg = FeatherFaceConfig(neck="fpn", bifpn_repeats=0, neck_channels=72, backbone_cbam=False,
                            neck_cbam=True, ssh_channels=(68, 80, 64), shuffle="block")
    x = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(2)) * 60
    _compare(cfg, _randomised_state(cfg, 3, x), x)


def test_trained_checkpoint_matches_official_transcription() -> None:
    if not REIMPL.exists():
        pytest.skip(f"{REIMPL} not present")
    sd = read_checkpoint(REIMPL).state_dict
    cfg = infer_config(sd)
    from skimage import data

    img = torch.from_numpy(data.astronaut()[100:196, 150:278, ::-1].copy()).float()
    x = (img - torch.tensor([104.0, 117.0, 123.0])).permute(2, 0, 1)[None].contiguous()
    _compare(cfg, sd, x)


def test_bilinear_gather_reference_is_sane() -> None:
    # the reference sampler itself, on integer and half-pixel points and out-of-image points
    x = torch.arange(12.0).view(1, 1, 3, 4)
    py = torch.tensor([0.0, 1.0, 0.5, -1.0, -0.5, 2.0]).view(1, 6, 1, 1)
    px = torch.tensor([0.0, 2.0, 0.5, 0.0, 0.0, 3.5]).view(1, 6, 1, 1)
    got = bilinear_gather(x, py, px).flatten().tolist()
    assert got == pytest.approx([0.0, 6.0, 2.5, 0.0, 0.0, 0.5 * 11.0])


def test_channel_shuffle_is_official_order() -> None:
    x = torch.arange(8.0).view(1, 8, 1, 1)
    got = ChannelShuffle(8, 2)(x).flatten().tolist()
    assert got == [0, 2, 4, 6, 1, 3, 5, 7]  # ChannelShuffle2: view (B, C/g, g), transpose
    assert got != [0, 4, 1, 5, 2, 6, 3, 7]  # not the ShuffleNet-paper order
    x = torch.randn(2, 12, 3, 5)
    assert torch.equal(ChannelShuffle(12, 3)(x), channel_shuffle2(x, 3))
    assert torch.equal(ChannelShuffle(12, 2)(x), channel_shuffle2(x, 2))


@pytest.mark.parametrize("h,w", [(8, 8), (9, 7), (5, 12)])
def test_bifpn_maxpool_pads_with_zeros(h: int, w: int) -> None:
    x = -torch.rand(1, 2, h, w) - 1.0  # all negative: a zero pad shows up in the max
    got = SameMaxPool()(x)
    want = F.max_pool2d(same_pad(x, 3, 2), 3, 2)
    assert torch.equal(got, want)
    assert got.shape[-2:] == (math.ceil(h / 2), math.ceil(w / 2))
    # windows that touch the padding see a 0, not -inf (k=3, s=2 always pads at least one side)
    assert (got == 0).any()
    extra_w, extra_h = 2 * math.ceil(w / 2) - w + 1, 2 * math.ceil(h / 2) - h + 1
    inf_pad = F.pad(x, [extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2], value=-math.inf)
    assert not torch.equal(got, F.max_pool2d(inf_pad, 3, 2))


def test_cbam_pooling() -> None:
    torch.manual_seed(0)
    gate = ChannelGate(32, 8)
    x = torch.randn(2, 32, 5, 7)
    m1, m3 = gate.mlp[1], gate.mlp[3]

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return m3(torch.relu(m1(v)))

    want = x * torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))[:, :, None, None]
    torch.testing.assert_close(gate(x), want)
    sg = SpatialGate().eval()
    with torch.no_grad():
        sg.spatial.bn.running_mean.fill_(0.3)
        sg.spatial.bn.running_var.fill_(2.0)
    pooled = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)  # max first
    conv = F.conv2d(pooled, sg.spatial.conv.weight, None, 1, 3)
    bnw, bnb = sg.spatial.bn.weight, sg.spatial.bn.bias
    want = x * torch.sigmoid((conv - 0.3) / math.sqrt(2.0 + 1e-5) * bnw.view(1, -1, 1, 1) + bnb.view(1, -1, 1, 1))
    torch.testing.assert_close(sg(x), want)


def test_batchnorm_eps_and_momentum() -> None:
    for name in ("featherface-official", "retinaface-mnet025"):
        model = build_model(get_preset(name))
        seen = 0
        for mod_name, m in model.named_modules():
            if not isinstance(m, nn.BatchNorm2d):
                continue
            seen += 1
            if mod_name.startswith("bifpn."):
                assert (m.eps, m.momentum) == (1e-3, 0.01), mod_name
            elif ".SpatialGate." in mod_name:
                assert (m.eps, m.momentum) == (1e-5, 0.01), mod_name
            else:
                assert (m.eps, m.momentum) == (1e-5, 0.1), mod_name
        assert seen > 20


@pytest.mark.parametrize("width,slope", [(64, 0.1), (56, 0.1), (68, 0.0), (128, 0.0)])
def test_leaky_slopes(width: int, slope: float) -> None:
    cfg = FeatherFaceConfig(neck="fpn", bifpn_repeats=0, neck_channels=width, ssh_channels=width,
                            backbone_cbam=False, neck_cbam=False)
    model = build_model(cfg)
    for prefix in ("fpn", "ssh1", "ssh2", "ssh3"):
        relus = [(n, m) for n, m in model.named_modules() if n.startswith(prefix + ".") and isinstance(m, nn.LeakyReLU)]
        assert relus and all(m.negative_slope == slope for _, m in relus), prefix
        if prefix.startswith("ssh"):  # only conv5X5_1 and conv7X7_2 are activated
            assert sorted(n.split(".")[1] for n, _ in relus) == ["conv5X5_1", "conv7X7_2"]
    body = [m.negative_slope for n, m in model.named_modules() if n.startswith("body.") and isinstance(m, nn.LeakyReLU)]
    assert len(body) == 1 + 2 * 13 and set(body) == {0.1}
