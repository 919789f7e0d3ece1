"""Training-step speed benchmark: ``python -m coolchic_pl.bench.speed --images a.png b.png``.

Times forward + backward + gradient clipping + Adam of one Cool-Chic training step with
the main phase's quantiser (softround with Gaussian noise), as the encoder runs it
thousands of times per image. This is a benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib import resources
from pathlib import Path

import torch

from coolchic_pl.io import FrameFormatError, read_frame
from coolchic_pl.model.architecture import ARCHITECTURES, architecture_from_name
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.runtime import configure_cpu_allocator
from coolchic_pl.training.loss import mse, rate_distortion_loss

DEFAULT_IMAGE = resources.files("coolchic_pl") / "data" / "kodim15_192x128.png"


def time_training_steps(
    image_path: str | Path, arch: str, steps: int, warmup: int, repeats: int = 5, lmbda: float = 1e-3
) -> dict:
    """Wall time per training step: ``repeats`` blocks of ``steps`` steps after ``warmup``
    untimed ones. The median block is the figure; the best block is kept too because
    shared machines add noise in one direction only."""
    frame = read_frame(image_path)
    if frame.color_space != "rgb":
        raise FrameFormatError(image_path, "the speed benchmark takes RGB images")
    target = frame.planes[0]
    model = CoolChic((frame.height, frame.width), architecture_from_name(arch))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    temperature, noise = torch.tensor(0.3), torch.tensor(0.25)
    parameters = list(model.parameters())

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model("softround", temperature, "gaussian", noise)
        loss = rate_distortion_loss(mse((out.image.clamp(0.0, 1.0),), (target,)), out.rate_bits.sum(), lmbda, frame.n_pixels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 0.1)
        optimizer.step()

    for _ in range(warmup):
        step()
    block_ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        block_ms.append((time.perf_counter() - start) / steps * 1e3)
    ms_per_step = statistics.median(block_ms)
    return {
        "image": str(image_path),
        "height": frame.height,
        "width": frame.width,
        "arch": arch,
        "mac_per_pixel": round(model.mac_per_pixel(), 1),
        "steps": steps,
        "repeats": repeats,
        "ms_per_step": round(ms_per_step, 2),
        "best_ms_per_step": round(min(block_ms), 2),
        "iterations_per_s": round(1e3 / ms_per_step, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coolchic_pl.bench.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=[str(DEFAULT_IMAGE)], help="RGB images to time")
    parser.add_argument("--arch", default="hop", choices=sorted(ARCHITECTURES))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per image (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="skip configure_cpu_allocator(), to measure what it gains")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--steps and --repeats must be >= 1 and --warmup >= 0")
    if not args.default_allocator:
        configure_cpu_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, arch {args.arch}")
    try:
        for image in args.images:
            result = time_training_steps(image, args.arch, args.steps, args.warmup, args.repeats)
            results.append(result)
            print(f"{Path(image).name:28s} {result['height']:4d}x{result['width']:<4d} "
                  f"{result['ms_per_step']:8.2f} ms/step (best {result['best_ms_per_step']:.2f}) "
                  f"{result['iterations_per_s']:7.1f} it/s "
                  f"({result['mac_per_pixel']} MAC/pixel)")
    except FrameFormatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
