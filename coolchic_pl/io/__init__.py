"""Frame readers and writers, chosen by file extension (torch only to make a tensor)."""

from __future__ import annotations

import os
from pathlib import Path

from coolchic_pl.io.frame import COLOR_SPACES, ColorSpace, FrameData, FrameFormatError, SampleFrame
from coolchic_pl.io.image import read_pillow_image, read_png, read_ppm, write_png, write_ppm
from coolchic_pl.io.yuv import YuvFormat, count_yuv_frames, parse_yuv_name, read_yuv, write_yuv, yuv_file_name

# What write_frame writes; read_frame also reads any 8-bit RGB image Pillow reads.
SUPPORTED_EXTENSIONS = (".png", ".ppm", ".yuv")

__all__ = [
    "COLOR_SPACES", "ColorSpace", "FrameData", "FrameFormatError", "SUPPORTED_EXTENSIONS", "SampleFrame", "YuvFormat",
    "count_yuv_frames", "parse_yuv_name", "read_frame", "write_frame",
    "read_pillow_image", "read_png", "read_ppm", "read_yuv", "write_png", "write_ppm", "write_yuv", "yuv_file_name",
]


def _extension(path: str | os.PathLike) -> str:
    extension = Path(path).suffix.lower()
    if extension not in SUPPORTED_EXTENSIONS:
        raise FrameFormatError(path, f"unsupported format '{extension or 'no extension'}': expected one of "
                                     f"{', '.join(SUPPORTED_EXTENSIONS)}")
    return extension


def read_frame(path: str | os.PathLike, frame_index: int = 0) -> FrameData:
    """Read one frame; ``frame_index`` selects a frame of a multi-frame .yuv file.

    .png (8 and 16 bits), .ppm (1 to 16 bits) and .yuv have readers of their own; any
    other file is read by Pillow as an 8-bit RGB image.
    """
    extension = Path(path).suffix.lower()
    if extension == ".yuv":
        return read_yuv(path, frame_index)
    if frame_index != 0:
        raise FrameFormatError(path, f"frame {frame_index} requested but an image file holds one frame")
    readers = {".png": read_png, ".ppm": read_ppm}
    return readers.get(extension, read_pillow_image)(path)


def write_frame(frame: FrameData | SampleFrame, path: str | os.PathLike) -> None:
    """Write a frame in the format its extension names; the file appears only when complete."""
    extension = _extension(path)
    if extension == ".yuv":
        write_yuv(frame, path)
    elif extension == ".png":
        write_png(frame, path)
    else:
        write_ppm(frame, path)
