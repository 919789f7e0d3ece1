"""One command that checks a device: ``python -m coolchic_pl.bench gpu [--device cuda]``.

Six checks, one line each, then a table of figures:

1. ``encode``: the config (default ``configs/fast5.yaml``) on a 768x512 Kodak image, on the
   device, through ``coolchic-fit``: ms per training step, PSNR, rate, wall time;
2. ``compile``: the same with ``--compile`` (skipped on the CPU, where torch 2.13 cannot
   compile the decoder) and its speed-up;
3. ``quantize``: the q-step search and RDOQ of the encode's decoder run again on the device,
   timed, and compared with the same on the CPU (same choices: a digest);
4. ``resume``: the encode stopped by its job duration half-way on the device (a checkpoint),
   then rerun on the CPU: its ``.cool`` must be byte-identical to the uninterrupted one;
5. ``decode``: the integer decoder after the latents on the device gives the CPU's samples;
6. ``video``: a three-frame I/B/P encode (debug preset) on the device that decodes through
   ``coolchic-decode`` to the encoder's own frames.

It runs with ``--device cpu`` too (the test suite does, on a small image): every check but
``compile`` then exercises the same code on the CPU. Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from coolchic_pl.bench.quantize_time import load_run, time_quantization
from coolchic_pl.bitstream import decode_coolchic
from coolchic_pl.fixedpoint.modules import coolchic_module, decoded_samples

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"


class CheckFailed(Exception):
    pass


class CheckSkipped(Exception):
    pass


def _fit(arguments: list[str], output_dir: Path, expect: int = 0) -> float:
    """Run ``coolchic-fit`` with ``arguments``; its wall time (CheckFailed on another exit code)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "coolchic_pl.fit", *arguments, "--output_dir", str(output_dir)],
                            capture_output=True, text=True)
    if result.returncode != expect:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckFailed(f"coolchic-fit exited with {result.returncode} (expected {expect}): {tail}")
    return time.perf_counter() - start


def _run_dir(output_dir: Path) -> Path:
    return next(path.parent for path in output_dir.glob("*/results.json"))


def _results(output_dir: Path) -> dict:
    return json.loads((_run_dir(output_dir) / "results.json").read_text())


def _step_ms(results: dict) -> float:
    return 1e3 * results["encoding_time_s"] / results["n_iterations"]


def _cool(output_dir: Path) -> bytes:
    run_dir = _run_dir(output_dir)
    return (run_dir / _results(output_dir)["bitstream"]).read_bytes()


