"""``coolchic-bench video``: coolchic_pl against x264, x265 and vvenc on a YUV sequence.

Every codec codes the same frames in the same coding structure as far as it allows (see
:mod:`coolchic_pl.bench.ffmpeg_video`): coolchic_pl at each lambda of ``--lmbdas`` with a
video config, the classical encoders at each QP of ``--qps``. Rates are file sizes over
every pixel of every frame; quality is the YUV 6:1:1 PSNR averaged over frames, the
figure video codecs are compared on. Each point is also split into its intra and its
inter frames (bits per pixel of a frame of that kind and mean PSNR), from coolchic_pl's
per-frame results and from the classical streams' own picture sizes, so that a table
says where a codec wins or loses. Writes ``points.tsv``, a CompressAI-style JSON per
codec, ``bd_rate.json`` and ``rd.png``, and prints the BD-rate table. The coolchic_pl
encodes run as a sweep (``coolchic_pl.sweep``) on local workers: finished ones are read
back, interrupted ones resume, and a line is printed as each of their frames is done.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from coolchic_pl.bench.bdrate import bd_psnr, bd_rate
from coolchic_pl.bench.ffmpeg_video import VIDEO_CODECS, GopLayout, available_video_codecs, sweep
from coolchic_pl.bench.plot import plot_rd
from coolchic_pl.io import parse_yuv_name
from coolchic_pl.sweep.jobs import Job, make_jobs
from coolchic_pl.sweep.local import LocalLauncher, add_worker_arguments
from coolchic_pl.sweep.run import CODEC as COOLCHIC
from coolchic_pl.sweep.run import run_sweep
from coolchic_pl.video.structure import build_coding_structure


def gop_p_positions(n_frames: int, gop: int) -> str:
    """Random access with P anchors every ``gop`` frames (and on the last frame): the
    ``--p_pos`` of closed GOPs of that size."""
    if gop < 1:
        raise ValueError(f"--gop must be >= 1, got {gop}")
    anchors = sorted(set(range(gop, n_frames, gop)) | {n_frames - 1} - {0})
    return ",".join(map(str, anchors))


def split_by_frame_type(types: Sequence[str], psnr_yuv: Sequence[float], intra_bits: float, inter_bits: float,
                        n_pixels: int) -> dict[str, float | None]:
    """Bits per pixel of one intra frame and of one inter frame, and the mean YUV PSNR of
    each kind (None where the sequence has no frame of that kind)."""
    split: dict[str, float | None] = {}
    for kind, bits in (("intra", intra_bits), ("inter", inter_bits)):
        chosen = [i for i, t in enumerate(types) if (t == "I") == (kind == "intra")]
        split[f"bpp_{kind}"] = bits / (n_pixels * len(chosen)) if chosen else None
        split[f"psnr_yuv_{kind}"] = sum(psnr_yuv[i] for i in chosen) / len(chosen) if chosen else None
    return split


class FrameProgress:
    """Prints one line per finished frame of the coolchic_pl encodes while they run, by
    watching their run folders (the encodes run in worker processes with their own logs)."""

    def __init__(self, jobs: list[Job], stream: Any = sys.stderr, period_s: float = 2.0):
        self.jobs, self.stream, self.period_s = jobs, stream, period_s
        self.seen: set[Path] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "FrameProgress":
        self.seen = {path for job in self.jobs for path in self._frame_results(job)}  # done in an earlier run
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    @staticmethod
    def _frame_results(job: Job) -> list[Path]:
        return sorted(Path(job.run_dir).glob("frame_*/results.json"))

    def _watch(self) -> None:
        while not self._stop.wait(self.period_s):
            self.poll()

    def poll(self) -> None:
        for job in self.jobs:
            for path in self._frame_results(job):
                if path in self.seen:
                    continue
                self.seen.add(path)
                try:
                    frame = json.loads(path.read_text())
                except (OSError, ValueError):  # being written: read it at the next poll
                    self.seen.discard(path)
                    continue
                print(f"coolchic_pl lambda {job.lmbda:g}: frame {frame['display']} ({frame['type']}) "
                      f"{frame['psnr_yuv']:.3f} dB YUV at {frame['bpp']:.4f} bpp, {frame['encoding_time_s']:.1f} s",
                      file=self.stream, flush=True)


def coolchic_points(args: argparse.Namespace, lmbdas: list[float], output: Path) -> list[dict]:
    """The encodes at every lambda, through the sweep's local workers."""
    structure = ("--n_frames", str(args.n_frames), "--intra_pos", args.intra_pos, "--p_pos", args.p_pos,
                 "--frame_index", str(args.frame_index))
    jobs = make_jobs([args.input], lmbdas, [args.config], output, structure)
    with FrameProgress(jobs):
        outcomes = run_sweep(jobs, LocalLauncher(args.workers, args.threads_per_worker))
    points = []
    for job in jobs:
        outcome = outcomes.get(job.job_id)
        if outcome is None or outcome.results is None:
            raise ValueError(f"coolchic_pl encode {job.name} did not finish: "
                             f"{outcome.message if outcome else 'stopped'} (run the same command again to resume)")
        result = outcome.results
        frames = sorted(result["frames"], key=lambda f: f["display"])
        intra_bits = sum(f["bits"] for f in frames if f["type"] == "I")
        inter_bits = sum(f["bits"] for f in frames if f["type"] != "I")
        points.append({"setting": f"lambda {job.lmbda:g}", "bpp": result["bpp"], "psnr_yuv": result["psnr_yuv"],
                       "psnr_y": result["psnr_y"], "encoding_time_s": result["encoding_time_s"],
                       **split_by_frame_type([f["type"] for f in frames], [f["psnr_yuv"] for f in frames],
                                             intra_bits, inter_bits, result["height"] * result["width"]),
                       **inter_frame_coding(frames)})
    return points


