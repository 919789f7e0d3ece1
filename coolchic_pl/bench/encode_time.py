"""``python -m coolchic_pl.bench encode --config configs/fast.yaml``: an encode's wall time
against the time of its training steps alone.

An encode is worth its minutes when they are spent training. For each image this runs,
in one process, a block of raw training steps of the config's decoder and core phase
(what ``bench speed`` times), the whole encode of the config (everything ``coolchic-fit``
does after start-up: warm-up, phases, validations, quantisation, RDOQ, checkpoints, logs,
bitstream), and another block of steps, and prints

    encode wall time / (iterations x ms per step)

with the mean of the two blocks, so that a machine whose speed drifts during the encode
still gives a fair ratio. ``bench breakdown`` tells where the rest goes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from coolchic_pl.bench.speed import step_times
from coolchic_pl.config import arch_label, parse_config
from coolchic_pl.data import DEFAULT_IMAGE
from coolchic_pl.encode import encode
from coolchic_pl.io import read_frame


def encode_ratio(config_args: list[str], image: str, steps: int, repeats: int) -> dict[str, float]:
    """With ``arch: auto`` every competing decoder's steps are timed before the encode (the
    winner is not known yet) and the winner's after it; the ratio is against the winner's
    step, the decoder that ``bench speed`` would time for the result."""
    with tempfile.TemporaryDirectory(prefix="coolchic_encode_time_") as folder:
        config = parse_config([*config_args, "--input", image, "--output_dir", folder])
        frame = read_frame(image)
        competing = config.resolved_architectures()
        architectures = {arch_label(a): a for a in competing}
        if len(architectures) < len(competing):
            raise ValueError("the competing decoders must be named ones (no architecture.* overrides) "
                             "to tell which one won")
        phase = config.preset_object().all_phases[0]
        before = {label: statistics.median(step_times(frame, architecture, steps, 3, repeats, phase))
                  for label, architecture in architectures.items()}
        start = time.perf_counter()
        with open(Path(folder) / "encode.log", "w") as log:
            results = encode(config, stream=log)
        wall = time.perf_counter() - start
        winner = results["arch"]
        after = statistics.median(step_times(frame, architectures[winner], steps, 3, repeats, phase))
    step_ms = (before[winner] + after) / 2
    iterations = results["n_iterations"]
    return {"image": image, "arch": winner, "iterations": iterations, "encode_s": round(wall, 2),
            "step_ms_before": round(before[winner], 2), "step_ms_after": round(after, 2),
            "ratio": round(wall / (iterations * step_ms / 1e3), 3), "psnr_db": results["psnr_db"],
            "bpp_file": results["bpp_file"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coolchic_pl.bench encode", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, help="fit config(s), as coolchic-fit takes them")
    parser.add_argument("--images", nargs="+", default=[str(DEFAULT_IMAGE)])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=3, help="blocks before and after the encode (median)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra fit options, e.g. n_itr=800")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    config_args = [item for path in args.config for item in ("--config", path)]
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item}: expected KEY=VALUE")
        config_args += [f"--{key}", value]
    results = []
    for image in args.images:
        try:
            result = encode_ratio(config_args, image, args.steps, args.repeats)
        except ValueError as error:
            parser.error(str(error))
        results.append(result)
        print(f"{Path(image).name:24s} {result['arch']:5s} {result['iterations']:6d} it in "
              f"{result['encode_s']:7.1f} s, steps {result['step_ms_before']:.1f}/{result['step_ms_after']:.1f} ms "
              "before/after: "
              f"encode = {result['ratio']:.2f} x iterations x step ({result['psnr_db']:.2f} dB, "
              f"{result['bpp_file']:.4f} bpp)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
