"""featherface-tune: exact parameter budgets for FeatherFace face detectors."""

__version__ = "0.1.0"
