"""``python -m coolchic_pl.bench {rd,video,speed,encode,quantize,decode,gpu,fuzz} ...``: rate-distortion and speed benchmarks."""

from __future__ import annotations

import argparse
import sys

from coolchic_pl.bench import decode, encode_time, fuzz, gpu, quantize_time, rd, speed, video
from coolchic_pl.io import FrameFormatError
from coolchic_pl.runtime import configure_cpu_allocator


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["speed"]:
        return speed.main(argv[1:])
    if argv[:1] == ["encode"]:
        configure_cpu_allocator()
        return encode_time.main(argv[1:])
    if argv[:1] == ["decode"]:
        return decode.main(argv[1:])
    if argv[:1] == ["gpu"]:
        return gpu.main(argv[1:])
    if argv[:1] == ["fuzz"]:
        return fuzz.main(argv[1:])
    if argv[:1] == ["quantize"]:
        configure_cpu_allocator()
        return quantize_time.main(argv[1:])
    parser = argparse.ArgumentParser(prog="coolchic-bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rd.add_arguments(commands.add_parser("rd", help="rate-distortion benchmark against classical codecs"))
    video.add_arguments(commands.add_parser("video", help="video rate-distortion against x264, x265 and vvenc"))
    commands.add_parser("speed", help="training/decoding speed benchmark (see speed --help)")
    commands.add_parser("encode", help="encode wall time against its training steps (see encode --help)")
    commands.add_parser("decode", help="decode time of .cool files, in-process and from the shell (see decode --help)")
    commands.add_parser("gpu", help="six checks of a device, with a table of figures (see gpu --help)")
    commands.add_parser("fuzz", help="decode mutated .cool files: every case a clean error or a decode (see fuzz --help)")
    commands.add_parser("quantize", help="q-step search and RDOQ time of a finished encode (see quantize --help)")
    args = parser.parse_args(argv)
    configure_cpu_allocator()
    try:
        return (video.run if args.command == "video" else rd.run)(args)
    except (FrameFormatError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
