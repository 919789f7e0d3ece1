"""The golden files: .cool files whose decoded samples are fixed by their SHA-256."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from coolchic_pl.io import FrameData

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


def samples_sha256(frames: list[FrameData]) -> str:
    """SHA-256 of every sample of every plane of every frame, as little-endian uint16."""
    digest = hashlib.sha256()
    for frame in frames:
        max_value = 2**frame.bitdepth - 1
        for plane in frame.planes:
            digest.update(np.round(plane.double().numpy() * max_value).astype("<u2").tobytes())
    return digest.hexdigest()
