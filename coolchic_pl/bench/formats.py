"""The benchmark's result files, shared by ``bench rd`` and ``sweep``.

Every codec's points per image go to ``results/<codec>/<image>.json`` in CompressAI's
format and, all together, to ``points.tsv``. A point is a dictionary with ``bpp``, its
quality metric (``psnr_rgb`` for RGB inputs, ``psnr_yuv`` for YUV ones) and the setting
that produced it (``lmbda`` or ``quality``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

METRICS = ("psnr_rgb", "psnr_yuv")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def compressai_json(name: str, description: str, points: list[dict]) -> dict:
    points = sorted(points, key=lambda p: p["bpp"])
    results: dict[str, list[float]] = {"bpp": [p["bpp"] for p in points]}
    for metric in METRICS:
        if points and metric in points[0]:
            results[metric.replace("_", "-")] = [p[metric] for p in points]
    return {"name": name, "description": description, "results": results}


def coolchic_point(results: dict[str, Any]) -> dict[str, Any]:
    """The RD point of one finished encode (image or video): rate of the real file."""
    video = "psnr_yuv" in results
    metric = "psnr_yuv" if video or results["color_space"] != "rgb" else "psnr_rgb"
    return {"lmbda": results["lmbda"], "bpp": results["bpp"] if video else results["bpp_file"],
            metric: results["psnr_yuv"] if video else results["psnr_db"],
            "bpp_estimated": None if video else results["bpp"], "encoding_time_s": results["encoding_time_s"]}


def write_results(points: dict[str, dict[str, list[dict]]], descriptions: dict[str, str], out: Path) -> None:
    """``points[codec][image]`` to the per-codec JSON files and ``points.tsv``."""
    rows = ["\t".join(["codec", "image", "setting", "bpp", *METRICS])]
    for name, per_image in points.items():
        folder = out / "results" / slug(name)
        folder.mkdir(parents=True, exist_ok=True)
        for image_name, image_points in per_image.items():
            document = compressai_json(name, descriptions[name], image_points)
            (folder / f"{image_name}.json").write_text(json.dumps(document, indent=2) + "\n")
            for p in image_points:
                setting = p.get("lmbda", p.get("quality"))
                quality = [f"{p[m]:.4f}" if m in p else "" for m in METRICS]
                rows.append("\t".join([name, image_name, str(setting), f"{p['bpp']:.6f}", *quality]))
    (out / "points.tsv").write_text("\n".join(rows) + "\n")
