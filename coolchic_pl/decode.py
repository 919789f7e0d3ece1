"""``python -m coolchic_pl.decode photo.cool -o photo.png``: decode a .cool file.

The output format follows the extension of ``-o`` (.png or .ppm for RGB, a .yuv name
declaring the size, chroma format and bit depth for YUV); without ``-o`` the decoded
image is written beside the input as ``<name>.png`` or ``<name>_<W>x<H>_yuv420_<n>b.yuv``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from coolchic_pl.bitstream import BitstreamError, decode_coolchic
from coolchic_pl.io import FrameData, FrameFormatError, write_frame, yuv_file_name
from coolchic_pl.io.frame import read_bytes
from coolchic_pl.training.loss import output_planes


def decode_file(path: str | Path) -> FrameData:
    """Read, check and decode a .cool file into the frame it encodes."""
    try:
        data = read_bytes(path)
    except FrameFormatError as error:
        raise BitstreamError(error.problem) from None
    decoded = decode_coolchic(data)
    with torch.no_grad():
        image = decoded.model().image
    planes = output_planes(image, decoded.color_space, decoded.bitdepth, rounded=True)
    return FrameData(tuple(p.detach() for p in planes), decoded.bitdepth, decoded.color_space)


def default_output(path: Path, frame: FrameData) -> Path:
    if frame.color_space == "rgb":
        return path.with_suffix(".png")
    return path.with_name(yuv_file_name(path.stem, frame))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coolchic-decode", description=__doc__.splitlines()[0])
    parser.add_argument("bitstream", type=Path, help=".cool file")
    parser.add_argument("-o", "--output", type=Path, default=None, help="decoded image (.png, .ppm or .yuv)")
    args = parser.parse_args(argv)
    try:
        frame = decode_file(args.bitstream)
    except BitstreamError as error:
        print(f"error: {args.bitstream}: {error}", file=sys.stderr)
        return 2
    output = args.output or default_output(args.bitstream, frame)
    try:
        write_frame(frame, output)
    except FrameFormatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{output}: {frame.width}x{frame.height} {frame.color_space} {frame.bitdepth}-bit", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
