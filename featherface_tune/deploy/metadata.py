"""Metadata keys of an exported ONNX file: written by `deploy.export`, read by `deploy.runtime`.

They live here, apart from both, so that the reader does not import the exporter (which imports
the reader to verify what it wrote).
"""

from __future__ import annotations

from typing import Any

META_CONFIG = "featherface_tune.config"  # the FeatherFaceConfig as JSON
META_CONVENTION = "featherface_tune.convention"  # input convention (means, priors, variances) as JSON
META_POSTPROCESS = "featherface_tune.postprocess"  # "nms" when decoding and NMS are in the graph, else "none"
META_VERSION = "featherface_tune.version"  # featherface-tune version that exported it
META_WEIGHTS = "featherface_tune.weights_sha256"  # SHA-256 of the initializers (`initializers_digest`)


def initializers_digest(proto: Any) -> str:
    """SHA-256 of an ONNX graph's weights: each initializer's name, type, dims and bytes, in order;
    written at export, checked when the file is opened, so changed bytes are named, not used."""
    import hashlib

    from onnx import numpy_helper

    h = hashlib.sha256()
    for init in proto.graph.initializer:
        h.update(f"{init.name}\0{init.data_type}\0{tuple(init.dims)}\0".encode())
        h.update(numpy_helper.to_array(init).tobytes())
    return h.hexdigest()
