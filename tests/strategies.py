"""Hypothesis strategies for valid configs (shared by the model and counter tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from featherface_tune.models.config import FeatherFaceConfig


@st.composite
def configs(draw: st.DrawFn, max_width: int = 96) -> FeatherFaceConfig:
    width = draw(st.sampled_from([0.125, 0.25, 0.5]))
    neck = draw(st.sampled_from(["bifpn", "fpn"]))
    n = draw(st.integers(2, max_width))
    smallest_backbone = round(width * 32) * 8
    per_level = draw(st.booleans())
    ssh = (tuple(draw(st.integers(1, max_width // 4)) * 4 for _ in range(3)) if per_level
           else draw(st.integers(1, max_width // 4)) * 4)
    return FeatherFaceConfig(
        backbone_width=width,
        backbone_cbam=draw(st.booleans()),
        neck=neck,
        neck_channels=n,
        bifpn_repeats=draw(st.integers(1, 4)) if neck == "bifpn" else 0,
        neck_cbam=draw(st.booleans()),
        backbone_cbam_reduction=draw(st.integers(1, smallest_backbone)),
        neck_cbam_reduction=draw(st.integers(1, n)),
        ssh_channels=ssh,
        ssh_deformable=draw(st.booleans()),
        shuffle=draw(st.sampled_from(["block", "plain", "none"])),
        shuffle_groups=draw(st.sampled_from([1, 2, 4])),
        anchors_per_cell=draw(st.integers(1, 3)),
        landmarks=draw(st.booleans()),
    )
