"""Raw planar YUV files named ``<name>_<W>x<H>_..._yuv420_8b.yuv``.

Raw YUV carries no header, so the frame geometry comes from the file name: a
``<W>x<H>`` token, a ``yuv420`` or ``yuv444`` token and a ``<n>b`` bit-depth token
(8 to 16). Samples above 8 bits are stored as 16-bit little-endian words. A file may
hold several frames back to back; its size must be a whole number of frames.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from coolchic_pl.io.frame import ColorSpace, FrameData, FrameFormatError, SampleFrame, atomic_write, samples_to_tensor

_SIZE_TOKEN = re.compile(r"^(\d+)x(\d+)$")
_DEPTH_TOKEN = re.compile(r"^(\d+)b(?:it)?$")


@dataclass(frozen=True)
class YuvFormat:
    """Geometry of one frame of a raw YUV file, as its name declares it."""

    width: int
    height: int
    color_space: ColorSpace
    bitdepth: int

    @property
    def chroma_size(self) -> tuple[int, int]:
        if self.color_space == "yuv420":
            return (self.height + 1) // 2, (self.width + 1) // 2
        return self.height, self.width

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.bitdepth <= 8 else 2

    @property
    def frame_bytes(self) -> int:
        chroma_h, chroma_w = self.chroma_size
        return (self.height * self.width + 2 * chroma_h * chroma_w) * self.bytes_per_sample

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.bitdepth <= 8 else np.dtype("<u2")


def parse_yuv_name(path: str | os.PathLike) -> YuvFormat:
    """Read width, height, chroma format and bit depth from the file name."""
    tokens = Path(path).stem.split("_")
    sizes = [m for m in (_SIZE_TOKEN.match(t) for t in tokens[1:]) if m]
    if not sizes:
        raise FrameFormatError(path, "YUV file name needs a _<W>x<H>_ token, e.g. name_192x128_yuv420_8b.yuv")
    width, height = int(sizes[0].group(1)), int(sizes[0].group(2))
    if width == 0 or height == 0:
        raise FrameFormatError(path, f"YUV size {width}x{height} in the file name is empty")
    formats = [t for t in tokens if t in ("yuv420", "yuv444", "420", "444")]
    if not formats:
        raise FrameFormatError(path, "YUV file name needs a yuv420 or yuv444 token")
    color_space: ColorSpace = "yuv420" if formats[-1].endswith("420") else "yuv444"
    depths = [m for m in (_DEPTH_TOKEN.match(t) for t in tokens) if m]
    if not depths:
        raise FrameFormatError(path, "YUV file name needs a bit-depth token such as _8b or _10b")
    bitdepth = int(depths[-1].group(1))
    if not 8 <= bitdepth <= 16:
        raise FrameFormatError(path, f"YUV bit depth {bitdepth} is outside 8..16")
    return YuvFormat(width, height, color_space, bitdepth)


def yuv_file_name(stem: str, frame: FrameData | SampleFrame) -> str:
    """``<stem>_<W>x<H>_<colour space>_<n>b.yuv``: the name :func:`parse_yuv_name` reads back."""
    return f"{stem}_{frame.width}x{frame.height}_{frame.color_space}_{frame.bitdepth}b.yuv"


def count_yuv_frames(path: str | os.PathLike) -> int:
    """Number of frames in the file, checking that its size matches its name."""
    fmt = parse_yuv_name(path)
    file = Path(path)
    if not file.is_file():
        raise FrameFormatError(path, "no such file")
    size = file.stat().st_size
    if size == 0:
        raise FrameFormatError(path, "file is empty")
    if size % fmt.frame_bytes:
        raise FrameFormatError(
            path,
            f"size {size} bytes is not a whole number of {fmt.width}x{fmt.height} {fmt.color_space} "
            f"{fmt.bitdepth}-bit frames ({fmt.frame_bytes} bytes each): does the name match the content?",
        )
    return size // fmt.frame_bytes


def read_yuv(path: str | os.PathLike, frame_index: int = 0) -> FrameData:
    fmt = parse_yuv_name(path)
    n_frames = count_yuv_frames(path)
    if not 0 <= frame_index < n_frames:
        raise FrameFormatError(path, f"frame {frame_index} requested but the file holds {n_frames} frame(s)")
    try:
        with open(path, "rb") as handle:
            handle.seek(frame_index * fmt.frame_bytes)
            data = handle.read(fmt.frame_bytes)
    except OSError as error:
        raise FrameFormatError(path, f"cannot read: {error.strerror}") from error
    samples = np.frombuffer(data, dtype=fmt.numpy_dtype)
    if samples.max() >= 2**fmt.bitdepth:
        raise FrameFormatError(path, f"sample value {samples.max()} does not fit in {fmt.bitdepth} bits")
    luma_size = fmt.height * fmt.width
    chroma_h, chroma_w = fmt.chroma_size
    chroma_size = chroma_h * chroma_w
    planes = [
        samples[:luma_size].reshape(fmt.height, fmt.width, 1),
        samples[luma_size:luma_size + chroma_size].reshape(chroma_h, chroma_w, 1),
        samples[luma_size + chroma_size:].reshape(chroma_h, chroma_w, 1),
    ]
    if fmt.color_space == "yuv444":
        return FrameData((samples_to_tensor(np.concatenate(planes, axis=2), fmt.bitdepth),), fmt.bitdepth, "yuv444")
    return FrameData(tuple(samples_to_tensor(plane, fmt.bitdepth) for plane in planes), fmt.bitdepth, "yuv420")


def write_yuv(frames: FrameData | SampleFrame | Sequence[FrameData | SampleFrame], path: str | os.PathLike) -> None:
    """Write one frame, or the frames of a sequence back to back; their format must agree
    with the file name. The file appears only when complete."""
    frames = [frames] if isinstance(frames, (FrameData, SampleFrame)) else list(frames)
    fmt = parse_yuv_name(path)
    declared = (fmt.width, fmt.height, fmt.color_space, fmt.bitdepth)
    chunks = []
    for frame in frames:
        if frame.color_space == "rgb":
            raise FrameFormatError(path, "cannot write an rgb frame as raw YUV: use a .png or .ppm name")
        actual = (frame.width, frame.height, frame.color_space, frame.bitdepth)
        if declared != actual:
            raise FrameFormatError(path, f"file name declares {declared} but the frame is {actual}")
        samples = frame.to_samples() if isinstance(frame, FrameData) else frame
        chunks += [plane.astype(fmt.numpy_dtype).tobytes() for plane in samples.planes]
    with atomic_write(path) as tmp:
        tmp.write_bytes(b"".join(chunks))
