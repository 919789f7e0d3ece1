"""What an inter frame's decoder needs besides its Cool-Chics, as the frame header sends it:
translations, warp filter, base motion model, and the outputs of its Cool-Chics. Plain data,
read by the decoder without torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

RESIDUE_OUTPUTS = 4  # three colour residues and alpha
MOTION_OUTPUTS = {1: 2, 2: 5}  # per reference count: flow (P); two flows and beta (B)
# Flows are rounded to this fraction of a pixel at evaluation, hence in the decoder.
FLOW_ACCURACY = 64

MotionModelKind = Literal["translation", "affine", "derived"]
MOTION_MODEL_KINDS: tuple[MotionModelKind, ...] = ("translation", "affine", "derived")


@dataclass(frozen=True)
class MotionModel:
    """The base motion of every reference, on top of its global translation: none
    ("translation"), six affine parameters per reference ("affine"), or the decoded motion of
    the frame ``source[0]`` towards its reference slot ``source[1]`` scaled by temporal
    distance ("derived")."""

    kind: MotionModelKind = "translation"
    affine: tuple[tuple[int, ...], ...] = ()
    source: Optional[tuple[int, int]] = None


@dataclass(frozen=True)
class InterFrameParameters:
    """What an inter frame's decoder needs besides its Cool-Chics, all sent in the
    bitstream: the integer global translation (dx, dy) of each reference, the warp filter
    length and the base motion."""

    translations: tuple[tuple[int, int], ...]
    warp_filter_size: int = 8
    motion_model: MotionModel = field(default_factory=MotionModel)
