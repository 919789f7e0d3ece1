"""Classical video codecs (x264, x265, vvenc) as baselines for ``bench video``.

Every point is a real encode of a raw YUV 4:2:0 sequence with the ffmpeg binary shipped in the
imageio-ffmpeg wheel, a decode back with the same binary and a PSNR computed here with numpy on the
integer samples, so that the classical points are measured exactly like the Cool-Chic ones:

* rate: the size of the raw Annex-B elementary stream (``-f h264`` -> .264, ``-f hevc`` -> .265,
  ``-f vvc`` -> .266, no container) divided by W x H x frames. SEI and access unit delimiter NAL units
  are removed with the ``filter_units`` bitstream filter before the stream is written: they carry no
  picture data, and x264's options string or x265's info SEI (hundreds of bytes to 2 kB) would dominate
  the rate of the few small frames a Cool-Chic benchmark codes. x264's open-GOP recovery point SEIs go
  with them; decoding from frame 0 does not need them.
* distortion: per frame and per plane PSNR at the bit depth of the input (MAX 255 or 1023), capped at
  100 dB, averaged over frames; PSNR-YUV = (6 Y + U + V) / 8.

Every encode is single-threaded (``-threads 1``; x265 ``pools=1:frame-threads=1``; vvenc
``-threads 1``), which also makes it deterministic, and runs at a constant QP with PSNR tuning (x264 /
x265 ``-tune psnr``, vvenc ``-qpa 0``), no scene-cut detection and no adaptive B-frame placement, so that
the GOP is the one :class:`GopLayout` asks for. What cannot match the Cool-Chic structure is listed in
:func:`encode_sequence`.
"""

from __future__ import annotations

import math
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coolchic_pl.bench.ffmpeg import ffmpeg_encoders, ffmpeg_exe, run_ffmpeg

VIDEO_CODECS = ("x264", "x265", "vvenc")
PSNR_CAP_DB = 100.0

_ENCODERS = {"x264": "libx264", "x265": "libx265", "vvenc": "libvvenc"}
# (ffmpeg raw muxer, file extension) of each codec's Annex-B elementary stream.
_MUXERS = {"x264": ("h264", "264"), "x265": ("hevc", "265"), "vvenc": ("vvc", "266")}
# NAL unit types removed before the stream is measured: access unit delimiters and SEI.
_DROPPED_NAL_TYPES = {"x264": "6|9", "x265": "35|39|40", "vvenc": "20|23|24"}
_MAX_B_FRAMES = 16  # x264 and x265 both refuse more consecutive B frames.
# The only mini-GOP sizes vvenc builds a random-access hierarchy for (its "GOP auto configuration").
_VVENC_RA_GOPS = (16, 32)
# vvenc's low-delay configuration: an 8-frame GOP without reordering.
_VVENC_LD_GOP = 8
# ffmpeg's libvvenc takes yuv420p10le input only.
_VVENC_BITDEPTH = 10
_PIX_FMTS = {8: "yuv420p", 10: "yuv420p10le"}


