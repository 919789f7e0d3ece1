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
from coolchic_pl.config import parse_config
from coolchic_pl.data import DEFAULT_IMAGE
from coolchic_pl.encode import encode
from coolchic_pl.io import read_frame


def encode_ratio(config_args: list[str], image: str, steps: int, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="coolchic_encode_time_") as folder:
        config = parse_config([*config_args, "--input", image, "--output_dir", folder])
        frame = read_frame(image)
        architecture = config.resolved_architectures()[-1]
        phase = config.preset_object().all_phases[0]
        before = statistics.median(step_times(frame, architecture, steps, 3, repeats, phase))
        start = time.perf_counter()
        with open(Path(folder) / "encode.log", "w") as log:
            results = encode(config, stream=log)
        wall = time.perf_counter() - start
        after = statistics.median(step_times(frame, architecture, steps, 3, repeats, phase))
    step_ms = (before + after) / 2
    iterations = results["n_iterations"]
    return {"image": image, "iterations": iterations, "encode_s": round(wall, 2), "step_ms_before": round(before, 2),
            "step_ms_after": round(after, 2), "ratio": round(wall / (iterations * step_ms / 1e3), 3),
            "psnr_db": results["psnr_db"], "bpp_file": results["bpp_file"]}


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
        result = encode_ratio(config_args, image, args.steps, args.repeats)
        results.append(result)
        print(f"{Path(image).name:24s} {result['iterations']:6d} it in {result['encode_s']:7.1f} s, steps "
              f"{result['step_ms_before']:.1f}/{result['step_ms_after']:.1f} ms before/after: "
              f"encode = {result['ratio']:.2f} x iterations x step ({result['psnr_db']:.2f} dB, "
              f"{result['bpp_file']:.4f} bpp)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
