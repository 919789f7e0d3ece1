"""``python -m coolchic_pl.bench.calibrate [KODAK_DIR] [--codecs NAME,...]``: mean RGB PSNR of
each classical codec at 0.5 bpp over a folder of images (log-rate interpolation per image), to
check the baselines against published figures before trusting BD-rates computed against them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from coolchic_pl.bench.classical import available_codecs, sweep


def psnr_at(folder: Path, codec_names: set[str] | None = None, bpp: float = 0.5) -> dict[str, float]:
    """Mean over the folder's PNGs of each codec's PSNR at ``bpp``; ``codec_names`` None means every codec."""
    codecs = [codec for codec in available_codecs() if codec_names is None or codec.name in codec_names]
    results: dict[str, list[float]] = {}
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as loaded:
            image = loaded.convert("RGB")
        for codec in codecs:
            points = sorted(sweep(codec, image), key=lambda p: p["bpp"])
            log_rates = np.log([p["bpp"] for p in points])
            results.setdefault(codec.name, []).append(
                float(np.interp(np.log(bpp), log_rates, [p["psnr_rgb"] for p in points])))
    return {name: float(np.mean(values)) for name, values in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coolchic_pl.bench.calibrate", description=__doc__)
    parser.add_argument("folder", nargs="?", type=Path, default=Path("../shared/data/kodak"))
    parser.add_argument("--codecs", help="comma-separated codec names (default: every available codec)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder}: no such folder")
    names = set(args.codecs.split(",")) if args.codecs else None
    unknown = (names or set()) - {codec.name for codec in available_codecs()}
    if unknown:
        parser.error(f"--codecs: {', '.join(sorted(unknown))} not available")
    for name, psnr in psnr_at(args.folder, names).items():
        print(f"{name:10s} {psnr:.2f} dB at 0.5 bpp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