def inter_frame_coding(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """The share of the inter frames' bits spent on networks, and the mode each inter frame
    chose (display order, e.g. "P4 affine+motion+residue")."""
    inter = [f for f in frames if f["type"] != "I"]
    network_bits = sum(f.get("bits_network_residue") or 0 for f in inter) + sum(
        f.get("bits_network_motion") or 0 for f in inter)
    total = sum(f["bits"] for f in inter)
    return {"inter_network_share": network_bits / total if total else None,
            "modes": " ".join(f"{f['type']}{f['display']} {f.get('mode', 'motion+residue')}" for f in inter)}


def classical_points(args: argparse.Namespace, codec: str, layout: GopLayout, output: Path) -> list[dict]:
    fmt = parse_yuv_name(args.input)
    started = time.perf_counter()
    qps = [int(q) for q in args.qps.split(",")]
    results = sweep(Path(args.input), fmt.width, fmt.height, args.n_frames, codec, qps, layout, output / codec,
                    preset=args.preset, frame_offset=args.frame_index, bitdepth=fmt.bitdepth)
    print(f"{codec}: {len(results)} encodes in {time.perf_counter() - started:.1f} s; {results[0].settings}",
          file=sys.stderr)
    points = []
    for p in results:
        psnr_yuv = [(6 * y + u + v) / 8 for y, u, v in zip(p.psnr_y_frames, p.psnr_u_frames, p.psnr_v_frames)]
        points.append({"setting": f"qp {p.qp}", "bpp": p.bpp, "psnr_yuv": p.psnr_yuv, "psnr_y": p.psnr_y,
                       "encoding_time_s": p.encode_time_s, "frame_types": "".join(p.frame_types),
                       **split_by_frame_type(p.frame_types, psnr_yuv, p.intra_bits, p.inter_bits, p.width * p.height)})
    return points


def _cell(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def run(args: argparse.Namespace) -> int:
    lmbdas = [float(v) for v in args.lmbdas.split(",")]
    if args.gop is not None:
        args.p_pos = gop_p_positions(args.n_frames, args.gop)
    structure = sorted(build_coding_structure(args.n_frames, args.intra_pos, args.p_pos), key=lambda f: f.display)
    types = [f.frame_type for f in structure]
    layout = GopLayout.from_frame_types(types)
    output = Path(args.out)
    output.mkdir(parents=True, exist_ok=True)
    codecs = [c for c in args.codecs if c in available_video_codecs()]
    curves = {COOLCHIC: coolchic_points(args, lmbdas, output / COOLCHIC)}
    for codec in codecs:
        try:
            curves[codec] = classical_points(args, codec, layout, output)
        except ValueError as error:  # a structure this encoder cannot build
            print(f"{codec} skipped: {error}", file=sys.stderr)
    columns = ("bpp", "psnr_yuv", "psnr_y", "encoding_time_s", "bpp_intra", "psnr_yuv_intra", "bpp_inter",
               "psnr_yuv_inter", "inter_network_share")
    rows = [(name, p["setting"], *(p.get(c) for c in columns)) for name, points in curves.items() for p in points]
    (output / "points.tsv").write_text("\t".join(("codec", "setting", *columns)) + "\n" +
                                       "".join("\t".join(str(v) for v in row) + "\n" for row in rows))
    for name, points in curves.items():
        points = sorted(points, key=lambda p: p["bpp"])
        (output / f"{name}.json").write_text(json.dumps(
            {"name": name, "description": f"{Path(args.input).name}, {args.n_frames} frames, {''.join(types)}",
             "results": {"bpp": [p["bpp"] for p in points], "psnr-yuv": [p["psnr_yuv"] for p in points]}},
            indent=1))
    summary = {}
    for codec in (c for c in curves if c != COOLCHIC):
        reference, test = curves[codec], curves[COOLCHIC]
        values = ([p["bpp"] for p in reference], [p["psnr_yuv"] for p in reference],
                  [p["bpp"] for p in test], [p["psnr_yuv"] for p in test])
        summary[codec] = {"bd_rate_percent": bd_rate(*values), "bd_psnr_db": bd_psnr(*values)}
    (output / "bd_rate.json").write_text(json.dumps(summary, indent=1))
    print(f"{Path(args.input).name}, {args.n_frames} frames {''.join(types)} (display order); intra and inter: "
          "bits per pixel of one frame of that kind, mean PSNR YUV")
    print(f"{'codec':<12} {'setting':<14} {'bpp':>8} {'PSNR YUV':>9} {'PSNR Y':>8} {'time s':>8} "
          f"{'intra bpp':>9} {'PSNR':>7} {'inter bpp':>9} {'PSNR':>7} {'inter nets':>10}")
    for row in rows:
        share = "-" if row[10] is None else f"{100 * row[10]:.1f} %"
        print(f"{row[0]:<12} {row[1]:<14} {row[2]:>8.4f} {row[3]:>9.3f} {row[4]:>8.3f} {row[5]:>8.1f} "
              f"{_cell(row[6], 9, 4)} {_cell(row[7], 7, 2)} {_cell(row[8], 9, 4)} {_cell(row[9], 7, 2)} {share:>10}")
    print("modes of the inter frames (display order):")
    for name, points in curves.items():
        for p in points:
            print(f"  {name} {p['setting']}: {p.get('modes') or p.get('frame_types', '')}")
    for codec, values in summary.items():
        print(f"coolchic_pl vs {codec}: BD-rate {values['bd_rate_percent']:+.1f} %, "
              f"BD-PSNR {values['bd_psnr_db']:+.2f} dB")
    if not plot_rd(curves, output / "rd.png", f"{Path(args.input).stem}, {''.join(types)}", "psnr_yuv",
                   "PSNR YUV 6:1:1 (dB)", COOLCHIC):
        print("plot skipped: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="raw .yuv sequence (4:2:0, 8 or 10 bits)")
    parser.add_argument("--n_frames", type=int, default=5)
    parser.add_argument("--frame_index", type=int, default=0, help="first frame")
    parser.add_argument("--intra_pos", default="0")
    parser.add_argument("--p_pos", default="-1")
    parser.add_argument("--gop", type=int, default=None,
                        help="random access in closed GOPs of this many frames (P anchors every GOP frames and on "
                             "the last one): replaces --p_pos, e.g. --n_frames 9 --gop 8 or --n_frames 17 --gop 16")
    parser.add_argument("--lmbdas", default="0.004,0.001,0.0004", help="coolchic_pl lambdas, comma separated")
    parser.add_argument("--config", default="configs/video_ra.yaml", help="coolchic_pl video config")
    parser.add_argument("--qps", default="27,32,37,42", help="classical encoders' QPs, comma separated")
    parser.add_argument("--codecs", nargs="+", default=list(VIDEO_CODECS), choices=VIDEO_CODECS)
    parser.add_argument("--preset", default="medium", help="classical encoders' speed preset")
    parser.add_argument("--out", default="runs/bench_video")
    add_worker_arguments(parser)
