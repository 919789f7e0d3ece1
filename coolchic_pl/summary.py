"""``python -m coolchic_pl.summary``: build a decoder for an image and describe it.

Reads the image, builds the chosen Cool-Chic architecture for its size, runs one
evaluation forward pass (hard-rounded latents, as a decoder would) and prints the
parameter counts per module, the MAC/pixel and the initial rate and PSNR.
"""

from __future__ import annotations

import argparse
import sys

import torch

from coolchic_pl.data import DEFAULT_IMAGE
from coolchic_pl.io import FrameFormatError, read_frame
from coolchic_pl.metrics import psnr_db
from coolchic_pl.model.architecture import ARCHITECTURES, architecture_from_name
from coolchic_pl.model.coolchic import MODULE_NAMES, CoolChic


def describe(model: CoolChic, target: torch.Tensor) -> list[str]:
    model.eval()
    with torch.no_grad():
        out = model()
    height, width = model.image_size
    lines = [f"image {width}x{height}, {model.latent.n_latents} latents in {len(model.latent.sizes)} grids"]
    for name in MODULE_NAMES[1:]:
        count = sum(p.numel() for p in model.module_parameters([name]))
        lines.append(f"  {name:11s} {count:8d} parameters")
    lines.append(f"MAC/pixel: {model.mac_per_pixel():.1f}")
    bpp = out.rate_bits.sum().item() / (height * width)
    psnr = psnr_db([out.image.clamp(0, 1)], [target])
    lines.append(f"at initialisation: {bpp:.4f} bpp (latents), PSNR {psnr:.2f} dB")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coolchic_pl.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(DEFAULT_IMAGE), help="RGB image to size the decoder for")
    parser.add_argument("--arch", default="hop", choices=sorted(ARCHITECTURES), help="decoder size")
    args = parser.parse_args(argv)
    try:
        frame = read_frame(args.input)
    except FrameFormatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if frame.color_space != "rgb":
        print(f"error: {args.input}: summary takes RGB images (got {frame.color_space})", file=sys.stderr)
        return 2
    model = CoolChic((frame.height, frame.width), architecture_from_name(args.arch))
    print(f"Cool-Chic '{args.arch}' decoder for {args.input}")
    print("\n".join(describe(model, frame.planes[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
