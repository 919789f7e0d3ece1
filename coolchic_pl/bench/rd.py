"""Rate-distortion benchmark: coolchic_pl against classical codecs and published curves.

``python -m coolchic_pl.bench rd --images DIR_OR_FILES --lmbdas 0.02,0.004,0.001,0.0004
--config configs/fast.yaml --out runs/bench [--crop 256x256] [--max-images 4]``

Encodes every image at every lambda with coolchic_pl (rate from the real .cool file)
through the sweep machinery (local workers, see ``coolchic_pl.sweep``), sweeps the
classical codecs, writes per-image results in CompressAI's JSON format plus a
TSV of every point, prints BD-rate / BD-PSNR of coolchic_pl against every codec and
draws the RD plot. Finished (image, lambda) encodes and classical sweeps are reused
when the command is run again.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from coolchic_pl.bench.bdrate import bd_psnr, bd_rate
from coolchic_pl.bench.classical import ClassicalCodec, available_codecs, sweep
from coolchic_pl.bench.formats import slug, write_results
from coolchic_pl.bench.plot import plot_rd
from coolchic_pl.io import FrameFormatError
from coolchic_pl.sweep.jobs import make_jobs
from coolchic_pl.sweep.local import LocalLauncher, add_worker_arguments
from coolchic_pl.sweep.report import NOT_RUN, STOP_EXIT_CODES, outcome_line
from coolchic_pl.sweep.run import CODEC as COOLCHIC
from coolchic_pl.sweep.run import coolchic_points, run_sweep

KODAK_NAME = re.compile(r"^kodim\d\d$")
KODAK_SIZES = {(768, 512), (512, 768)}


def collect_images(sources: list[str], max_images: int | None) -> list[Path]:
    images: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            images += sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
        elif path.is_file():
            images.append(path)
        else:
            raise FrameFormatError(path, "no such file or folder")
    if not images:
        raise FrameFormatError(", ".join(sources), "no PNG image found")
    return images[:max_images] if max_images else images


def centre_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    if width > image.width or height > image.height:
        raise ValueError(f"crop {width}x{height} is larger than the {image.width}x{image.height} image")
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def prepare_images(images: list[Path], crop: tuple[int, int] | None, folder: Path) -> list[Path]:
    """The images actually coded: centre crops written as PNG when cropping, else the originals."""
    if crop is None:
        return images
    folder.mkdir(parents=True, exist_ok=True)
    prepared = []
    for image_path in images:
        target = folder / image_path.name
        if not target.exists():
            with Image.open(image_path) as image:
                centre_crop(image.convert("RGB"), *crop).save(target)
        prepared.append(target)
    return prepared


def classical_points(codec, image: Path, cache: Path) -> list[dict]:
    if cache.exists():
        return json.loads(cache.read_text())["points"]
    with Image.open(image) as loaded:
        points = sweep(codec, loaded.convert("RGB"))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"codec": codec.name, "settings": codec.settings, "points": points}, indent=1))
    return points


PUBLISHED_VERSIONS = ("4.2", "5.0")


def published_per_image(version: str = "4.2") -> dict[str, list[dict]]:
    """Cool-Chic's per-image Kodak points (bpp, RGB PSNR) of one release, by image name."""
    table: dict[str, list[dict]] = {}
    with (resources.files("coolchic_pl.bench") / "anchors" / "kodak_coolchic_per_image.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["version"] == version:
                table.setdefault(row["image"], []).append({"bpp": float(row["bpp"]),
                                                           "psnr_rgb": float(row["psnr_rgb_db"])})
    return table


def published_curves() -> dict[str, list[dict]]:
    curves: dict[str, list[dict]] = {}
    with (resources.files("coolchic_pl.bench") / "anchors" / "kodak_published_rd.csv").open() as handle:
        for row in csv.DictReader(handle):
            point = {"bpp": float(row["bpp"]), "psnr_rgb": float(row["psnr_rgb_db"])}
            curves.setdefault(row["codec"], []).append(point)
    return curves


def _bd(reference: list[dict], test: list[dict]) -> tuple[float, float]:
    args = ([p["bpp"] for p in reference], [p["psnr_rgb"] for p in reference],
            [p["bpp"] for p in test], [p["psnr_rgb"] for p in test])
    return bd_rate(*args), bd_psnr(*args)


def _mean_curve(curves: list[list[dict]]) -> list[dict]:
    """Average of several images' curves, setting by setting (same sweep for every image)."""
    return [{"bpp": float(np.mean([c[i]["bpp"] for c in curves])),
             "psnr_rgb": float(np.mean([c[i]["psnr_rgb"] for c in curves]))} for i in range(len(curves[0]))]


def run(args: argparse.Namespace) -> int:
    lmbdas = [float(v) for v in args.lmbdas.split(",")]
    crop = tuple(int(v) for v in args.crop.lower().split("x")) if args.crop else None
    out = Path(args.out)
    originals = collect_images(args.images, args.max_images)
    images = prepare_images(originals, crop, out / "images")
    codecs = [c for c in available_codecs() if not args.codecs or c.name in args.codecs]
    jobs = make_jobs([str(p) for p in images], lmbdas, [args.config], out / "coolchic")
    launcher = LocalLauncher(args.workers, args.threads_per_worker)
    outcomes = run_sweep(jobs, launcher)
    ended = [(job, outcomes.get(job.job_id, NOT_RUN)) for job in jobs]
    failed = [outcome_line(job, outcome) for job, outcome in ended if outcome.results is None]
    if failed:
        print("error: coolchic_pl encodes did not finish (run the same command again to resume them):\n  "
              + "\n  ".join(failed), file=sys.stderr)
        return STOP_EXIT_CODES.get(launcher.stop_reason, 1)
    points = coolchic_points(jobs, outcomes)
    for image in images:
        for codec in codecs:
            cache = out / "classical" / slug(codec.name) / f"{image.stem}.json"
            points.setdefault(codec.name, {})[image.stem] = classical_points(codec, image, cache)

    descriptions = {COOLCHIC: f"coolchic_pl, config {args.config}, lambdas {args.lmbdas}, rate of the .cool file"}
    descriptions.update({c.name: c.settings for c in codecs})
    write_results(points, descriptions, out)
    if len(set(lmbdas)) > 1:
        _report_bd_rates(points, codecs, images, crop, out)
    else:
        for image in images:
            for point in points[COOLCHIC][image.stem]:
                print(f"{image.stem} lambda {point['lmbda']}: {point['psnr_rgb']:.3f} dB at {point['bpp']:.4f} bpp")
        print(f"BD-rate needs two or more lambdas: not computed (every point is in {out / 'points.tsv'})",
              file=sys.stderr)

    mean_curves = {name: _mean_curve(list(per_image.values())) for name, per_image in points.items()}
    kodak = all(KODAK_NAME.match(p.stem) for p in images)
    title = f"{len(images)} image(s)" + (f", {crop[0]}x{crop[1]} centre crops" if crop else "")
    if plot_rd(mean_curves, out / "rd.png", title, "psnr_rgb", "PSNR RGB (dB)", COOLCHIC,
               published_curves() if kodak else {}, max_bpp=2.0):
        print(f"plot: {out / 'rd.png'}", file=sys.stderr)
    else:
        print("plot skipped: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
    return 0


def _report_bd_rates(points: dict[str, dict[str, list[dict]]], codecs: list[ClassicalCodec],
                     images: list[Path], crop: tuple[int, ...] | None, out: Path) -> None:
    """BD-rate of coolchic_pl against every codec (and the published Cool-Chic results on full
    Kodak images): ``bd_rate.json`` and the printed table."""
    table = {}
    for codec in codecs:
        per_image = {name: _bd(points[codec.name][name], points[COOLCHIC][name]) for name in points[COOLCHIC]}
        table[codec.name] = per_image
    full_kodak = crop is None and all(KODAK_NAME.match(p.stem) and Image.open(p).size in KODAK_SIZES for p in images)
    if full_kodak:
        for version in PUBLISHED_VERSIONS:
            anchors = published_per_image(version)
            table[f"Cool-Chic {version} (published)"] = {name: _bd(anchors[name], points[COOLCHIC][name])
                                                         for name in points[COOLCHIC] if name in anchors}
    summary = {codec: {"per_image": {k: {"bd_rate_pct": v[0], "bd_psnr_db": v[1]} for k, v in rows.items()},
                       "mean_bd_rate_pct": _nanmean([v[0] for v in rows.values()]),
                       "mean_bd_psnr_db": _nanmean([v[1] for v in rows.values()])}
               for codec, rows in table.items()}
    (out / "bd_rate.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_table(summary, [p.stem for p in images]))


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def format_table(summary: dict, image_names: list[str]) -> str:
    """BD-rate (BD-PSNR) of coolchic_pl against each codec; negative BD-rate = coolchic_pl saves rate."""
    header = ["vs codec", *image_names, "mean"]
    rows = []
    for codec, values in summary.items():
        cells = [codec]
        for name in image_names:
            entry = values["per_image"].get(name)
            cells.append("n/a" if entry is None or math.isnan(entry["bd_rate_pct"]) else
                         f"{entry['bd_rate_pct']:+.1f}% ({entry['bd_psnr_db']:+.2f} dB)")
        mean_rate, mean_psnr = values["mean_bd_rate_pct"], values["mean_bd_psnr_db"]
        cells.append("n/a" if math.isnan(mean_rate) else f"{mean_rate:+.1f}% ({mean_psnr:+.2f} dB)")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    return "\n".join([lines[0], "-+-".join("-" * w for w in widths), *lines[1:]])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", nargs="+", required=True, help="PNG files or folders of PNG files")
    parser.add_argument("--lmbdas", default="0.02,0.004,0.001,0.0004", help="comma-separated lambdas")
    parser.add_argument("--config", default="configs/fast.yaml", help="fit config for coolchic_pl encodes")
    parser.add_argument("--out", default="runs/bench", help="output folder (reused: finished work is skipped)")
    parser.add_argument("--crop", default=None, help="centre crop WxH, e.g. 256x256")
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    parser.add_argument("--codecs", nargs="*", default=None, help="classical codecs to run (default: all available)")
    add_worker_arguments(parser)
