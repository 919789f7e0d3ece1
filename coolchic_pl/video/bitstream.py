"""The video .cool file: a sequence header, then every frame in coding order.

Layout (see docs/bitstream.md):

    "CCPV" | u8 version | varint header length | header | frame records | u32 CRC32
    header: height, width, colour space, bit depth, number of frames (varints)
    frame record: varint length, then
        display index, number of references (0 I, 1 P, 2 B), the references' display
        indices, their global translations (zigzag varints dx, dy), the warp filter
        length (inter frames), then per Cool-Chic (residue, then motion for inter frames):
        versions 2 and 3: a varint mode, 0 with the Cool-Chic's model version (1 Cool-Chic 4.2,
        2 with Cool-Chic 5 modules) then its networks and latents as in an image file,
        or 1 with the display index of an earlier frame whose Cool-Chic of the same role
        lends its networks, then the latents only;
        version 1 (still decoded): networks and latents of a Cool-Chic 4.2 decoder.
    Version 3 frames are decoded in integers after the latents (:mod:`coolchic_pl.fixedpoint`),
    versions 1 and 2 in float32 as they were written.

Each Cool-Chic is coded as in an image .cool (fixed-point ARM, range-coded latents,
exp-Golomb networks); the sequence shares one header and one CRC.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from coolchic_pl.bitstream import BitstreamError
from coolchic_pl.bitstream.codec import (
    MAX_DIMENSION, ByteReader, as_bitstream_errors, check_container, check_pixel_count, decode_latents,
    decode_networks, encode_latents, encode_networks, model_version, varints_bytes, with_crc,
)
from coolchic_pl.fixedpoint import check_decoder_bounds, decoded_planes
from coolchic_pl.io import COLOR_SPACES, ColorSpace, FrameData
from coolchic_pl.model.coolchic import CoolChic, SharedNetworks
from coolchic_pl.model.interframe import MOTION_OUTPUTS, RESIDUE_OUTPUTS, InterCoolChic, InterFrameParameters
from coolchic_pl.nnquant import ModuleQuantization

VIDEO_MAGIC = b"CCPV"
# 2: Cool-Chic 5 decoders and networks shared between frames; 3: laid out as 2, decoded in
# integers after the latents (versions 1 and 2 still decode, in float32).
VIDEO_FORMAT_VERSION = 3
_INTEGER_VIDEO_VERSION = 3
_OWN_NETWORKS, _SHARED_NETWORKS = 0, 1
MAX_FRAMES = 1 << 20
MAX_WARP_FILTER = 32


@dataclass(frozen=True)
class SequenceHeader:
    height: int
    width: int
    color_space: ColorSpace
    bitdepth: int
    n_frames: int


@dataclass(frozen=True)
class FrameHeader:
    """What a frame record says besides its Cool-Chics."""

    display: int
    refs: tuple[int, ...]
    inter: InterFrameParameters | None  # None for an I frame


def _zigzag(value: int) -> int:
    return (value << 1) ^ -1 if value < 0 else value << 1


def _unzigzag(value: int) -> int:
    return -((value + 1) >> 1) if value & 1 else value >> 1


def _coolchic_bytes(model: CoolChic, quantization: dict[str, ModuleQuantization], bitdepth: int) -> bytes:
    """One Cool-Chic of a frame record: its mode, then what that mode carries."""
    if model.shared_networks is not None:
        header, payload = encode_latents(model, model.shared_networks.quantization["arm"])
        fields = varints_bytes(_SHARED_NETWORKS, model.shared_networks.frame)
    else:
        network_header, network_payload = encode_networks(model, quantization, bitdepth)
        latent_header, latent_payload = encode_latents(model, quantization["arm"])
        header, payload = network_header + latent_header, network_payload + latent_payload
        fields = varints_bytes(_OWN_NETWORKS, model_version(model.architecture))
    return fields + varints_bytes(len(header), len(payload)) + header + payload


def encode_frame(frame: FrameHeader, decoder: CoolChic | InterCoolChic,
                 quantization: dict[str, ModuleQuantization], bitdepth: int = 8) -> tuple[bytes, dict[str, int]]:
    """One frame record (without its length prefix) from the frame's quantised decoder,
    and the bytes of each of its Cool-Chics; ``quantization`` is keyed as
    ``decoder.quantizable_modules()``."""
    record = bytearray(varints_bytes(frame.display, len(frame.refs), *frame.refs))
    if frame.inter is None:
        residue = _coolchic_bytes(decoder, quantization, bitdepth)
        return bytes(record) + residue, {"residue": len(residue)}
    for dx, dy in frame.inter.translations:
        record += varints_bytes(_zigzag(dx), _zigzag(dy))
    record += varints_bytes(frame.inter.warp_filter_size)
    sizes = {}
    for name, coolchic in decoder.coolchics.items():
        prefix = f"{name}."
        part = _coolchic_bytes(coolchic, {k[len(prefix):]: q for k, q in quantization.items()
                                          if k.startswith(prefix)}, bitdepth)
        record += part
        sizes[name] = len(part)
    return bytes(record), sizes


def encode_video(header: SequenceHeader, records: list[bytes]) -> bytes:
    """The sequence file from its frame records in coding order."""
    fields = varints_bytes(header.height, header.width, COLOR_SPACES.index(header.color_space), header.bitdepth,
                           header.n_frames)
    body = bytearray(VIDEO_MAGIC + bytes([VIDEO_FORMAT_VERSION]) + varints_bytes(len(fields)) + fields)
    for record in records:
        body += varints_bytes(len(record)) + record
    return with_crc(bytes(body))


def is_video_bitstream(data: bytes) -> bool:
    return data[:len(VIDEO_MAGIC)] == VIDEO_MAGIC


def to_444(frame: FrameData) -> Tensor:
    """[1, 3, H, W] samples of a decoded frame, chroma repeated 2x2 for 4:2:0: how a
    decoded frame serves as a reference."""
    if frame.color_space != "yuv420":
        return frame.planes[0]
    luma, *chroma = frame.planes
    height, width = luma.shape[-2:]
    full = [c.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :height, :width] for c in chroma]
    return torch.cat([luma, *full], dim=1)


@dataclass(frozen=True)
class DecodedCoolChic:
    """A decoded Cool-Chic and the quantisation of its networks, kept for the later
    frames that share them."""

    model: CoolChic
    network_quantization: dict[str, ModuleQuantization]


# Decoded Cool-Chics by display index, then by role ("residue", "motion").
CoolChicStore = dict[int, dict[str, DecodedCoolChic]]


def _read_coolchic(reader: ByteReader, size: tuple[int, int], n_outputs: int, file_version: int, bitdepth: int,
                   role: str, store: CoolChicStore) -> DecodedCoolChic:
    if file_version == 1:
        mode, version = _OWN_NETWORKS, 1
    else:
        mode, value = reader.varints(2)
        version = value
    if mode == _SHARED_NETWORKS:
        source = store.get(value, {}).get(role)
        if source is None or source.model.n_outputs != n_outputs:
            raise BitstreamError(f"a {role} Cool-Chic shares the networks of frame {value}, which has no such "
                                 "Cool-Chic decoded yet")
        model = CoolChic(size, source.model.architecture, n_outputs=n_outputs)
        model.share_networks(source.model, SharedNetworks(value, source.network_quantization))
        model.eval()
        quantization = source.network_quantization
    elif mode != _OWN_NETWORKS or version not in (1, 2):
        raise BitstreamError(f"unknown Cool-Chic mode {mode} or model version {version}")
    header_length, payload_length = reader.varints(2)
    header, payload = ByteReader(reader.bytes(header_length)), ByteReader(reader.bytes(payload_length))
    if mode == _OWN_NETWORKS:
        model, quantization = decode_networks(header, payload, size, n_outputs, version, bitdepth)
    decode_latents(model, quantization["arm"], header, payload)
    if header.position != len(header.data) or payload.position != len(payload.data):
        raise BitstreamError("a Cool-Chic of a frame holds bytes that no field accounts for")
    return DecodedCoolChic(model, quantization)


def read_frame_header(reader: ByteReader, n_frames: int) -> FrameHeader:
    display, n_refs = reader.varints(2)
    if display >= n_frames or n_refs > 2:
        raise BitstreamError(f"frame {display} with {n_refs} references does not fit a {n_frames}-frame sequence")
    refs = tuple(reader.varints(n_refs))
    if n_refs == 0:
        return FrameHeader(display, refs, None)
    translations = tuple((_unzigzag(x), _unzigzag(y)) for x, y in (reader.varints(2) for _ in refs))
    (filter_size,) = reader.varints(1)
    if not 2 <= filter_size <= MAX_WARP_FILTER or filter_size % 2:
        raise BitstreamError(f"warp filter length {filter_size} is not an even number in 2..{MAX_WARP_FILTER}")
    return FrameHeader(display, refs, InterFrameParameters(translations, filter_size))


def decode_frame(record: bytes, sequence: SequenceHeader, decoded: dict[int, FrameData], store: CoolChicStore,
                 file_version: int = VIDEO_FORMAT_VERSION) -> tuple[FrameHeader, FrameData]:
    """Decode one frame record given the frames decoded so far (by display index) and their
    Cool-Chics; the frame's Cool-Chics are added to ``store``."""
    reader = ByteReader(record)
    frame = read_frame_header(reader, sequence.n_frames)
    missing = [r for r in frame.refs if r not in decoded]
    if frame.display in decoded or missing:
        raise BitstreamError(f"frame {frame.display} is coded twice or before its references {missing}")
    try:
        coolchics, planes = as_bitstream_errors(lambda: _decode_frame_body(reader, frame, sequence, decoded, store,
                                                                           file_version))
    except BitstreamError as error:
        raise BitstreamError(f"frame {frame.display}: {error}") from None
    store[frame.display] = coolchics
    return frame, FrameData(tuple(p.detach() for p in planes), sequence.bitdepth, sequence.color_space)


