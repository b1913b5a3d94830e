"""Building blocks of FeatherFace-family detectors, each with its analytic cost beside it.

Cost convention (fvcore's, model in eval mode): one fused multiply-add counts 1; convolutions and
linear layers count weights x output positions (bias free); BatchNorm counts 2 per element (scale
and shift); nearest upsampling counts 1 per output element; elementwise ops, pooling, activations,
padding and channel shuffles count 0.
"""
