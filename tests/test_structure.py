"""Coding structures against hand-written tables (spec 14.1)."""

from __future__ import annotations

import pytest

from coolchic_pl.video.structure import (
    CodingStructureError, build_coding_structure, parse_positions,
)


def _rows(n_frames: int, intra_pos: str, p_pos: str) -> list[tuple[int, str, int, tuple[int, ...]]]:
    """(display, type, depth, refs) in coding order."""
    return [(f.display, f.frame_type, f.depth, f.refs) for f in build_coding_structure(n_frames, intra_pos, p_pos)]


def test_low_delay_p() -> None:
    assert _rows(5, "0", "1-4") == [(0, "I", 0, ()), (1, "P", 1, (0,)), (2, "P", 2, (1,)), (3, "P", 3, (2,)),
                                    (4, "P", 4, (3,))]


def test_random_access_closed_gop_8() -> None:
    assert _rows(8, "0", "-1") == [
        (0, "I", 0, ()), (7, "P", 1, (0,)), (3, "B", 2, (0, 7)), (1, "B", 3, (0, 3)), (5, "B", 3, (3, 7)),
        (2, "B", 4, (1, 3)), (4, "B", 4, (3, 5)), (6, "B", 4, (5, 7)),
    ]


def test_random_access_open_gop() -> None:
    """Two I frames, B frames between them referencing both."""
    assert _rows(9, "0,-1", "") == [
        (0, "I", 0, ()), (8, "I", 0, ()), (4, "B", 1, (0, 8)), (2, "B", 2, (0, 4)), (6, "B", 2, (4, 8)),
        (1, "B", 3, (0, 2)), (3, "B", 3, (2, 4)), (5, "B", 3, (4, 6)), (7, "B", 3, (6, 8)),
    ]


def test_five_frame_random_access_and_coding_order() -> None:
    frames = build_coding_structure(5, "0", "-1")
    assert [f.coding for f in frames] == list(range(5))
    assert [(f.display, f.frame_type) for f in frames] == [(0, "I"), (4, "P"), (2, "B"), (1, "B"), (3, "B")]
    for frame in frames:  # every reference is coded before the frame that uses it
        coded_before = {f.display for f in frames[:frame.coding]}
        assert set(frame.refs) <= coded_before


def test_p_frames_reference_the_closest_placed_past_frame() -> None:
    assert _rows(9, "0", "4,8") == [
        (0, "I", 0, ()), (4, "P", 1, (0,)), (8, "P", 2, (4,)), (2, "B", 2, (0, 4)), (6, "B", 3, (4, 8)),
        (1, "B", 3, (0, 2)), (3, "B", 3, (2, 4)), (5, "B", 4, (4, 6)), (7, "B", 4, (6, 8)),
    ]


def test_single_frame_is_one_i_frame() -> None:
    assert _rows(1, "0", "") == [(0, "I", 0, ())]


def test_position_syntax() -> None:
    assert parse_positions("0,4-7,-2", 10) == [0, 4, 5, 6, 7, 8]
    assert parse_positions("-3--1", 10) == [7, 8, 9]
    assert parse_positions(" 1 , 1,", 4) == [1]
    assert parse_positions("", 4) == []


@pytest.mark.parametrize("text, message", [
    ("a", "not an index"), ("1-x", "not an index"), ("12", "outside the 10 frame"), ("-11", "outside"),
    ("5-3", "goes backwards"), ("1-2-3", "not an index"),
])
def test_position_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(CodingStructureError, match=message):
        parse_positions(text, 10, "p_pos")


@pytest.mark.parametrize("n_frames, intra_pos, p_pos, message", [
    (5, "1", "-1", "frame 0 must be an I frame"),
    (5, "0", "", "last frame .4. must be I or P"),
    (5, "0,2", "2,4", r"frame\(s\) \[2\] are in both"),
    (0, "0", "", "n_frames must be >= 1"),
])
def test_impossible_structures(n_frames: int, intra_pos: str, p_pos: str, message: str) -> None:
    with pytest.raises(CodingStructureError, match=message):
        build_coding_structure(n_frames, intra_pos, p_pos)
