"""The coding structure of a sequence: which frames are I, P or B, their references,
their depth in the GOP and the order in which they are coded.

Positions are given in display order, as the reference encoder takes them: a comma
separated list of indices and inclusive ranges, negative values counting from the end
(``0,4-7,-2``). The structure is built the reference's way: I frames first, then P frames
each referencing the closest frame already placed before it, then B frames filling every
remaining gap at its midpoint, recursively. The coding order is the order of creation, so
a frame's references are always coded before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FrameType = Literal["I", "P", "B"]


class CodingStructureError(ValueError):
    pass


@dataclass(frozen=True)
class CodedFrame:
    """One frame of the structure. ``refs`` are display indices: (past,) for a P frame,
    (past, future) for a B frame."""

    display: int
    coding: int
    depth: int
    refs: tuple[int, ...] = ()

    @property
    def frame_type(self) -> FrameType:
        return ("I", "P", "B")[len(self.refs)]


def parse_positions(text: str, n_frames: int, option: str = "positions") -> list[int]:
    """``0,4-7,-2`` -> sorted display indices; one-line errors name ``option``."""
    positions: set[int] = set()
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        bounds = _split_range(item, option)
        try:
            values = [int(b) for b in bounds]
        except ValueError:
            raise CodingStructureError(f"{option}: '{item}' is not an index or a range such as 4-7") from None
        resolved = [v + n_frames if v < 0 else v for v in values]
        if any(not 0 <= v < n_frames for v in resolved):
            raise CodingStructureError(f"{option}: '{item}' is outside the {n_frames} frame(s) of the sequence")
        first, last = resolved[0], resolved[-1]
        if first > last:
            raise CodingStructureError(f"{option}: range '{item}' goes backwards")
        positions.update(range(first, last + 1))
    return sorted(positions)


def _split_range(item: str, option: str) -> list[str]:
    """'4-7' -> ['4', '7'], '-2' -> ['-2'], '-3--1' -> ['-3', '-1']: a dash after a
    digit separates a range, a leading dash is a sign."""
    for index in range(1, len(item)):
        if item[index] == "-" and item[index - 1].isdigit():
            return [item[:index], item[index + 1:]]
    return [item]


def build_coding_structure(n_frames: int, intra_pos: str = "0", p_pos: str = "") -> list[CodedFrame]:
    """Every frame of the sequence, in coding order."""
    if n_frames < 1:
        raise CodingStructureError(f"n_frames must be >= 1, got {n_frames}")
    intra = parse_positions(intra_pos, n_frames, "intra_pos")
    predicted = parse_positions(p_pos, n_frames, "p_pos")
    if 0 not in intra:
        raise CodingStructureError("intra_pos: frame 0 must be an I frame (add 0 to intra_pos)")
    both = sorted(set(intra) & set(predicted))
    if both:
        raise CodingStructureError(f"frame(s) {both} are in both intra_pos and p_pos")
    last = n_frames - 1
    if last not in intra and last not in predicted:
        raise CodingStructureError(f"the last frame ({last}) must be I or P: it has no future frame to reference "
                                   "as a B frame (add -1 to intra_pos or p_pos)")
    placed: dict[int, CodedFrame] = {}

    def place(display: int, depth: int, refs: tuple[int, ...]) -> None:
        placed[display] = CodedFrame(display, len(placed), depth, refs)

    for display in intra:
        place(display, 0, ())
    for display in predicted:
        past = max(d for d in placed if d < display)
        place(display, placed[past].depth + 1, (past,))
    while len(placed) < n_frames:
        anchors = sorted(placed)
        for past, future in zip(anchors, anchors[1:]):
            if future - past > 1:
                middle = (past + future) // 2
                place(middle, max(placed[past].depth, placed[future].depth) + 1, (past, future))
    return sorted(placed.values(), key=lambda frame: frame.coding)
