"""Metadata keys of an exported ONNX file: written by `deploy.export`, read by `deploy.runtime`.

They live here, apart from both, so that the reader does not import the exporter (which imports
the reader to verify what it wrote).
"""

from __future__ import annotations

META_CONFIG = "featherface_tune.config"  # the FeatherFaceConfig as JSON
META_CONVENTION = "featherface_tune.convention"  # input convention (means, priors, variances) as JSON
META_POSTPROCESS = "featherface_tune.postprocess"  # "nms" when decoding and NMS are in the graph, else "none"
META_VERSION = "featherface_tune.version"  # featherface-tune version that exported it
