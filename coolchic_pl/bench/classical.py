"""Classical image codecs as baselines, each swept over its quality setting.

JPEG (4:2:0), WebP, AVIF and JPEG 2000 come with Pillow. HEVC-intra (pillow-heif, x265),
JPEG XL (imagecodecs) and VVC-intra (libvvenc in the ffmpeg binary of imageio-ffmpeg) come
with the ``bench`` extra and are used when installed. Every point is a real encode to
bytes and a decode back; rate = 8 x bytes / pixels, PSNR over RGB. Each codec's settings
are listed so that its sweep runs from the fewest bits to the most.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image, features

from coolchic_pl.bench.ffmpeg import ffmpeg_encoders, ffmpeg_exe, run_ffmpeg
from coolchic_pl.metrics import psnr_db


@dataclass(frozen=True)
class ClassicalCodec:
    name: str
    settings: str
    qualities: tuple[float, ...]
    encode: Callable[[Image.Image, float], bytes]
    decode: Callable[[bytes], np.ndarray]


def _pillow_encoder(fmt: str, **options) -> Callable[[Image.Image, float], bytes]:
    def encode(image: Image.Image, quality: float) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, quality=int(quality), **options)
        return buffer.getvalue()
    return encode


def _jpeg2000_encode(image: Image.Image, bpp: float) -> bytes:
    buffer = io.BytesIO()
    # quality_layers are compression ratios against 24-bit RGB; mct=1 applies the colour
    # transform (Pillow's default mct=0 codes RGB planes separately and loses ~2.5 dB).
    image.save(buffer, "JPEG2000", quality_mode="rates", quality_layers=[24.0 / bpp], mct=1, irreversible=True)
    return buffer.getvalue()


def _pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def available_codecs() -> list[ClassicalCodec]:
    codecs = [
        ClassicalCodec("JPEG", "Pillow libjpeg, 4:2:0, optimized Huffman",
                       (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
                       _pillow_encoder("JPEG", subsampling="4:2:0", optimize=True), _pillow_decode),
        ClassicalCodec("WebP", "Pillow libwebp lossy, method 6", (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
                       _pillow_encoder("WEBP", method=6), _pillow_decode),
        ClassicalCodec("JPEG 2000", "Pillow OpenJPEG, irreversible 9/7, mct=1, target rate",
                       (0.05, 0.08, 0.12, 0.18, 0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0),
                       _jpeg2000_encode, _pillow_decode),
    ]
    if features.check("avif"):
        codecs.append(ClassicalCodec("AVIF", "Pillow libavif, speed 4, 4:2:0", (5, 10, 20, 30, 40, 50, 60, 70, 80, 90),
                                     _pillow_encoder("AVIF", speed=4, subsampling="4:2:0"), _pillow_decode))
    codecs += _heif_codecs() + _jpegxl_codecs()
    if "libvvenc" in ffmpeg_encoders():
        codecs.append(ClassicalCodec("VVC-intra", "ffmpeg libvvenc, preset medium, 10-bit 4:2:0 BT.709, -qpa 0",
                                     VVC_QPS, _vvc_encode, _vvc_decode))
    return codecs


def _heif_codecs() -> list[ClassicalCodec]:
    try:
        import pillow_heif
    except ImportError:
        return []

    def encode(image: Image.Image, quality: float) -> bytes:
        buffer = io.BytesIO()
        pillow_heif.from_pillow(image).save(buffer, quality=int(quality), chroma=420,
                                            enc_params={"preset": "slow", "tune": "psnr"})
        return buffer.getvalue()

    def decode(data: bytes) -> np.ndarray:
        return np.asarray(pillow_heif.open_heif(io.BytesIO(data)).to_pillow().convert("RGB"))

    return [ClassicalCodec("HEVC-intra", f"pillow-heif {pillow_heif.__version__} (x265 slow, tune psnr), 4:2:0",
                           (5, 10, 20, 30, 40, 50, 60, 70, 80, 90), encode, decode)]


def _jpegxl_codecs() -> list[ClassicalCodec]:
    try:
        import imagecodecs
    except ImportError:
        return []
    if not imagecodecs.JPEGXL.available:
        return []
    # The setting is libjxl's butteraugli distance: the larger, the fewer bits.
    return [ClassicalCodec(
        "JPEG XL", f"imagecodecs {imagecodecs.__version__} libjxl, effort 7",
        (14.0, 10.0, 7.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.7),
        lambda image, distance: imagecodecs.jpegxl_encode(np.asarray(image), distance=distance, effort=7),
        lambda data: np.asarray(imagecodecs.jpegxl_decode(data))[..., :3])]


# The standard's QPs, coarsest first; every encode is one intra frame, single-threaded.
VVC_QPS = (47, 42, 37, 32, 27, 22)
# ffmpeg converts RGB to 10-bit limited-range BT.709 YCbCr and back with the same matrix; the
# stream carries no colour description, so the decode states the matrix again.
_VVC_TO_YUV = "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd+full_chroma_int"
_VVC_TO_RGB = "scale=in_color_matrix=bt709:in_range=tv:flags=accurate_rnd+full_chroma_int"


def _vvc_encode(image: Image.Image, qp: float) -> bytes:
    """A raw VVC elementary stream without its SEI and access unit delimiter NAL units, which carry
    no picture (as for the video baselines)."""
    with tempfile.TemporaryDirectory(prefix="coolchic_vvc_") as folder:
        source, stream = f"{folder}/input.png", f"{folder}/output.266"
        image.save(source)
        run_ffmpeg([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", source,
                    "-vf", _VVC_TO_YUV, "-pix_fmt", "yuv420p10le", "-c:v", "libvvenc", "-preset", "medium",
                    "-qp", str(int(qp)), "-qpa", "0", "-threads", "1", "-vvenc-params", "GOPSize=1:IntraPeriod=1",
                    "-bsf:v", "filter_units=remove_types=20|23|24", "-f", "vvc", stream], "VVC-intra encoding")
        with open(stream, "rb") as file:
            return file.read()


def _vvc_decode(data: bytes) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="coolchic_vvc_") as folder:
        stream, decoded = f"{folder}/input.266", f"{folder}/decoded.png"
        with open(stream, "wb") as file:
            file.write(data)
        run_ffmpeg([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-threads", "1",
                    "-i", stream, "-vf", _VVC_TO_RGB, "-pix_fmt", "rgb24", "-frames:v", "1", decoded],
                   "VVC-intra decoding")
        with Image.open(decoded) as image:
            return np.asarray(image.convert("RGB"))


def psnr_rgb(decoded: np.ndarray, original: np.ndarray) -> float:
    """PSNR of two 8-bit [H, W, 3] images, in float64 so it is exact for any image size."""
    return psnr_db([torch.from_numpy(decoded.astype(np.float64))], [torch.from_numpy(original.astype(np.float64))],
                   data_range=255.0)


def sweep(codec: ClassicalCodec, image: Image.Image) -> list[dict]:
    """One RD point per quality: bpp from the encoded size, RGB PSNR of the decoded image."""
    original = np.asarray(image.convert("RGB"))
    n_pixels = original.shape[0] * original.shape[1]
    points = []
    for quality in codec.qualities:
        data = codec.encode(image, quality)
        points.append({"quality": quality, "bytes": len(data), "bpp": 8 * len(data) / n_pixels,
                       "psnr_rgb": psnr_rgb(codec.decode(data), original)})
    return points