def _decode_frame_body(reader: ByteReader, frame: FrameHeader, sequence: SequenceHeader,
                       decoded: dict[int, FrameData], store: CoolChicStore,
                       file_version: int) -> tuple[dict[str, DecodedCoolChic], tuple[Tensor, ...]]:
    """The Cool-Chics of a frame record after its header, and the planes they decode to."""
    size = (sequence.height, sequence.width)

    def read(role: str, n_outputs: int) -> DecodedCoolChic:
        try:
            return _read_coolchic(reader, size, n_outputs, file_version, sequence.bitdepth, role, store)
        except BitstreamError as error:
            raise BitstreamError(f"{role} Cool-Chic: {error}") from None

    residue = read("residue", 3 if frame.inter is None else RESIDUE_OUTPUTS)
    coolchics = {"residue": residue}
    if frame.inter is None:
        decoder = residue.model
    else:
        motion = read("motion", MOTION_OUTPUTS[len(frame.refs)])
        coolchics["motion"] = motion
        decoder = InterCoolChic(size, [to_444(decoded[r]) for r in frame.refs], frame.inter,
                                residue.model.architecture, motion.model.architecture)
        for role, part in coolchics.items():
            getattr(decoder, role).load_state_dict(part.model.state_dict())
    if reader.position != len(reader.data):
        raise BitstreamError("the record holds bytes that no field accounts for")
    decoder.eval()
    integer = file_version >= _INTEGER_VIDEO_VERSION
    if integer:
        check_decoder_bounds(decoder)
    return coolchics, decoded_planes(decoder, sequence.color_space, sequence.bitdepth, integer)


