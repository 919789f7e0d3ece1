"""``python -m coolchic_pl.decode photo.cool -o photo.png``: decode a .cool file.

An image file decodes to the format the extension of ``-o`` names (.png or .ppm for
RGB, a .yuv name declaring the size, chroma format and bit depth for YUV); a video file
decodes to a .yuv holding every frame in display order. Without ``-o`` the output goes
beside the input as ``<name>.png`` or ``<name>_<W>x<H>_yuv420_<n>b.yuv``.
``--output_chroma_format`` and ``--output_bitdepth`` convert YUV output (4:2:0 <-> 4:4:4
by chroma repetition / top-left decimation, bit depth by rescaling).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from coolchic_pl.bitstream import BitstreamError, DecodedBitstream, decode_coolchic
from coolchic_pl.fixedpoint import frame_samples, sample_planes
from coolchic_pl.io import FrameData, FrameFormatError, SampleFrame, write_frame, write_yuv, yuv_file_name
from coolchic_pl.io.frame import read_bytes
from coolchic_pl.video.decoder import decode_video, is_video_bitstream


def _read(path: str | Path) -> bytes:
    try:
        return read_bytes(path)
    except FrameFormatError as error:
        raise BitstreamError(error.problem) from None


def decode_file(path: str | Path) -> FrameData:
    """Read, check and decode an image .cool file into the frame it encodes."""
    data = _read(path)
    if is_video_bitstream(data):
        raise BitstreamError("this is a video bitstream: decode it with decode_sequence")
    return decode_image_bytes(data)


def decode_image_bytes(data: bytes) -> FrameData:
    """The frame of an image .cool held in memory, as planes in [0, 1]."""
    return decode_image_samples(data).to_frame_data()


def decode_image_samples(data: bytes) -> SampleFrame:
    """Integer decoding for the current versions; files of versions 1 and 2 decode in
    float32 as they were written (their samples may differ across machines)."""
    decoded = decode_coolchic(data)
    if not decoded.integer:
        return _float_image(decoded)
    samples = frame_samples(decoded.coolchic, decoded.bitdepth)
    return SampleFrame.of(sample_planes(samples, decoded.color_space), decoded.bitdepth, decoded.color_space)


def _float_image(decoded: DecodedBitstream) -> SampleFrame:
    """A version 1 or 2 file's frame, through the torch modules it was written by (imported
    here: the current versions decode without torch)."""
    from coolchic_pl.fixedpoint.modules import coolchic_module, decoded_planes

    model = coolchic_module(decoded.coolchic, decoded.bitdepth)
    planes = decoded_planes(model, decoded.color_space, decoded.bitdepth, integer=False)
    return FrameData(planes, decoded.bitdepth, decoded.color_space).to_samples()


def decode_sequence(path: str | Path) -> list[FrameData]:
    """Every frame of an image or video .cool file, in display order."""
    return decode_bytes(_read(path))


def decode_file_samples(path: str | Path) -> list[SampleFrame]:
    """:func:`decode_sequence` as integer samples, without torch: what ``coolchic-decode`` writes."""
    return decode_samples(_read(path))


def decode_bytes(data: bytes) -> list[FrameData]:
    """Every frame of an image or video .cool held in memory, in display order; any damage
    raises :class:`BitstreamError`, and nothing else."""
    return [frame.to_frame_data() for frame in decode_samples(data)]


def decode_samples(data: bytes) -> list[SampleFrame]:
    """:func:`decode_bytes` as integer samples, without torch."""
    if is_video_bitstream(data):
        return decode_video(data)[1]
    return [decode_image_samples(data)]


def convert(frame: SampleFrame, color_space: str | None, bitdepth: int | None) -> SampleFrame:
    """The frame as another YUV chroma format or bit depth (samples rescaled as writing the
    frame's [0, 1] values at that depth does)."""
    if frame.color_space == "rgb" and color_space not in (None, "rgb"):
        raise FrameFormatError("output", "an RGB image cannot be written as YUV")
    planes = frame.planes
    if color_space == "yuv444" and frame.color_space == "yuv420":
        planes = (frame.to_444(),)
    elif color_space == "yuv420" and frame.color_space == "yuv444":
        full = frame.planes[0]
        planes = (full[:1], full[1:2, ::2, ::2], full[2:3, ::2, ::2])
    return SampleFrame(planes, frame.bitdepth, color_space or frame.color_space).with_bitdepth(
        bitdepth or frame.bitdepth)


def default_output(path: Path, frame: SampleFrame) -> Path:
    if frame.color_space == "rgb":
        return path.with_suffix(".png")
    return path.with_name(yuv_file_name(path.stem, frame))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coolchic-decode", description=__doc__.splitlines()[0])
    parser.add_argument("bitstream", type=Path, help=".cool file (image or video)")
    parser.add_argument("-o", "--output", type=Path, default=None, help="decoded image (.png, .ppm or .yuv) or video "
                                                                          "(.yuv)")
    parser.add_argument("--output_chroma_format", choices=("420", "444"), default=None,
                        help="YUV output chroma format (default: the coded one)")
    parser.add_argument("--output_bitdepth", type=int, choices=range(8, 17), metavar="{8..16}", default=None,
                        help="YUV output bit depth (default: the coded one)")
    args = parser.parse_args(argv)
    try:
        frames = decode_file_samples(args.bitstream)
    except BitstreamError as error:
        print(f"error: {args.bitstream}: {error}", file=sys.stderr)
        return 2
    color_space = None if args.output_chroma_format is None else f"yuv{args.output_chroma_format}"
    try:
        frames = [convert(f, color_space, args.output_bitdepth) for f in frames]
        output = args.output or default_output(args.bitstream, frames[0])
        if len(frames) > 1:
            if output.suffix.lower() != ".yuv":
                raise FrameFormatError(output, "a video decodes to a .yuv file")
            write_yuv(frames, output)
        else:
            write_frame(frames[0], output)
    except FrameFormatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    first = frames[0]
    print(f"{output}: {len(frames)} frame(s) {first.width}x{first.height} {first.color_space} {first.bitdepth}-bit",
          file=sys.stderr)
    return 0


def cli() -> None:
    """``coolchic-decode``: :func:`main`, then exit without the interpreter's teardown. The
    output is complete and closed by then, and a file of version 1 or 2 (decoded through
    torch) would pay 0.2 s (measured) for tearing torch's modules down."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    cli()
