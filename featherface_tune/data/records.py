"""The record every annotation reader returns (the contract between data, training and evaluation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ImageRecord:
    """One image and its faces.

    boxes: float32 [n, 4] as x, y, w, h in pixels (WIDERFace convention).
    landmarks: float32 [n, 10] as x1 y1 ... x5 y5; a face without landmarks has all -1.
    event: the WIDERFace event folder, e.g. "0--Parade"; name: the file stem, e.g. "0_Parade_marchingband_1_5".
    """

    path: Path
    event: str
    name: str
    boxes: np.ndarray
    landmarks: np.ndarray
