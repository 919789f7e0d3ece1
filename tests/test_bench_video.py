"""Classical video baselines: real x264 / x265 / vvenc encodes of the test sequences through imageio-ffmpeg."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from coolchic_pl.bench.ffmpeg_video import (
    GopLayout,
    available_video_codecs,
    encode_sequence,
    plane_psnr,
    sweep,
)
from coolchic_pl.io import parse_yuv_name

RANDOM_ACCESS = GopLayout.from_frame_types(["I", "B", "B", "B", "P"])
LOW_DELAY = GopLayout.from_frame_types(["I", "P", "P", "P", "P"])


def _need(codec: str) -> None:
    if codec not in available_video_codecs():
        pytest.skip(f"this ffmpeg build has no {codec} encoder")


@pytest.fixture(scope="module")
def bqsquare(data_dir: Path) -> Path:
    return data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"


@pytest.fixture(scope="module")
def cars(data_dir: Path) -> Path:
    return data_dir / "video" / "cars_320x240_30p_30frames_yuv420_8b.yuv"


def _encode(yuv: Path, codec: str, qp: int, layout: GopLayout, workdir: Path, **kw):
    fmt = parse_yuv_name(yuv)
    return encode_sequence(yuv, fmt.width, fmt.height, layout.n_frames, codec, qp, layout, workdir, **kw)


def test_layout_from_cool_chic_frame_types() -> None:
    assert RANDOM_ACCESS == GopLayout(5, intra_period=5, b_frames=3, closed_gop=True)
    assert GopLayout.from_frame_types(["I", "P", "P"]) == GopLayout(3, 3, 0)
    assert GopLayout.from_frame_types(["I", "B", "B", "B", "I"]) == GopLayout(5, 4, 3, closed_gop=False)
    with pytest.raises(ValueError, match="evenly spaced"):
        GopLayout.from_frame_types(["I", "P", "I", "P", "P", "I"])


@pytest.mark.parametrize("codec", ["x264", "x265"])
def test_higher_qp_costs_fewer_bits_and_quality(codec: str, bqsquare: Path, tmp_path: Path) -> None:
    _need(codec)
    fmt = parse_yuv_name(bqsquare)
    fine, coarse = sweep(bqsquare, fmt.width, fmt.height, 5, codec, [27, 37], RANDOM_ACCESS, tmp_path)
    assert 0 < coarse.bits < fine.bits
    assert coarse.psnr_y < fine.psnr_y and coarse.psnr_yuv < fine.psnr_yuv
    for point in (fine, coarse):
        assert len(point.psnr_y_frames) == len(point.frame_types) == 5
        assert 25 < point.psnr_y < 50 and 25 < point.psnr_yuv < 50
        assert point.bpp == pytest.approx(point.bits / (224 * 128 * 5))
        assert point.psnr_yuv == pytest.approx((6 * point.psnr_y + point.psnr_u + point.psnr_v) / 8)
        assert point.encode_time_s > 0 and f"lib{codec}" in point.settings


@pytest.mark.parametrize("codec", ["x264", "x265"])
def test_decoded_frame_types_follow_the_layout(codec: str, bqsquare: Path, tmp_path: Path) -> None:
    """Low delay is I then P frames. In random access without a second I frame, both encoders close the
    last mini-GOP with a P anchor and code the three frames before it as B (b-adapt=0, no scene cut),
    which is exactly the Cool-Chic I B B B P. An open-GOP layout keeps the B frames before the second I."""
    _need(codec)
    assert _encode(bqsquare, codec, 32, LOW_DELAY, tmp_path).frame_types == ["I", "P", "P", "P", "P"]
    assert _encode(bqsquare, codec, 32, RANDOM_ACCESS, tmp_path).frame_types == ["I", "B", "B", "B", "P"]
    open_gop = GopLayout.from_frame_types(["I", "B", "B", "B", "I"])
    assert _encode(bqsquare, codec, 32, open_gop, tmp_path).frame_types == ["I", "B", "B", "B", "I"]


def test_frame_offset_selects_other_frames(cars: Path, tmp_path: Path) -> None:
    _need("x264")
    layout = GopLayout(3, 3, 1)
    first = _encode(cars, "x264", 32, layout, tmp_path)
    later = _encode(cars, "x264", 32, layout, tmp_path, frame_offset=2)
    assert first.bits != later.bits and first.psnr_y_frames != later.psnr_y_frames
    assert later.frame_offset == 2 and "f2-4" in later.settings


def test_vvenc_encodes_the_random_access_layout(bqsquare: Path, tmp_path: Path) -> None:
    """VVC inter frames are B slices, so even the final anchor decodes as B."""
    _need("vvenc")
    point = _encode(bqsquare, "vvenc", 32, RANDOM_ACCESS, tmp_path)
    assert point.bits > 0 and 25 < point.psnr_y < 50
    assert point.frame_types == ["I", "B", "B", "B", "B"]
    assert "GOPSize=16" in point.settings and "POC0IDR=1" in point.settings


def test_ten_bit_input(bqsquare: Path, tmp_path: Path) -> None:
    """The same frames in 10 bits and at the same standard QP land near the 8-bit result (x264 is given
    QP + 12 at 10 bits)."""
    _need("x264")
    ten_bit = tmp_path / "BQSquare_224x128_yuv420_10b.yuv"
    frames = np.fromfile(bqsquare, dtype=np.uint8, count=3 * 224 * 128 * 3 // 2)
    (frames.astype("<u2") << 2).tofile(ten_bit)
    layout = GopLayout(3, 3, 1)
    eight = _encode(bqsquare, "x264", 32, layout, tmp_path)
    ten = _encode(ten_bit, "x264", 32, layout, tmp_path, bitdepth=10)
    assert "-qp 44" in ten.settings
    assert ten.psnr_y == pytest.approx(eight.psnr_y, abs=1.0)


def test_impossible_requests_fail_clearly(bqsquare: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown video codec 'x266'"):
        _encode(bqsquare, "x266", 32, RANDOM_ACCESS, tmp_path)
    with pytest.raises(ValueError, match="QP 60 is outside 0..51"):
        _encode(bqsquare, "x265", 60, RANDOM_ACCESS, tmp_path)
    with pytest.raises(ValueError, match="holds 5 frame"):
        _encode(bqsquare, "x264", 32, GopLayout(6, 6, 0), tmp_path)
    with pytest.raises(ValueError, match="holds 5 frame"):
        _encode(bqsquare, "x264", 32, RANDOM_ACCESS, tmp_path, frame_offset=1)
    with pytest.raises(ValueError, match="vvenc cannot code 1 B frames"):
        _encode(bqsquare, "vvenc", 32, GopLayout(5, 5, 1), tmp_path)
    with pytest.raises(ValueError, match="at most 16 consecutive B frames"):
        _encode(bqsquare, "x264", 32, GopLayout(5, 30, 17), tmp_path)
    _need("x264")
    with pytest.raises(RuntimeError, match="ffmpeg x264 encoding failed"):
        _encode(bqsquare, "x264", 32, RANDOM_ACCESS, tmp_path, preset="not-a-preset")


def test_psnr_of_integer_planes() -> None:
    plane = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert plane_psnr(plane, plane, 8) == 100.0
    assert plane_psnr(plane, plane + 1, 8) == pytest.approx(20 * math.log10(255))
    off_by_two = (plane.astype(np.uint16) * 4 + 2).astype(np.uint16)
    assert plane_psnr(plane.astype(np.uint16) * 4, off_by_two, 10) == pytest.approx(10 * math.log10(1023**2 / 4))