@dataclass(frozen=True)
class GopLayout:
    """The coding structure asked of a classical encoder, in the terms encoders share.

    ``intra_period`` is the distance between I frames (``n_frames`` when only frame 0 is intra),
    ``b_frames`` the number of consecutive B frames between two anchors (0: low-delay P) and
    ``closed_gop`` whether frames before an I frame may not reference it.
    """

    n_frames: int
    intra_period: int
    b_frames: int
    closed_gop: bool = True

    def __post_init__(self) -> None:
        if self.n_frames < 1 or self.intra_period < 1 or self.b_frames < 0:
            raise ValueError(f"GopLayout needs n_frames >= 1, intra_period >= 1 and b_frames >= 0, got {self}")
        if self.b_frames >= self.intra_period:
            raise ValueError(f"GopLayout: {self.b_frames} B frames do not fit in an intra period of "
                             f"{self.intra_period} frames")

    @classmethod
    def from_frame_types(cls, types: Sequence[str]) -> GopLayout:
        """The layout of a Cool-Chic structure given as its frame types ("I", "P", "B") in display order.

        Cool-Chic B frames always reference the anchors on both sides, so a B run that ends on an I frame
        (``I B B B I``) is an open GOP; the longest B run is taken as ``b_frames`` because a final run
        cut short by the end of the sequence is coded the same way by every encoder.
        """
        kinds = [kind.upper() for kind in types]
        if not kinds or kinds[0] != "I" or set(kinds) - {"I", "P", "B"}:
            raise ValueError(f"frame types must be I, P or B and start with I, got {list(types)}")
        intra = [index for index, kind in enumerate(kinds) if kind == "I"]
        period = intra[1] if len(intra) > 1 else len(kinds)
        if intra != list(range(0, len(kinds), period)):
            raise ValueError(f"I frames at {intra} are not evenly spaced: classical encoders take one intra period")
        b_frames = max((len(run) for run in re.findall("B+", "".join(kinds))), default=0)
        open_gop = any(kinds[index - 1] == "B" for index in intra[1:])
        return cls(len(kinds), period, b_frames, closed_gop=not open_gop)


@dataclass
class VideoPoint:
    """One encode of one sequence at one QP; bpp, the mean PSNRs and PSNR-YUV follow from the other fields."""

    codec: str
    qp: int
    preset: str
    n_frames: int
    width: int
    height: int
    frame_offset: int
    bits: int
    psnr_y_frames: list[float]
    psnr_u_frames: list[float]
    psnr_v_frames: list[float]
    frame_types: list[str]
    encode_time_s: float
    settings: str
    intra_bits: int = 0
    inter_bits: int = 0
    bpp: float = field(init=False)
    psnr_y: float = field(init=False)
    psnr_u: float = field(init=False)
    psnr_v: float = field(init=False)
    psnr_yuv: float = field(init=False)

    def __post_init__(self) -> None:
        self.bpp = self.bits / (self.width * self.height * self.n_frames)
        self.psnr_y = float(np.mean(self.psnr_y_frames))
        self.psnr_u = float(np.mean(self.psnr_u_frames))
        self.psnr_v = float(np.mean(self.psnr_v_frames))
        self.psnr_yuv = (6 * self.psnr_y + self.psnr_u + self.psnr_v) / 8


# NAL unit types of coded pictures (VCL) and of intra random access points, by codec.
_VCL_TYPES = {"x264": range(1, 6), "x265": range(0, 32), "vvenc": range(0, 12)}
_IRAP_TYPES = {"x265": range(16, 24), "vvenc": range(7, 10)}


def _nal_units(stream: bytes) -> list[bytes]:
    """The NAL units of an Annex-B stream, start codes removed (a trailing zero byte of a
    4-byte start code stays on the unit before it, which only adds one byte to its size)."""
    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", stream)]
    return [stream[start:end - 3] for start, end in zip(starts, starts[1:] + [len(stream) + 3])]


def _nal_type(codec: str, unit: bytes) -> int:
    if codec == "x264":
        return unit[0] & 0x1F
    if codec == "x265":
        return (unit[0] >> 1) & 0x3F
    return (unit[1] >> 3) & 0x1F


def _h264_slice_is_intra(unit: bytes) -> bool:
    """slice_type (the second ue(v) of the slice header) is I or SI: 2, 4, 7 or 9."""
    bits = "".join(f"{byte:08b}" for byte in unit[1:12].replace(b"\x00\x00\x03", b"\x00\x00"))
    position, values = 0, []
    for _ in range(2):
        zeros = bits.index("1", position) - position
        values.append(int(bits[position + zeros:position + 2 * zeros + 1], 2) - 1)
        position += 2 * zeros + 1
    return values[1] % 5 in (2, 4)


