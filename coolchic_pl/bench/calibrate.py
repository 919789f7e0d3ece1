"""``python -m coolchic_pl.bench.calibrate [KODAK_DIR]``: mean RGB PSNR of each classical
codec at 0.5 bpp over a folder of images (log-rate interpolation per image), to check the
baselines against published figures before trusting BD-rates computed against them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from coolchic_pl.bench.classical import available_codecs, sweep


def psnr_at(folder: Path, bpp: float = 0.5) -> dict[str, float]:
    results: dict[str, list[float]] = {}
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as loaded:
            image = loaded.convert("RGB")
        for codec in available_codecs():
            points = sorted(sweep(codec, image), key=lambda p: p["bpp"])
            log_rates = np.log([p["bpp"] for p in points])
            results.setdefault(codec.name, []).append(
                float(np.interp(np.log(bpp), log_rates, [p["psnr_rgb"] for p in points])))
    return {name: float(np.mean(values)) for name, values in results.items()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "../shared/data/kodak")
    if not folder.is_dir():
        print(f"error: {folder}: no such folder", file=sys.stderr)
        return 2
    for name, psnr in psnr_at(folder).items():
        print(f"{name:10s} {psnr:.2f} dB at 0.5 bpp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
