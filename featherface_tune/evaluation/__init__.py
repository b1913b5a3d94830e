"""Evaluation: WIDERFace easy/medium/hard AP, numerically identical to the standard Python evaluation."""
