"""The nn.Modules of FeatherFace-family detectors (torch). What each block is - its instances in a
config, its cost, how a checkpoint shows it - is described in `featherface_tune.models.arch`, which
names these modules by import path; the builder walks that description.
"""
