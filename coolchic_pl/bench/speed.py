"""Speed benchmark: ``python -m coolchic_pl.bench speed --images a.png b.png --archs hop lop``.

Times what the encoder runs thousands of times per image: one training step (forward,
backward, gradient clipping, fused Adam) with the main phase's quantiser (softround,
Gaussian noise). With ``--lightning N`` it also runs an N-iteration main phase through the
Lightning Trainer (callbacks and validations included) and as a plain PyTorch loop,
alternately in this process, and prints the overhead. With ``--decode`` it trains a few
steps, quantises, writes a .cool and times decoding it; with ``--checkpoint N`` it times
the checkpoints of an N-iteration phase that writes one after every iteration. With
``--copies 1 2 5`` each image is also timed as that many copies side by side: a step over K
copies does the arithmetic of K warm-up candidates with the per-step overhead of one, so it
bounds what training the candidates batched could gain. Peak memory
is the process's maximum resident size. With ``--preset intra5`` the steps are those of
Cool-Chic 5's core phase (SOAP) instead of c3x_intra's main phase (Adam).

With ``--against REV [REV ...]`` the steps of this checkout and of each earlier commit (its
files taken with ``git archive``) are timed by one worker process per source tree
(:mod:`coolchic_pl.bench.step_worker`), block after block in turn, so that a speed-up is
a ratio measured in one sitting on one machine state. This is a benchmark, not a test: it
prints figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from coolchic_pl.bench.step_worker import train_step
from coolchic_pl.bitstream.codec import encode_coolchic
from coolchic_pl.fixedpoint.coolchic import IntegerCoolChic
from coolchic_pl.callbacks.checkpoint import StageCheckpoint
from coolchic_pl.config import TrainerPhase, make_preset
from coolchic_pl.data import DEFAULT_IMAGE
from coolchic_pl.decode import decode_file
from coolchic_pl.io import FrameData, FrameFormatError, read_frame
from coolchic_pl.model.architecture import ARCHITECTURES, CoolChicArchitecture, architecture_from_name
from coolchic_pl.nnquant.quantize import quantize_networks
from coolchic_pl.runtime import configure_cpu_allocator
from coolchic_pl.training.checkpoint import Checkpointer
from coolchic_pl.training.datamodule import SingleFrameDataModule
from coolchic_pl.training.module import CoolChicModule
from coolchic_pl.training.rng import capture_rng_states
from coolchic_pl.training.runner import IN_TRAINING, fit_stage, make_trainer, stage_callbacks


def _fresh_module(frame: FrameData, arch: str | CoolChicArchitecture, n_itr: int, seed: int = 0,
                  phase: TrainerPhase | None = None) -> CoolChicModule:
    """A module in ``phase`` (by default c3x_intra's main phase, no quantisation)."""
    torch.manual_seed(seed)
    architecture = architecture_from_name(arch) if isinstance(arch, str) else arch
    module = CoolChicModule(frame, architecture, lmbda=1e-3)
    module.phase = phase or make_preset("c3x_intra", n_itr).all_phases[0]
    module.temperature.fill_(module.phase.softround_temperature[0])
    module.noise_parameter.fill_(module.phase.noise_parameter[0])
    return module


def side_by_side(frame: FrameData, copies: int) -> FrameData:
    """``copies`` of ``frame`` next to each other, as one wider frame."""
    if frame.color_space == "yuv420" and frame.width % 2 and copies > 1:
        raise FrameFormatError(f"a 4:2:0 frame of odd width {frame.width} cannot be copied side by side")
    return replace(frame, planes=tuple(plane.repeat(1, 1, 1, copies) for plane in frame.planes))


def step_times(frame: FrameData, arch: str | CoolChicArchitecture, steps: int, warmup: int, repeats: int,
               phase: TrainerPhase | None = None) -> list[float]:
    """ms/step of ``repeats`` blocks of ``steps`` raw training steps after ``warmup`` untimed ones."""
    module = _fresh_module(frame, arch, steps, phase=phase)
    optimizer = module.configure_optimizers()
    for _ in range(warmup):
        train_step(module, optimizer)
    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            train_step(module, optimizer)
        blocks.append((time.perf_counter() - start) / steps * 1e3)
    return blocks


def _raw_phase(module: CoolChicModule) -> None:
    """The main phase as a plain loop: same steps, validations at the same points."""
    phase = module.phase
    optimizer = module.configure_optimizers()
    for iteration in range(phase.max_itr):
        train_step(module, optimizer)
        if (iteration + 1) % phase.freq_valid == 0 or iteration + 1 == phase.max_itr:
            module.evaluate()


def _lightning_phase(module: CoolChicModule) -> None:
    fit_stage(module, module.phase, "phase0")


def lightning_overhead(frame: FrameData, arch: str, n_itr: int, repeats: int) -> dict[str, float]:
    """Median ms/step of a whole phase run by Lightning and by a plain loop, alternating."""
    timings: dict[str, list[float]] = {"raw": [], "lightning": []}
    runs: dict[str, Callable[[CoolChicModule], None]] = {"raw": _raw_phase, "lightning": _lightning_phase}
    for _ in range(repeats):
        for name, run in runs.items():
            module = _fresh_module(frame, arch, n_itr)
            start = time.perf_counter()
            run(module)
            timings[name].append((time.perf_counter() - start) / n_itr * 1e3)
    raw, lightning = statistics.median(timings["raw"]), statistics.median(timings["lightning"])
    return {"raw_ms_per_step": round(raw, 2), "lightning_ms_per_step": round(lightning, 2),
            "lightning_overhead_pct": round(100 * (lightning / raw - 1), 1)}


def checkpoint_cost(frame: FrameData, arch: str, n_itr: int, folder: Path) -> dict[str, float]:
    """Median time and size of one Lightning checkpoint inside a main phase: a phase of
    ``n_itr`` iterations checkpointing at every iteration, with the payload an encode
    writes (Trainer state, the candidate's codec state, random generators)."""
    module = _fresh_module(frame, arch, n_itr)
    path = folder / f"speed_{arch}_{frame.height}x{frame.width}.ckpt"
    checkpointer = Checkpointer(path, interval_s=1e-9)
    times = []

    class Timed(StageCheckpoint):
        def on_train_batch_end(self, trainer, *args) -> None:
            before = checkpointer.saving_s
            super().on_train_batch_end(trainer, *args)
            if checkpointer.saving_s > before:
                times.append(checkpointer.saving_s - before)

    def extras() -> dict:
        return {"position": IN_TRAINING, "runner": {"candidates": [module.codec_state()]}, "rng": capture_rng_states()}

    phase = module.phase
    trainer = make_trainer(phase, [*stage_callbacks(phase, "phase0", 0, None), Timed(checkpointer, phase, extras)])
    try:
        trainer.fit(module, datamodule=SingleFrameDataModule())
        size_mb = path.stat().st_size / 2**20
    finally:
        path.unlink(missing_ok=True)
    return {"checkpoint_ms": round(1e3 * statistics.median(times), 1), "checkpoint_mb": round(size_mb, 2)}


def quick_bitstream(frame: FrameData, arch: str, train_steps: int) -> bytes:
    """A .cool of ``frame`` from an ``arch`` decoder trained ``train_steps`` steps and quantised."""
    module = _fresh_module(frame, arch, train_steps)
    optimizer = module.configure_optimizers()
    for _ in range(train_steps):
        train_step(module, optimizer)
    module.quantization = quantize_networks(module.coolchic, module.evaluate_loss, max_passes=1)
    return encode_coolchic(IntegerCoolChic.from_module(module.coolchic, frame.bitdepth), module.quantization,
                           frame.color_space, frame.bitdepth)


def decode_time(frame: FrameData, arch: str, train_steps: int, repeats: int, folder: Path) -> dict[str, float]:
    """Median time to decode a .cool of a briefly trained, quantised model (in-process)."""
    path = folder / f"speed_{arch}_{frame.height}x{frame.width}.cool"
    data = quick_bitstream(frame, arch, train_steps)
    path.write_bytes(data)
    times = []
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            decode_file(path)
            times.append(time.perf_counter() - start)
    finally:
        path.unlink()
    return {"decode_s": round(statistics.median(times), 3), "bitstream_bytes": len(data)}


WORKER = Path(__file__).with_name("step_worker.py")
THIS_TREE = Path(__file__).resolve().parents[2]


class StepWorker:
    """One :mod:`~coolchic_pl.bench.step_worker` process running the package of ``tree``."""

    def __init__(self, label: str, tree: Path, threads: int):
        self.label = label
        command = [sys.executable, "-c", f"import runpy; runpy.run_path({str(WORKER)!r}, run_name='__main__')",
                   str(threads)]
        self.process = subprocess.Popen(command, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the step worker of {self.label} stopped (its error is above)")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def source_tree(revision: str, folder: Path) -> Path:
    """The files of ``revision`` of this checkout, extracted under ``folder``."""
    repo = ["git", "-C", str(THIS_TREE)]
    found = subprocess.run([*repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
                           capture_output=True, text=True)
    if found.returncode:
        raise ValueError(f"{revision!r} is not a commit of the checkout at {THIS_TREE}")
    archive = subprocess.run([*repo, "archive", found.stdout.strip()], capture_output=True, check=True).stdout
    tree = folder / revision.replace("/", "_")
    with tarfile.open(fileobj=io.BytesIO(archive)) as files:
        files.extractall(tree, filter="data")
    return tree


def compare_revisions(args: argparse.Namespace) -> list[dict]:
    """ms/step of this checkout and of each ``--against`` commit, alternating blocks."""
    results = []
    with tempfile.TemporaryDirectory(prefix="coolchic_speed_") as folder:
        workers = [StepWorker("this checkout", THIS_TREE, args.threads or 1)]
        try:
            workers += [StepWorker(rev, source_tree(rev, Path(folder)), args.threads or 1) for rev in args.against]
            for image in args.images:
                image = str(Path(image).resolve())
                for arch in args.archs:
                    key = [image, arch, args.preset]
                    for worker in workers:
                        worker.ask(prepare=[*key, args.warmup])
                    blocks: dict[str, list[float]] = {w.label: [] for w in workers}
                    for repeat in range(args.repeats):
                        for worker in workers[repeat % len(workers):] + workers[:repeat % len(workers)]:
                            blocks[worker.label].append(worker.ask(time=[*key, args.steps])["ms_per_step"])
                    medians = {label: statistics.median(times) for label, times in blocks.items()}
                    ours = medians["this checkout"]
                    line = f"{Path(image).name:24s} {arch:5s} {args.preset:9s} this checkout {ours:8.2f} ms/step"
                    for rev in args.against:
                        line += f" | {rev} {medians[rev]:8.2f} ms/step ({medians[rev] / ours:.2f}x slower)"
                    print(line, flush=True)
                    results.append({"image": image, "arch": arch, "preset": args.preset,
                                    "ms_per_step": {label: round(m, 3) for label, m in medians.items()},
                                    "blocks": blocks})
        finally:
            for worker in workers:
                worker.close()
    return results


def _measure(image: str, frame: FrameData, arch: str, args: argparse.Namespace) -> tuple[dict, str]:
    """Everything the command line asks for about one decoder on one frame, and its line."""
    phase = make_preset(args.preset, 2000).all_phases[0]
    blocks = step_times(frame, arch, args.steps, args.warmup, args.repeats, phase)
    result = {"image": str(image), "height": frame.height, "width": frame.width, "arch": arch,
              "ms_per_step": round(statistics.median(blocks), 2), "best_ms_per_step": round(min(blocks), 2)}
    line = (f"{Path(image).name:24s} {frame.height:4d}x{frame.width:<4d} {arch:4s} "
            f"{result['ms_per_step']:8.2f} ms/step (best {result['best_ms_per_step']:.2f}) "
            f"{1e3 / result['ms_per_step']:6.1f} it/s")
    folder = args.json.parent if args.json else Path(".")
    if args.lightning:
        result.update(lightning_overhead(frame, arch, args.lightning, args.repeats))
        line += (f" | phase of {args.lightning}: Lightning {result['lightning_ms_per_step']:.2f} vs "
                 f"plain {result['raw_ms_per_step']:.2f} ms/step ({result['lightning_overhead_pct']:+.1f} %)")
    if args.decode:
        result.update(decode_time(frame, arch, args.decode, args.repeats, folder))
        line += f" | decode {result['decode_s']:.3f} s"
    if args.checkpoint:
        result.update(checkpoint_cost(frame, arch, args.checkpoint, folder))
        line += f" | checkpoint {result['checkpoint_ms']:.1f} ms, {result['checkpoint_mb']:.1f} MB"
    return result, line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coolchic_pl.bench.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=[str(DEFAULT_IMAGE)], help="images to time")
    parser.add_argument("--archs", nargs="+", default=["hop"], choices=sorted(ARCHITECTURES))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--lightning", type=int, default=0, metavar="N",
                        help="also time an N-iteration phase through Lightning vs a plain loop")
    parser.add_argument("--decode", type=int, default=0, metavar="STEPS",
                        help="also time decoding a .cool of a model trained for STEPS steps")
    parser.add_argument("--checkpoint", type=int, default=0, metavar="N",
                        help="also time the checkpoints of an N-iteration phase that checkpoints every iteration")
    parser.add_argument("--copies", type=int, nargs="+", default=[1], metavar="K",
                        help="time each image as K copies side by side (bound on batching K candidates)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's; 1 with --against)")
    parser.add_argument("--preset", default="c3x_intra", choices=["c3x_intra", "intra5"],
                        help="whose first main phase the steps are (intra5: SOAP)")
    parser.add_argument("--against", nargs="+", default=[], metavar="REV",
                        help="also time these earlier commits of this checkout, alternating blocks")
    parser.add_argument("--default-allocator", action="store_true",
                        help="skip configure_cpu_allocator(), to measure what it gains")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if min(args.steps, args.repeats, *args.copies) < 1 or min(args.warmup, args.lightning, args.decode,
                                                               args.checkpoint) < 0:
        parser.error("--steps, --repeats and --copies must be >= 1, --warmup, --lightning, --decode and "
                     "--checkpoint >= 0")
    if not args.default_allocator:
        configure_cpu_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.against:
        try:
            results = compare_revisions(args)
        except (ValueError, RuntimeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = []
    try:
        for image in args.images:
            source = read_frame(image)
            for copies in args.copies:
                frame = side_by_side(source, copies)
                for arch in args.archs:
                    result, line = _measure(image, frame, arch, args)
                    results.append(result)
                    print(line, flush=True)
    except FrameFormatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")
    results.append({"peak_resident_mb": round(peak_mb)})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
