"""Inference in the RetinaFace convention: decode, NMS, single-image detection, image reading."""
