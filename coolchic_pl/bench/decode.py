"""Decode speed: ``python -m coolchic_pl.bench decode a.cool video.cool [--repeats 5]``.

For each .cool file (image or video): the median in-process decode time split into
entropy decoding (header, networks, range-decoded latents), synthesis (integer upsampling and
synthesis of every Cool-Chic), warps (motion compensation and blending) and the rest, the
megapixels and frames per second it makes, then the
median wall time of ``coolchic-decode`` run from the shell (``python -m coolchic_pl.decode``)
and of the interpreter start-up with the decoder's imports. An image path (.png, .yuv)
instead of a .cool is first coded by a briefly trained, quantised decoder (``--arch``, ``--train_steps``): its latents are noisier
than a real encode's, so its entropy decoding is on the slow side. One thread by default, as
a decoder on one core. This is a benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator

import torch

from coolchic_pl import decode
from coolchic_pl.bench.bdrate import bd_rate
from coolchic_pl.bench.speed import quick_bitstream
from coolchic_pl.bitstream import codec
from coolchic_pl.bitstream.laplace_table import interval_bounds
from coolchic_pl.fixedpoint import samples
from coolchic_pl.fixedpoint.warp import tap_array, tap_table
from coolchic_pl.io import SampleFrame, read_frame
from coolchic_pl.metrics import psnr_db
from coolchic_pl.video import decoder as video_decoder

# (module, function name, part of the decode it belongs to): patched only while timing.
_TIMED = ((codec, "decode_networks", "entropy"), (codec, "decode_latents", "entropy"),
          (video_decoder, "decode_networks", "entropy"), (video_decoder, "decode_latents", "entropy"),
          (video_decoder, "read_network_parameters", "entropy"),
          (video_decoder, "decode_coolchic_latents", "entropy"),
          (samples, "raw_output", "synthesis"), (samples, "warp", "warps"))


@contextlib.contextmanager
def _timed_parts(totals: dict[str, float]) -> Iterator[None]:
    """Accumulate the time spent in each timed function into ``totals`` by part."""
    originals = [(module, name, getattr(module, name)) for module, name, _ in _TIMED]

    def timed(function: Callable, part: str) -> Callable:
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[part] += time.perf_counter() - start
        return wrapper

    for (module, name, part), (_, _, original) in zip(_TIMED, originals):
        setattr(module, name, timed(original, part))
    try:
        yield
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


# What coolchic-decode pays before decoding: the interpreter and the decoder's imports (it
# exits without the interpreter's teardown, see ``coolchic_pl.decode.cli``).
_STARTUP = "import os, coolchic_pl.decode; os._exit(0)"


# What a decoder computes once per process or grid size and keeps: emptied before every run,
# so that each pays what a fresh decoder pays (beyond Python and torch warming up).
_CACHES = (interval_bounds, tap_table, tap_array)


def in_process(path: Path, repeats: int) -> tuple[dict[str, float], list[SampleFrame]]:
    """Median total and parts (seconds) of ``decode_file_samples`` (what ``coolchic-decode``
    runs) over ``repeats`` runs, and the frames it decoded."""
    runs = []
    for _ in range(repeats):
        for cache in _CACHES:
            cache.cache_clear()
        parts: dict[str, float] = defaultdict(float)
        with _timed_parts(parts):
            start = time.perf_counter()
            frames = decode.decode_file_samples(path)
            total = time.perf_counter() - start
        parts["other"] = total - sum(parts.values())
        runs.append({"total": total, **parts})
    return {key: statistics.median(run.get(key, 0.0) for run in runs) for key in runs[0]}, frames


def shell_seconds(command: list[str], repeats: int, threads: int) -> float:
    """Median wall time of a command run from the shell with ``threads`` OpenMP threads."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def coded_image(image: Path, arch: str, train_steps: int, folder: Path) -> Path:
    """A .cool of ``image`` from a briefly trained, quantised ``arch`` decoder."""
    path = folder / f"{image.stem}_{arch}.cool"
    path.write_bytes(quick_bitstream(read_frame(image), arch, train_steps))
    return path


def measure(path: Path, repeats: int, threads: int, folder: Path) -> dict[str, float | str]:
    parts, frames = in_process(path, repeats)
    output = folder / decode.default_output(path, frames[0]).name
    cli = [sys.executable, "-m", "coolchic_pl.decode", str(path), "-o", str(output)]
    pixels = sum(frame.width * frame.height for frame in frames)
    return {"file": path.name, "bytes": path.stat().st_size, "frames": len(frames),
            **{k: round(v, 3) for k, v in parts.items()},
            "megapixels_per_s": round(pixels / parts["total"] / 1e6, 2),
            "frames_per_s": round(len(frames) / parts["total"], 1),
            "cli": round(shell_seconds(cli, repeats, threads), 3),
            "startup": round(shell_seconds([sys.executable, "-c", _STARTUP], repeats, threads), 3)}