class DeviceCheck:
    """The checks, sharing the first encode; figures collects what the table prints."""

    def __init__(self, args: argparse.Namespace, folder: Path):
        self.args, self.folder = args, folder
        self.base = ["--config", str(args.config), "--input", str(args.image)] + \
                    (["--n_itr", str(args.n_itr)] if args.n_itr else [])
        self.figures: dict[str, str] = {}

    def encode(self) -> str:
        seconds = _fit([*self.base, "--device", self.args.device], self.folder / "eager")
        results = _results(self.folder / "eager")
        step_ms = _step_ms(results)
        self.figures.update({"encode ms/step": f"{step_ms:.1f}", "encode s": f"{seconds:.1f}",
                             "PSNR dB": f"{results['psnr_db']:.3f}", "bpp": f"{results['bpp_file']:.4f}"})
        return (f"{results['psnr_db']:.3f} dB at {results['bpp_file']:.4f} bpp, {results['n_iterations']} "
                f"iterations, {step_ms:.1f} ms/step, {seconds:.1f} s")

    def compile(self) -> str:
        if self.args.device == "cpu":
            raise CheckSkipped("torch 2.13 cannot compile the decoder on the CPU")
        seconds = _fit([*self.base, "--device", self.args.device, "--compile", "true"], self.folder / "compiled")
        step_ms = _step_ms(_results(self.folder / "compiled"))
        eager_ms = _step_ms(_results(self.folder / "eager"))
        self.figures.update({"compiled ms/step": f"{step_ms:.1f}", "compile speed-up": f"{eager_ms / step_ms:.2f}"})
        return f"{step_ms:.1f} ms/step ({eager_ms / step_ms:.2f}x eager), {seconds:.1f} s"

    def quantize(self) -> str:
        run_dir = _run_dir(self.folder / "eager")
        timings = {}
        for device in dict.fromkeys((self.args.device, "cpu")):
            module = load_run(run_dir, None).to(device)
            timings[device] = time_quantization(module)
        own = timings[self.args.device]
        self.figures.update({"q-step search s": f"{own['search_s']:.2f}", "RDOQ s": f"{own['rdoq_s']:.2f}"})
        same = own["digest"] == timings["cpu"]["digest"]
        detail = (f"search {own['search_s']:.2f} s, RDOQ {own['rdoq_s']:.2f} s ({own['rdoq_tries']} tries) on "
                  f"{self.args.device}; {'same' if same else 'different'} choices as on the CPU")
        return detail

    def resume(self) -> str:
        folder = self.folder / "resumed"
        half_min = _results(self.folder / "eager")["encoding_time_s"] / 2 / 60
        _fit([*self.base, "--device", self.args.device, "--job_duration_min", f"{half_min:.4f}"], folder, expect=42)
        _fit([*self.base, "--device", "cpu"], folder)
        if _cool(folder) != _cool(self.folder / "eager"):
            raise CheckFailed(f"stopped on {self.args.device} after {60 * half_min:.0f} s and resumed on the CPU: "
                              "the .cool differs from the uninterrupted one")
        return f"stopped on {self.args.device} after {60 * half_min:.0f} s, resumed on the CPU: identical .cool"

    def decode(self) -> str:
        decoded = decode_coolchic(_cool(self.folder / "eager"))
        model = coolchic_module(decoded.coolchic, decoded.bitdepth)
        cpu = decoded_samples(model, decoded.bitdepth)
        start = time.perf_counter()
        device = decoded_samples(model.to(self.args.device), decoded.bitdepth)
        seconds = time.perf_counter() - start
        if not torch.equal(device.cpu(), cpu):
            raise CheckFailed(f"{int((device.cpu() != cpu).sum())} samples differ from the CPU decode")
        self.figures["synthesis on device s"] = f"{seconds:.3f}"
        return f"{cpu.numel()} samples identical to the CPU decode ({seconds:.3f} s after the latents)"

    def video(self) -> str:
        folder = self.folder / "video"
        seconds = _fit(["--config", str(REPO / "configs" / "debug.yaml"), "--input", str(self.args.video),
                        "--n_frames", "3", "--intra_pos", "0", "--p_pos", "-1", "--device", self.args.device], folder)
        run_dir = _run_dir(folder)
        expected = next(run_dir.glob("decoded_*.yuv"))
        output = self.folder / expected.name
        result = subprocess.run([sys.executable, "-m", "coolchic_pl.decode", str(next(run_dir.glob("*.cool"))),
                                 "-o", str(output)], capture_output=True, text=True)
        if result.returncode != 0 or output.read_bytes() != expected.read_bytes():
            raise CheckFailed("the video does not decode to the encoder's frames")
        self.figures["video 3 frames s"] = f"{seconds:.1f}"
        return f"3 frames encoded in {seconds:.1f} s, decoded by coolchic-decode to the encoder's frames"


def _report(name: str, check: Callable[[], str]) -> bool:
    """Run one check and print its line; False only when it failed."""
    start = time.perf_counter()
    try:
        status, detail = "ok", check()
    except CheckSkipped as skipped:
        status, detail = "skip", str(skipped)
    except CheckFailed as failure:
        status, detail = "FAIL", str(failure)
    except (RuntimeError, ValueError, OSError, StopIteration) as error:
        status, detail = "FAIL", f"{type(error).__name__}: {error}"
    print(f"{status:<5}{name:<9}{detail} [{time.perf_counter() - start:.0f} s]", flush=True)
    return status != "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coolchic-bench gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="the device to check")
    parser.add_argument("--image", type=Path, default=DATA / "kodak" / "kodim15.png", help="image to encode")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fast5.yaml", help="image encode config")
    parser.add_argument("--n_itr", type=int, default=0, help="iterations of the image encode (0: the config's)")
    parser.add_argument("--video", type=Path, default=DATA / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv",
                        help="video for the three-frame encode")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: torch sees no CUDA device (use --device cpu to run the checks on the CPU)", file=sys.stderr)
        return 2
    for path in (args.image, args.config, args.video):
        if not path.is_file():
            print(f"error: {path}: no such file", file=sys.stderr)
            return 2
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"checking {args.device} ({name}), torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        checks = DeviceCheck(args, Path(scratch))
        passed = [_report(name, getattr(checks, name))
                  for name in ("encode", "compile", "quantize", "resume", "decode", "video")]
    print("\n| figure | value |\n|---|---|")
    for key, value in checks.figures.items():
        print(f"| {key} | {value} |")
    return 0 if all(passed) else 1
