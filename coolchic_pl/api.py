"""The Python API: encode and decode from a script or a notebook.

    from coolchic_pl import compress, decompress
    result = compress("photo.png", "configs/fast5.yaml", lmbda=0.002)
    print(result.psnr_db, result.bpp, result.bitstream)
    image = decompress(result.bitstream)          # [1, 3, H, W] in [0, 1]

``coolchic-fit`` and ``coolchic-decode`` run the same code; the command line adds only the
signal handling of long jobs and its one-line errors. (``compress`` and ``decompress``, as
in CompressAI: ``coolchic_pl.encode`` and ``coolchic_pl.decode`` are the modules behind
the two commands.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

from coolchic_pl.bitstream import decode_coolchic
from coolchic_pl.config import FitConfig, read_config  # noqa: F401 (FitConfig: part of the API)
from coolchic_pl.decode import decode_bytes, decode_sequence
from coolchic_pl.encode import run_folder
from coolchic_pl.fit import run_encode
from coolchic_pl.fixedpoint.modules import coolchic_module
from coolchic_pl.io import FrameData, write_frame, yuv_file_name
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.video.bitstream import to_444
from coolchic_pl.video.decoder import is_video_bitstream


@dataclass(frozen=True)
class CompressResult:
    """What :func:`compress` produced: its run folder, its ``.cool`` file and its figures.

    ``psnr_db`` is of the decoded file (YUV 6:1:1 PSNR for a YUV input), ``bpp`` of the
    file's bytes per pixel of every frame; ``results`` holds everything ``results.json`` does.
    """

    run_dir: Path
    bitstream: Path
    psnr_db: float
    bpp: float
    results: dict[str, Any]

    def decoder(self) -> CoolChic:
        """The decoder of an image encode, as the bitstream rebuilds it (quantised networks,
        decoded latents), in evaluation mode."""
        data = self.bitstream.read_bytes()
        if is_video_bitstream(data):
            raise ValueError("a video holds one decoder per frame: use decompress_frames for its frames")
        decoded = decode_coolchic(data)
        return coolchic_module(decoded.coolchic, decoded.bitdepth)


def load_config(path: str | Path | None = None, **values: Any) -> FitConfig:
    """A FitConfig from a YAML file (as ``--config`` reads it), with keys replaced by ``values``
    (``lmbda=0.002``, ``n_itr=500``...). Errors are ``ValueError`` with one line."""
    return _with_values(read_config(["--config", str(path)] if path is not None else []), values)


def _with_values(config: FitConfig, values: dict[str, Any]) -> FitConfig:
    unknown = sorted(set(values) - {field.name for field in dataclasses.fields(FitConfig)})
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(unknown)}")
    return dataclasses.replace(config, **values)


def compress(image: str | Path | Tensor | FrameData, config: FitConfig | str | Path | None = None,
           progress: TextIO | None = None, **values: Any) -> CompressResult:
    """Encode an image (or, with ``n_frames``, a video) and return the result.

    ``image`` is a path (.png, .ppm, .yuv as for ``coolchic-fit``), an RGB tensor [3, H, W]
    or [1, 3, H, W] in [0, 1], coded as 8-bit RGB, or a :class:`~coolchic_pl.io.FrameData`
    for YUV 4:2:0 / 4:4:4 at any bit depth. A tensor or FrameData is first written to
    ``<output_dir>/inputs/`` (named by its content), since an encode is resumable and keyed by
    its input file. ``config`` is a FitConfig or a YAML file; ``values`` replace its keys.
    Progress goes to ``progress`` (standard error by default). Rerunning the same encode
    returns the finished result without training again.
    """
    config = _with_values(config if isinstance(config, FitConfig) else load_config(config), values)
    if not isinstance(image, (str, Path)):
        image = _write_input(image, Path(config.output_dir) / "inputs")
    config = dataclasses.replace(config, input=str(image))
    results = run_encode(config, stream=progress or sys.stderr)
    run_dir = run_folder(config)
    return CompressResult(run_dir, run_dir / results["bitstream"], results.get("psnr_db", results.get("psnr_yuv")),
                        results.get("bpp_file", results["bpp"]), results)


def _write_input(image: Tensor | FrameData, folder: Path) -> Path:
    if isinstance(image, Tensor):
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"an image tensor must be RGB [3, H, W] or [1, 3, H, W], got {tuple(image.shape)}")
        image = FrameData((image.detach().float().cpu().clamp(0, 1),), 8, "rgb")
    digest = hashlib.sha256()
    for plane in image.planes:
        digest.update(torch.round(plane.detach().cpu() * (2**image.bitdepth - 1)).to(torch.int32).numpy().tobytes())
    name = f"input_{digest.hexdigest()[:12]}"
    path = folder / (f"{name}.png" if image.color_space == "rgb" else yuv_file_name(name, image))
    folder.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_frame(image, path)
    return path


def decompress_frames(source: str | Path | bytes) -> list[FrameData]:
    """Every frame of a ``.cool`` file (or its bytes), in display order, as their planes."""
    return decode_bytes(source) if isinstance(source, bytes) else decode_sequence(source)


def decompress(source: str | Path | bytes) -> Tensor:
    """A ``.cool`` file (or its bytes) as one tensor [frames, 3, H, W] in [0, 1]: RGB, or YUV
    with 4:2:0 chroma repeated to full size. :func:`decompress_frames` gives the planes as coded."""
    frames = decompress_frames(source)
    return torch.cat([frame.planes[0] if frame.color_space == "rgb" else to_444(frame) for frame in frames])