def as_float32_file(data: bytes) -> bytes:
    """The same image .cool relabelled as the version decoded in float32 (3 -> 1, 4 -> 2)."""
    relabelled = bytearray(data[:-4])
    relabelled[len(codec.MAGIC)] -= codec.INTEGER_DECODING_OFFSET
    return codec.with_crc(bytes(relabelled))


def integer_rd_cost(folder: Path) -> int:
    """For every image encode under ``folder`` (a ``bench rd`` output): PSNR of its .cool
    decoded in integers and in float32 (same file, same rate), and per image the BD-rate of
    the integer decoding against the float32 one."""
    points: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for results_file in sorted(folder.rglob("results.json")):
        results = json.loads(results_file.read_text())
        if "bitstream" not in results or "frames" in results:
            continue
        data = (results_file.parent / results["bitstream"]).read_bytes()
        target = read_frame(results["image"]).planes
        integer = decode.decode_image_bytes(data).planes
        floating = decode.decode_image_bytes(as_float32_file(data)).planes
        points[Path(results["image"]).stem].append((results["bpp_file"], psnr_db(floating, target),
                                                    psnr_db(integer, target)))
    print(f"{'image':<12} {'points':>6} {'max |dPSNR| dB':>15} {'BD-rate integer vs float32':>27}")
    costs = []
    for image, rows in sorted(points.items()):
        rates, floating, integer = zip(*sorted(rows))
        cost = bd_rate(rates, floating, rates, integer) if len(rows) > 1 else float("nan")
        costs.append(cost)
        change = max(abs(f - i) for f, i in zip(floating, integer))
        print(f"{image:<12} {len(rows):>6} {change:>15.4f} {cost:>26.3f}%")
    if costs:
        print(f"{'mean':<12} {sum(len(r) for r in points.values()):>6} {'':>15} {sum(costs) / len(costs):>26.3f}%")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coolchic-bench decode", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", type=Path, help=".cool files, or images to code briefly first")
    parser.add_argument("--rd_cost", type=Path, default=None, metavar="FOLDER",
                        help="instead: the RD cost of integer decoding on the image encodes of a bench rd folder")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMP threads")
    parser.add_argument("--arch", default="hop5", help="decoder of images coded first")
    parser.add_argument("--train_steps", type=int, default=100, help="training steps of images coded first")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.rd_cost is not None:
        return integer_rd_cost(args.rd_cost)
    if not args.inputs:
        parser.error("give .cool files or images (or --rd_cost FOLDER)")
    if args.repeats < 1 or args.threads < 1 or args.train_steps < 0:
        parser.error("--repeats and --threads must be >= 1, --train_steps >= 0")
    missing = [str(p) for p in args.inputs if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    from threadpoolctl import threadpool_limits  # the bench extra's, needed by this command only

    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):  # NumPy's BLAS (the ARM) too
        return _bench(args)


def _bench(args: argparse.Namespace) -> int:
    rows = []
    header = f"{'file':<34} {'bytes':>7} {'frames':>6} {'total':>7} {'entropy':>8} {'synth.':>7} {'warps':>7} " \
             f"{'other':>7} {'MP/s':>6} {'fps':>6} {'cli':>7} {'startup':>8}"
    print(header)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for path in args.inputs:
            if path.suffix != ".cool":
                path = coded_image(path, args.arch, args.train_steps, folder)
            try:
                row = measure(path, args.repeats, args.threads, folder)
            except decode.BitstreamError as error:
                print(f"error: {path}: {error}", file=sys.stderr)
                return 2
            rows.append(row)
            print(f"{row['file']:<34} {row['bytes']:>7} {row['frames']:>6.0f} {row['total']:>7.3f} "
                  f"{row.get('entropy', 0):>8.3f} {row.get('synthesis', 0):>7.3f} {row.get('warps', 0):>7.3f} "
                  f"{row['other']:>7.3f} {row['megapixels_per_s']:>6.2f} {row['frames_per_s']:>6.1f} "
                  f"{row['cli']:>7.3f} {row['startup']:>8.3f}", flush=True)
    print(f"seconds, median of {args.repeats}, {args.threads} thread(s); MP/s and fps of the in-process total; "
          "cli = coolchic-decode from the shell, startup = the interpreter and the decoder's imports")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0
