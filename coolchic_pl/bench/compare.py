"""``python -m coolchic_pl.bench.compare TEST REFERENCE``: BD-rate of one set of RD results
against another, image by image, e.g. two ``bench rd`` runs of different configs::

    python -m coolchic_pl.bench.compare runs/bench_fast5/results/coolchic_pl runs/bench/results/coolchic_pl

Each folder holds CompressAI JSON files (``<image>.json``, what ``bench rd`` writes under
``results/<codec>/``); images present in both are compared, and the mean is printed.
Negative: TEST needs less rate for the same PSNR.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from coolchic_pl.bench.bdrate import bd_psnr, bd_rate


def _curve(path: Path) -> tuple[list[float], list[float]]:
    results = json.loads(path.read_text())["results"]
    return results["bpp"], results["psnr-rgb"]


def compare(test: Path, reference: Path) -> dict[str, tuple[float, float]]:
    """Per image present in both folders: (BD-rate %, BD-PSNR dB) of test against reference."""
    table = {}
    for path in sorted(test.glob("*.json")):
        other = reference / path.name
        if other.is_file():
            (rate_t, psnr_t), (rate_r, psnr_r) = _curve(path), _curve(other)
            table[path.stem] = (bd_rate(rate_r, psnr_r, rate_t, psnr_t), bd_psnr(rate_r, psnr_r, rate_t, psnr_t))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coolchic_pl.bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("test", type=Path)
    parser.add_argument("reference", type=Path)
    args = parser.parse_args(argv)
    for folder in (args.test, args.reference):
        if not folder.is_dir():
            parser.error(f"{folder}: no such folder")
    table = compare(args.test, args.reference)
    if not table:
        parser.error("the two folders have no image in common")
    for image, (rate, psnr) in table.items():
        print(f"{image:16s} {rate:+7.1f} % ({psnr:+.2f} dB)")
    finite = [values for values in table.values() if not math.isnan(values[0])]
    if finite:
        print(f"{'mean':16s} {sum(r for r, _ in finite) / len(finite):+7.1f} % "
              f"({sum(p for _, p in finite) / len(finite):+.2f} dB) over {len(finite)} image(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