def intra_and_inter_bits(codec: str, stream: bytes) -> tuple[int, int]:
    """Bits of the intra and of the inter pictures of an elementary stream; parameter sets
    count with the picture that follows them. Each picture is one slice, as the
    single-threaded encoders here write them."""
    units = _nal_units(stream)
    intra = inter = 0
    pending = 8 * len(stream) - sum(8 * (len(unit) + 3) for unit in units)  # bytes before the first start code
    for unit in units:
        kind = _nal_type(codec, unit)
        size = 8 * (len(unit) + 3)
        if kind not in _VCL_TYPES[codec]:
            pending += size
            continue
        is_intra = _h264_slice_is_intra(unit) if codec == "x264" else kind in _IRAP_TYPES[codec]
        if is_intra:
            intra += size + pending
        else:
            inter += size + pending
        pending = 0
    return intra, inter + pending


def available_video_codecs() -> list[str]:
    """The codecs of :data:`VIDEO_CODECS` whose encoder the ffmpeg binary has; empty without imageio-ffmpeg."""
    encoders = ffmpeg_encoders()
    return [codec for codec in VIDEO_CODECS if _ENCODERS[codec] in encoders]


def plane_psnr(reference: np.ndarray, decoded: np.ndarray, bitdepth: int) -> float:
    """PSNR of one plane on integer samples, capped at :data:`PSNR_CAP_DB` so a lossless frame stays finite
    and cannot dominate a mean over frames."""
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10((2**bitdepth - 1) ** 2 / mse))


