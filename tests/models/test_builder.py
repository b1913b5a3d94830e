"""The built model: official key layout, forward shapes for every valid config at any size >= 32."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from featherface_tune.models.builder import build_model, count_parameters
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.models.presets import get_preset
from featherface_tune.models.priors import num_priors, prior_boxes
from strategies import configs


@pytest.mark.parametrize("name, params", [
    ("retinaface-mnet025", 426_608), ("featherface-official", 592_371), ("featherface-v1-489k", 488_664),
    ("featherface-reimpl-489015", 489_015), ("featherface-489k", 489_000),
])
def test_preset_numel(name, params):
    assert count_parameters(build_model(get_preset(name))) == params


def test_official_key_names():
    keys = set(build_model(FeatherFaceConfig()).state_dict())
    for k in ("body.stage1.0.0.weight", "bacbkbone_0_cbam.ChannelGate.mlp.1.weight",
              "bacbkbone_2_cbam.SpatialGate.spatial.conv.weight", "bifpn.0.p3_down_channel.0.conv.weight",
              "bifpn.2.conv5_down.pointwise_conv.conv.bias", "bif_cbam_1.ChannelGate.mlp.3.bias",
              "ssh1.conv3X3.0.offset_conv.weight", "ssh3.conv7x7_3.0.modulator_conv.bias",
              "ssh1_cs.1.weight", "ssh2_cs.6.running_var", "ClassHead.0.conv1x1.weight",
              "LandmarkHead.2.conv1x1.bias"):
        assert k in keys, k
    retina = set(build_model(get_preset("retinaface-mnet025")).state_dict())
    assert "fpn.output1.0.weight" in retina and "ssh1.conv3X3.0.weight" in retina
    assert not any(k.startswith(("bifpn", "bif_cbam", "ssh1_cs")) for k in retina)


@pytest.mark.parametrize("h, w", [(32, 32), (33, 47), (97, 64), (640, 640)])
def test_official_forward_shapes(h, w):
    cfg = FeatherFaceConfig()
    model = build_model(cfg).eval()
    with torch.no_grad():
        boxes, logits, ldm = model(torch.randn(2, 3, h, w))
    n = num_priors(h, w, 2)
    assert boxes.shape == (2, n, 4) and logits.shape == (2, n, 2) and ldm.shape == (2, n, 10)
    assert prior_boxes(h, w, 2).shape == (n, 4)


@settings(max_examples=25, deadline=None)
@given(cfg=configs(max_width=48))
def test_random_configs_forward(cfg):
    model = build_model(cfg).eval()
    h, w = 32 + cfg.neck_channels % 29, 40 + cfg.ssh_widths[0] % 17
    with torch.no_grad():
        boxes, logits, ldm = model(torch.randn(1, 3, h, w))
    n = num_priors(h, w, cfg.anchors_per_cell)
    assert boxes.shape == (1, n, 4) and logits.shape == (1, n, 2)
    assert (ldm is None) == (not cfg.landmarks)
    if ldm is not None:
        assert ldm.shape == (1, n, 10)
    assert torch.isfinite(boxes).all()


def test_priors_follow_retinaface_order():
    p = prior_boxes(64, 64, 2)
    # first cell of P3: two anchors 16 and 32 px at centre (4, 4)
    assert torch.allclose(p[0], torch.tensor([4 / 64, 4 / 64, 16 / 64, 16 / 64]))
    assert torch.allclose(p[1], torch.tensor([4 / 64, 4 / 64, 32 / 64, 32 / 64]))
    assert torch.allclose(p[2, :2], torch.tensor([12 / 64, 4 / 64]))  # next cell along x