def decode_video(data: bytes) -> tuple[SequenceHeader, list[FrameData]]:
    """Every frame of a video .cool in display order; any damage raises BitstreamError."""
    reader = check_container(data, VIDEO_MAGIC, VIDEO_FORMAT_VERSION, "coolchic_pl video bitstream")
    file_version = data[len(VIDEO_MAGIC)]
    (header_length,) = reader.varints(1)
    fields = ByteReader(reader.bytes(header_length))
    height, width, color_code, bitdepth, n_frames = fields.varints(5)
    if not (1 <= height <= MAX_DIMENSION and 1 <= width <= MAX_DIMENSION) or not 1 <= n_frames <= MAX_FRAMES:
        raise BitstreamError(f"sequence of {n_frames} frames of {width}x{height} is out of range")
    if color_code >= len(COLOR_SPACES) or COLOR_SPACES[color_code] == "rgb" or not 8 <= bitdepth <= 16:
        raise BitstreamError("invalid colour space or bit depth for a video")
    check_pixel_count(n_frames * height * width, len(data))
    sequence = SequenceHeader(height, width, COLOR_SPACES[color_code], bitdepth, n_frames)
    decoded: dict[int, FrameData] = {}
    store: CoolChicStore = {}
    for _ in range(n_frames):
        (length,) = reader.varints(1)
        record = reader.bytes(length)
        frame, planes = as_bitstream_errors(lambda: decode_frame(record, sequence, decoded, store, file_version))
        decoded[frame.display] = planes
    if reader.position != len(reader.data):
        raise BitstreamError("the file holds bytes after its last frame")
    return sequence, [decoded[i] for i in range(n_frames)]