def _split_frames(samples: np.ndarray, width: int, height: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(Y, U, V) planes of each frame of a flat 4:2:0 sample array."""
    chroma_h, chroma_w = (height + 1) // 2, (width + 1) // 2
    luma, chroma = width * height, chroma_h * chroma_w
    frames = samples.reshape(-1, luma + 2 * chroma)
    return [(frame[:luma].reshape(height, width), frame[luma:luma + chroma].reshape(chroma_h, chroma_w),
             frame[luma + chroma:].reshape(chroma_h, chroma_w)) for frame in frames]


def _frame_bytes(width: int, height: int, bitdepth: int) -> int:
    return (width * height + 2 * ((height + 1) // 2) * ((width + 1) // 2)) * (1 if bitdepth == 8 else 2)


def _read_frames(yuv: Path, width: int, height: int, bitdepth: int, frame_offset: int, n_frames: int) -> np.ndarray:
    """Samples of frames ``frame_offset .. frame_offset + n_frames - 1``; a short file is an error, not a
    shorter sequence, since a rate would then be reported for frames that were never coded."""
    frame_bytes = _frame_bytes(width, height, bitdepth)
    available = yuv.stat().st_size // frame_bytes
    if frame_offset < 0 or n_frames < 1 or frame_offset + n_frames > available:
        raise ValueError(f"{yuv.name} holds {available} frame(s) of {width}x{height} 4:2:0 {bitdepth}-bit; "
                         f"frames {frame_offset}..{frame_offset + n_frames - 1} were asked for")
    dtype = np.dtype(np.uint8) if bitdepth == 8 else np.dtype("<u2")
    return np.fromfile(yuv, dtype=dtype, count=n_frames * frame_bytes // dtype.itemsize,
                       offset=frame_offset * frame_bytes)


def _check_qp(codec: str, qp: int) -> None:
    """QPs are the standard's (H.264 / HEVC up to 51, VVC up to 63) at every bit depth."""
    top = 63 if codec == "vvenc" else 51
    if not 0 <= qp <= top:
        raise ValueError(f"{codec}: QP {qp} is outside 0..{top}")


def _encoder_qp(codec: str, qp: int, bitdepth: int) -> int:
    """The QP to give the encoder for the standard's ``qp``: x264 counts high-bit-depth QPs from the lowest
    one the standard allows (-12 at 10 bits), x265 and vvenc take the standard's value."""
    return qp + 6 * (bitdepth - 8) if codec == "x264" else qp


def _x264_args(qp: int, preset: str, layout: GopLayout) -> list[str]:
    """x264's pyramid keeps only the middle B frame as a reference (one level), not a full hierarchy."""
    _check_b_frames("x264", layout)
    pyramid = "normal" if layout.b_frames > 1 else "none"
    params = (f"keyint={layout.intra_period}:min-keyint={layout.intra_period}:scenecut=0:bframes={layout.b_frames}:"
              f"b-adapt=0:b-pyramid={pyramid}:open-gop={int(not layout.closed_gop)}")
    return ["-c:v", "libx264", "-preset", preset, "-tune", "psnr", "-qp", str(qp), "-threads", "1",
            "-x264-params", params]


def _x265_args(qp: int, preset: str, layout: GopLayout) -> list[str]:
    """x265's b-pyramid is, like x264's, a single level of B references."""
    _check_b_frames("x265", layout)
    params = (f"qp={qp}:keyint={layout.intra_period}:min-keyint={layout.intra_period}:scenecut=0:"
              f"bframes={layout.b_frames}:b-adapt=0:b-pyramid={int(layout.b_frames > 1)}:"
              f"open-gop={int(not layout.closed_gop)}:pools=1:frame-threads=1")
    return ["-c:v", "libx265", "-preset", preset, "-tune", "psnr", "-x265-params", params]


def _check_b_frames(codec: str, layout: GopLayout) -> None:
    if layout.b_frames > _MAX_B_FRAMES:
        raise ValueError(f"{codec} codes at most {_MAX_B_FRAMES} consecutive B frames, the layout asks for "
                         f"{layout.b_frames}")


def _vvenc_args(qp: int, preset: str, layout: GopLayout) -> list[str]:
    """``-qpa 0`` turns off vvenc's perceptual QP adaptation, its counterpart of ``-tune psnr``."""
    return ["-c:v", "libvvenc", "-preset", preset, "-qp", str(qp), "-qpa", "0", "-threads", "1",
            "-vvenc-params", _vvenc_params(layout)]


def _vvenc_params(layout: GopLayout) -> str:
    """vvenc's GOP settings for a layout, or a ValueError for a layout its GOP auto configuration cannot build.

    vvenc only builds GOPs of 1 (all intra), 8 without reordering (low delay) and 16 or 32 with reordering
    (random access). A shorter random-access mini-GOP still comes out when it spans a whole intra period
    or the whole sequence after frame 0: vvenc cuts its hierarchy to the frames there are (``I B B B P``
    is coded 0, 4, 2, 1, 3). ``POC0IDR`` keeps frame 0 intra: by default vvenc codes the first frames as
    leading pictures of an I frame further on.
    """
    if layout.intra_period == 1:
        return "GOPSize=1:IntraPeriod=1"
    if layout.b_frames == 0:
        period = _vvenc_intra_period(layout, _VVENC_LD_GOP)
        return f"GOPSize={_VVENC_LD_GOP}:PicReordering=0:DecodingRefreshType=none:IntraPeriod={period}"
    gop = _vvenc_ra_gop(layout)
    refresh = "idr_no_radl" if layout.closed_gop else "cra"
    return f"GOPSize={gop}:POC0IDR=1:DecodingRefreshType={refresh}:IntraPeriod={_vvenc_intra_period(layout, gop)}"


def _vvenc_ra_gop(layout: GopLayout) -> int:
    mini_gop = layout.b_frames + 1
    if mini_gop in _VVENC_RA_GOPS:
        return mini_gop
    if mini_gop == min(layout.intra_period, layout.n_frames - 1) and mini_gop <= max(_VVENC_RA_GOPS):
        return min(gop for gop in _VVENC_RA_GOPS if gop >= mini_gop)
    raise ValueError(f"vvenc cannot code {layout.b_frames} B frames between anchors over {layout.n_frames} frames "
                     f"with intra period {layout.intra_period}: it builds random-access mini-GOPs of 16 or 32 "
                     "frames only (b_frames 15 or 31), or one mini-GOP spanning each intra period or the whole "
                     "sequence after frame 0")


def _vvenc_intra_period(layout: GopLayout, gop: int) -> int:
    """vvenc's IntraPeriod; with a single I frame, the first multiple of the GOP past the sequence."""
    if layout.intra_period < layout.n_frames:
        return layout.intra_period
    return gop * math.ceil(layout.n_frames / gop)


_CODEC_ARGS = {"x264": _x264_args, "x265": _x265_args, "vvenc": _vvenc_args}


def _decode(exe: str, stream: Path, decoded: Path, bitdepth: int) -> list[str]:
    """Decode to raw YUV at ``bitdepth`` and return the frame types the decoder reports, in display order.

    ``-fps_mode passthrough`` keeps ffmpeg from dropping or repeating frames by their timestamps, which raw
    elementary streams do not carry.
    """
    command = [exe, "-hide_banner", "-nostdin", "-y", "-loglevel", "info", "-threads", "1", "-i", str(stream),
               "-vf", "showinfo", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", _PIX_FMTS[bitdepth],
               str(decoded)]
    log = run_ffmpeg(command, f"decoding {stream.name}")
    return re.findall(r"Parsed_showinfo.* n: *\d+ .*\btype:(\S)", log)


def _to_bitdepth(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    """Shift samples between bit depths, rounding to nearest on the way down as a decoder writing
    ``target``-bit output would."""
    if target == source:
        return samples
    if target > source:
        return samples.astype(np.uint16) << (target - source)
    shift = source - target
    rounded = (samples.astype(np.uint32) + (1 << (shift - 1))) >> shift
    return np.minimum(rounded, 2**target - 1).astype(np.uint8 if target == 8 else np.uint16)


def _validate(codec: str, qp: int, layout: GopLayout, n_frames: int, bitdepth: int) -> None:
    if codec not in VIDEO_CODECS:
        raise ValueError(f"unknown video codec '{codec}'; choose from {', '.join(VIDEO_CODECS)}")
    if bitdepth not in _PIX_FMTS:
        raise ValueError(f"only 8- and 10-bit 4:2:0 input is supported, got {bitdepth}-bit")
    if layout.n_frames != n_frames:
        raise ValueError(f"the GOP layout is for {layout.n_frames} frame(s), {n_frames} are to be encoded")
    _check_qp(codec, qp)


def encode_sequence(yuv: Path, width: int, height: int, n_frames: int, codec: str, qp: int, layout: GopLayout,
                    workdir: Path, preset: str = "medium", frame_offset: int = 0, bitdepth: int = 8) -> VideoPoint:
    """Encode frames ``frame_offset .. frame_offset + n_frames - 1`` of a raw 4:2:0 file at a constant QP,
    decode them back and measure them.

    The frames are first copied to ``input.yuv`` in ``workdir`` so the encoder sees exactly them; the stream
    stays in ``workdir`` as ``<stem>_f<first>-<last>_<codec>_<preset>_qp<qp>.<264|265|266>``.

    ``qp`` is the standard's QP at any bit depth (x264 is given ``qp + 12`` at 10 bits, see
    :func:`_encoder_qp`). Each encoder then offsets it per frame as it does by default, much as Cool-Chic
    scales its lambda with the depth in the GOP: x264 and x265 code I frames about 3 lower and B frames about
    2 higher than P frames (ipratio 1.4, pbratio 1.3), vvenc adds its GOP's per-depth QP offsets. Where the
    classical encoders cannot follow the Cool-Chic structure:

    * x264 and x265 keep one level of B references (the middle B of each run), Cool-Chic builds a full
      midpoint hierarchy; vvenc does build one, but only for the GOPs :func:`_vvenc_params` accepts, and
      raises ValueError for other random-access layouts.
    * x264 and x265 search up to their preset's reference count (3 at medium) among past and future
      frames, Cool-Chic P and B frames use exactly the nearest one or two anchors.
    * In a closed GOP x264 and x265 code the frame before each I frame as P (``I B B P I``); vvenc
      (``idr_no_radl``) cuts the hierarchy before it instead. An open GOP (``closed_gop=False``) gives
      ``I B B B I`` like Cool-Chic, the B frames referencing both I frames.
    * vvenc's low delay uses its 8-frame GOP with QP offsets cycling over 8 frames and B slices (the
      decoder reports ``B``), not a flat chain of P frames.
    * ffmpeg's libvvenc takes 10-bit input only: 8-bit input is shifted up by 2 bits, coded in 10 bits and
      the decoded frames rounded back to 8 bits, so its PSNR is measured on the same 8-bit samples as the
      others.
    """
    _validate(codec, qp, layout, n_frames, bitdepth)
    codec_args = _CODEC_ARGS[codec](_encoder_qp(codec, qp, bitdepth), preset, layout)
    original = _read_frames(Path(yuv), width, height, bitdepth, frame_offset, n_frames)
    exe = ffmpeg_exe()
    if codec not in available_video_codecs():
        raise RuntimeError(f"the ffmpeg binary {exe} has no {_ENCODERS[codec]} encoder")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    coded_depth = _VVENC_BITDEPTH if codec == "vvenc" else bitdepth
    source = workdir / "input.yuv"
    _to_bitdepth(original, bitdepth, coded_depth).tofile(source)
    muxer, extension = _MUXERS[codec]
    stream = workdir / (f"{Path(yuv).stem}_f{frame_offset}-{frame_offset + n_frames - 1}_{codec}_{preset}_qp{qp}"
                        f".{extension}")
    command = [exe, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-f", "rawvideo",
               "-pix_fmt", _PIX_FMTS[coded_depth], "-s", f"{width}x{height}", "-r", "30", "-i", str(source),
               *codec_args, "-bsf:v", f"filter_units=remove_types={_DROPPED_NAL_TYPES[codec]}", "-f", muxer,
               str(stream)]
    start = time.perf_counter()
    run_ffmpeg(command, f"{codec} encoding")
    encode_time = time.perf_counter() - start
    decoded_path = workdir / "decoded.yuv"
    try:
        frame_types = _decode(exe, stream, decoded_path, coded_depth)
        decoded = np.fromfile(decoded_path, dtype=np.uint8 if coded_depth == 8 else np.dtype("<u2"))
    finally:
        source.unlink(missing_ok=True)
        decoded_path.unlink(missing_ok=True)
    if decoded.size != original.size or len(frame_types) != n_frames:
        raise RuntimeError(f"{stream.name} decoded to {decoded.size / original.size * n_frames:g} frame(s) "
                           f"({len(frame_types)} reported), {n_frames} were encoded")
    pairs = list(zip(_split_frames(original, width, height),
                     _split_frames(_to_bitdepth(decoded, coded_depth, bitdepth), width, height)))
    psnr = [[plane_psnr(ref[p], dec[p], bitdepth) for ref, dec in pairs] for p in range(3)]
    intra_bits, inter_bits = intra_and_inter_bits(codec, stream.read_bytes())
    return VideoPoint(codec=codec, qp=qp, preset=preset, n_frames=n_frames, width=width, height=height,
                      frame_offset=frame_offset, bits=8 * stream.stat().st_size, psnr_y_frames=psnr[0],
                      psnr_u_frames=psnr[1], psnr_v_frames=psnr[2], frame_types=frame_types,
                      encode_time_s=encode_time, settings=shlex.join(command), intra_bits=intra_bits,
                      inter_bits=inter_bits)


def sweep(yuv: Path, width: int, height: int, n_frames: int, codec: str, qps: Sequence[int], layout: GopLayout,
          workdir: Path, **kw: Any) -> list[VideoPoint]:
    """One :func:`encode_sequence` per QP, in the order given; ``kw`` are its preset, frame_offset and bitdepth."""
    return [encode_sequence(yuv, width, height, n_frames, codec, qp, layout, workdir, **kw) for qp in qps]
