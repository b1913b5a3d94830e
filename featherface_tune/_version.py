"""The package version, in a module of its own so that what records it (ONNX metadata, --version)
imports nothing else of the package."""

__version__ = "0.2.0"
