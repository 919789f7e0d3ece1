"""The video .cool file: a sequence header, then every frame in coding order.

Layout (see docs/bitstream.md):

    "CCPV" | u8 version | varint header length | header | frame records | u32 CRC32
    header: height, width, colour space, bit depth, number of frames (varints)
    frame record: varint length, then the display index, the number of references (0 I,
    1 P, 2 B) and their display indices (varints), then
        version 4: a varint length and a bit section (exp-Golomb fields, MSB first): for an
        inter frame the global translations, the warp filter, the motion model (translation,
        affine parameters, or the frame and reference slot its motion is derived from) and
        which Cool-Chics it has (residue, motion); per Cool-Chic the frame its networks are
        predicted from (or none), its architecture (or "as that frame's"), per network how
        it is coded (own, differences from the predicted network, or that network as it is)
        with its q-steps and exp-Golomb orders, and which latent grids are not all zero; then
        the network parameters; then the latents' escapes. The rest of the record is one
        range-coded stream of every latent grid of every Cool-Chic of the frame.
        versions 2 and 3: the global translations (zigzag varints) and the warp filter length
        (inter frames), then per Cool-Chic (residue, then motion for inter frames) a varint
        mode, 0 with the Cool-Chic's model version (1 Cool-Chic 4.2, 2 with Cool-Chic 5
        modules) then its networks and latents as in an image file, or 1 with the display
        index of an earlier frame whose Cool-Chic of the same role lends its networks, then the
        latents only; version 1: networks and latents of a Cool-Chic 4.2 decoder.
    Versions 3 and 4 are decoded in integers after the latents (:mod:`coolchic_pl.fixedpoint`),
    versions 1 and 2 in float32 as they were written.

A version 4 frame spends a few tens of bits on what versions 2 and 3 spent about a thousand
on (byte-aligned varint fields, a stream length and a 32-bit range coder flush per grid),
the fixed cost that weighs most on small inter frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import constriction
import numpy as np
import torch
from torch import Tensor

from coolchic_pl.bitstream import BitstreamError
from coolchic_pl.bitstream.armint import IntegerArm
from coolchic_pl.bitstream.codec import (
    MAX_DIMENSION, ByteReader, architecture_fields, as_bitstream_errors, check_container, check_pixel_count,
    check_synthesis_size, decode_latents, decode_networks, decoder_model, grid_ifce, grid_order, ifce_features,
    integer_grids, model_version, output_range_fields, read_architecture, varints_bytes, with_crc,
)
from coolchic_pl.bitstream.expgolomb import BitReader, BitWriter
from coolchic_pl.bitstream.latents import (
    RangeDecoder, decode_grid_from, encode_grid_into,
)
from coolchic_pl.fixedpoint import check_decoder_bounds, decoded_planes
from coolchic_pl.fixedpoint.motionmodel import AFFINE_PARAMETERS, FLOW_UNITS, affine_flow, derived_flow
from coolchic_pl.fixedpoint.samples import decoded_inter_frame
from coolchic_pl.io import COLOR_SPACES, ColorSpace, FrameData
from coolchic_pl.model.coolchic import NETWORK_NAMES, CoolChic, NetworkSource
from coolchic_pl.model.interframe import (
    MOTION_MODEL_KINDS, MOTION_OUTPUTS, RESIDUE_OUTPUTS, InterCoolChic, InterFrameParameters, MotionModel,
)
from coolchic_pl.nnquant import EXPGOLOMB_ORDERS, Q_STEPS, ModuleQuantization
from coolchic_pl.nnquant.quantize import NETWORK_CODINGS, dequantized, quantized_integers, split_weights_and_biases

VIDEO_MAGIC = b"CCPV"
# 2: Cool-Chic 5 decoders and networks shared between frames; 3: laid out as 2, decoded in
# integers after the latents; 4: compact records (bit fields, one range-coded stream per
# frame), optional Cool-Chics, motion models, networks predicted from an earlier frame's.
VIDEO_FORMAT_VERSION = 4
_INTEGER_VIDEO_VERSION = 3
_COMPACT_VIDEO_VERSION = 4
_OWN_NETWORKS, _SHARED_NETWORKS = 0, 1
MAX_FRAMES = 1 << 20
MAX_WARP_FILTER = 32
# Bounds of the affine parameters (1/64 pel and 2^-16 pel per pixel): far beyond any motion.
MAX_AFFINE_PARAMETER = 1 << 24


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


@dataclass(frozen=True)
class DecodedCoolChic:
    """A decoded Cool-Chic and the quantisation of its networks, kept for the later
    frames that predict their networks from it."""

    model: CoolChic
    network_quantization: dict[str, ModuleQuantization]


# Decoded Cool-Chics by display index, then by role ("residue", "motion").
CoolChicStore = dict[int, dict[str, DecodedCoolChic]]


@dataclass(frozen=True)
class FrameMotion:
    """The decoded motion of an inter frame: its references (display indices) and the flow
    towards each, [references, 2, H, W] int64 in 1/64 pel, relative to the unshifted
    references."""

    refs: tuple[int, ...]
    flows: Tensor


@dataclass
class DecodedSequence:
    """What decoding keeps of the frames decoded so far, by display index: their planes (the
    references of later frames), their Cool-Chics (whose networks later ones predict theirs
    from) and their motion (which later ones derive theirs from)."""

    frames: dict[int, FrameData] = field(default_factory=dict)
    coolchics: CoolChicStore = field(default_factory=dict)
    motion: dict[int, FrameMotion] = field(default_factory=dict)


def to_444(frame: FrameData) -> Tensor:
    """[1, 3, H, W] samples of a decoded frame, chroma repeated 2x2 for 4:2:0: how a
    decoded frame serves as a reference."""
    if frame.color_space != "yuv420":
        return frame.planes[0]
    luma, *chroma = frame.planes
    height, width = luma.shape[-2:]
    full = [c.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :height, :width] for c in chroma]
    return torch.cat([luma, *full], dim=1)


def is_video_bitstream(data: bytes) -> bool:
    return data[:len(VIDEO_MAGIC)] == VIDEO_MAGIC


def base_flows(parameters: InterFrameParameters, display: int, refs: tuple[int, ...], size: tuple[int, int],
               motion: dict[int, FrameMotion]) -> Tensor | None:
    """The motion model's flows [references, 2, H, W] (int64, 1/64 pel, relative to the
    references shifted by their global translations), or None for translation only.
    ``motion`` holds the decoded motion of earlier frames, for a derived model."""
    model = parameters.motion_model
    height, width = size
    if model.kind == "translation":
        return None
    if model.kind == "affine":
        return torch.stack([affine_flow(p, height, width) for p in model.affine])
    source_display, slot = model.source
    source = motion.get(source_display)
    if source is None or slot >= len(source.refs):
        raise BitstreamError(f"the motion is derived from frame {source_display}, reference {slot}, which has no "
                             "decoded motion")
    flows = [derived_flow(source.flows[slot], source_display, source.refs[slot], display, ref)
             - torch.tensor(translation, dtype=torch.int64).view(2, 1, 1) * FLOW_UNITS
             for ref, translation in zip(refs, parameters.translations)]
    return torch.stack(flows)


# ----------------------------------------------------------------------------- encoding

def encode_frame(frame: FrameHeader, decoder: CoolChic | InterCoolChic, quantization: dict[str, ModuleQuantization],
                 bitdepth: int = 8) -> tuple[bytes, dict[str, int]]:
    """One frame record (without its length prefix, format 4) from the frame's quantised
    decoder, and the bits spent on the frame's own fields ("frame") and on each Cool-Chic;
    ``quantization`` is keyed as ``decoder.quantizable_modules()``."""
    bits = BitWriter()
    coolchics = {"residue": decoder} if frame.inter is None else decoder.coolchics
    if frame.inter is not None:
        _write_inter_fields(bits, frame.inter, decoder)
    sizes = {"frame": len(bits)}
    parts = {}
    for role, coolchic in coolchics.items():
        prefix = "" if frame.inter is None else f"{role}."
        own = {k[len(prefix):]: q for k, q in quantization.items() if k.startswith(prefix)}
        parts[role] = {**coolchic.frozen_quantization(), **own}
        start = len(bits)
        _write_coolchic_fields(bits, coolchic, parts[role], bitdepth)
        sizes[role] = len(bits) - start
    for role, coolchic in coolchics.items():
        start = len(bits)
        _write_network_parameters(bits, coolchic, parts[role])
        sizes[role] += len(bits) - start
    encoder, escapes = constriction.stream.queue.RangeEncoder(), BitWriter()
    for role, coolchic in coolchics.items():
        start = encoder.num_bits() + len(escapes)
        _encode_latents(coolchic, parts[role]["arm"], encoder, escapes)
        sizes[role] += encoder.num_bits() + len(escapes) - start
    bits.bits.extend(escapes.bits)
    section = bits.to_bytes()
    record = varints_bytes(frame.display, len(frame.refs), *frame.refs, len(section)) + section
    record += encoder.get_compressed().astype("<u4").tobytes()
    sizes["frame"] += 8 * len(record) - sum(sizes.values())  # byte fields, padding and the coder's flush
    return record, sizes


def _write_inter_fields(bits: BitWriter, parameters: InterFrameParameters, decoder: InterCoolChic) -> None:
    for dx, dy in parameters.translations:
        bits.write_signed(dx, dy)
    bits.write_unsigned(parameters.warp_filter_size // 2 - 1)
    model = parameters.motion_model
    bits.write_unsigned(MOTION_MODEL_KINDS.index(model.kind))
    if model.kind == "affine":
        for reference_parameters in model.affine:
            bits.write_signed(*reference_parameters)
    elif model.kind == "derived":
        bits.write_unsigned(*model.source)
    bits.write_unsigned(int(decoder.residue is not None), int(decoder.motion is not None))


def _write_coolchic_fields(bits: BitWriter, model: CoolChic, quantization: dict[str, ModuleQuantization],
                           bitdepth: int) -> None:
    source = model.network_source
    bits.write_unsigned(0 if source is None else source.frame + 1)
    as_source = source is not None and _same_architecture(model, source.coolchic)
    if source is not None:
        bits.write_unsigned(int(as_source))
    if as_source:
        bits.write_unsigned(*output_range_fields(model, bitdepth))
    else:
        bits.write_unsigned(model_version(model.architecture), *architecture_fields(model, bitdepth))
    for name in NETWORK_NAMES:
        q = quantization[name]
        if source is not None and source.predicts(name, getattr(model, name)):
            bits.write_unsigned(NETWORK_CODINGS.index(q.coding))
        if q.coding != "same":
            weight_steps, bias_steps = Q_STEPS[name]
            bits.write_unsigned(weight_steps.index(q.weight_step), bias_steps.index(q.bias_step), q.weight_order,
                                q.bias_order)
    grids = integer_grids(model)
    bits.write_unsigned(*(int(bool(grids[i].any())) for i in _non_empty_grids(model)))


def _same_architecture(model: CoolChic, source: CoolChic) -> bool:
    return model.architecture == source.architecture and model.n_outputs == source.n_outputs


def _non_empty_grids(model: CoolChic) -> list[int]:
    """Indices of the latent grids that hold latents, in coding order."""
    return [i for i in grid_order(model) if model.latent.numels[i]]


def _write_network_parameters(bits: BitWriter, model: CoolChic, quantization: dict[str, ModuleQuantization]) -> None:
    """Each network's integers: of its values (own) or of their differences from its source's (delta)."""
    for name in NETWORK_NAMES:
        q = quantization[name]
        if q.coding == "same":
            continue
        groups = split_weights_and_biases(getattr(model, name))
        predicted = (split_weights_and_biases(getattr(model.network_source.coolchic, name)) if q.coding == "delta"
                     else (None, None))
        for params, base, step, order in zip(groups, predicted, (q.weight_step, q.bias_step),
                                             (q.weight_order, q.bias_order)):
            if params:
                bits.write_signed(*quantized_integers(params, step, base).to(torch.int64).tolist(), order=order)


def _encode_latents(model: CoolChic, arm_quantization: ModuleQuantization,
                    encoder: constriction.stream.queue.RangeEncoder, escapes: BitWriter) -> None:
    arm = IntegerArm.from_module(model.arm, *arm_quantization.value_steps)
    grids = integer_grids(model)
    flat = np.concatenate([grid.reshape(-1) for grid in grids])
    for grid_index in _non_empty_grids(model):
        grid = grids[grid_index]
        if grid.any():
            encode_grid_into(encoder, escapes, grid, arm, model.architecture.dim_arm, model.architecture.context_order,
                             ifce_features(model, arm, flat, grid_index))


def encode_video(header: SequenceHeader, records: list[bytes]) -> bytes:
    """The sequence file from its frame records in coding order."""
    fields = varints_bytes(header.height, header.width, COLOR_SPACES.index(header.color_space), header.bitdepth,
                           header.n_frames)
    body = bytearray(VIDEO_MAGIC + bytes([VIDEO_FORMAT_VERSION]) + varints_bytes(len(fields)) + fields)
    for record in records:
        body += varints_bytes(len(record)) + record
    return with_crc(bytes(body))


# ----------------------------------------------------------------------------- decoding

def read_frame_header(reader: ByteReader, n_frames: int) -> tuple[int, tuple[int, ...]]:
    display, n_refs = reader.varints(2)
    if display >= n_frames or n_refs > 2:
        raise BitstreamError(f"frame {display} with {n_refs} references does not fit a {n_frames}-frame sequence")
    return display, tuple(reader.varints(n_refs))


def decode_frame(record: bytes, sequence: SequenceHeader, state: DecodedSequence,
                 file_version: int = VIDEO_FORMAT_VERSION) -> tuple[FrameHeader, FrameData]:
    """Decode one frame record given what was decoded before it, to which the frame (its
    planes, Cool-Chics and motion) is added."""
    reader = ByteReader(record)
    display, refs = read_frame_header(reader, sequence.n_frames)
    missing = [r for r in refs if r not in state.frames]
    if display in state.frames or missing:
        raise BitstreamError(f"frame {display} is coded twice or before its references {missing}")
    body = _decode_compact if file_version >= _COMPACT_VIDEO_VERSION else _decode_layered
    try:
        frame, coolchics, planes, motion = as_bitstream_errors(
            lambda: body(reader, display, refs, sequence, state, file_version))
    except BitstreamError as error:
        raise BitstreamError(f"frame {display}: {error}") from None
    decoded = FrameData(tuple(p.detach() for p in planes), sequence.bitdepth, sequence.color_space)
    state.frames[display], state.coolchics[display] = decoded, coolchics
    if motion is not None:
        state.motion[display] = FrameMotion(refs, motion)
    return frame, decoded


_FrameBody = tuple[FrameHeader, dict[str, DecodedCoolChic], tuple[Tensor, ...], Tensor | None]


def _inter_decoder(frame: FrameHeader, sequence: SequenceHeader, state: DecodedSequence,
                   coolchics: dict[str, DecodedCoolChic], base: Tensor | None) -> InterCoolChic:
    size = (sequence.height, sequence.width)
    architectures = {role: part.model.architecture for role, part in coolchics.items()}
    decoder = InterCoolChic(size, [to_444(state.frames[r]) for r in frame.refs], frame.inter,
                            architectures.get("residue"), architectures.get("motion"), base)
    for role, part in coolchics.items():
        getattr(decoder, role).load_state_dict(part.model.state_dict())
    return decoder


def _planes_and_motion(decoder: CoolChic | InterCoolChic, sequence: SequenceHeader,
                       integer: bool) -> tuple[tuple[Tensor, ...], Tensor | None]:
    decoder.eval()
    if integer:
        check_decoder_bounds(decoder)
        if isinstance(decoder, InterCoolChic):
            return decoded_inter_frame(decoder, sequence.color_space, sequence.bitdepth)
    return decoded_planes(decoder, sequence.color_space, sequence.bitdepth, integer), None


# --------------------------------------------------------------- format 4 (compact records)

def _decode_compact(reader: ByteReader, display: int, refs: tuple[int, ...], sequence: SequenceHeader,
                    state: DecodedSequence, file_version: int) -> _FrameBody:
    (section_length,) = reader.varints(1)
    bits = BitReader(reader.bytes(section_length))
    coded = reader.bytes(len(reader.data) - reader.position)
    size = (sequence.height, sequence.width)
    inter, roles = None, {"residue": 3}
    if refs:
        inter, present = _read_inter_fields(bits, len(refs))
        roles = {role: outputs for role, outputs, there in (("residue", RESIDUE_OUTPUTS, present[0]),
                                                             ("motion", MOTION_OUTPUTS[len(refs)], present[1]))
                 if there}
    frame = FrameHeader(display, refs, inter)
    base = None if inter is None else base_flows(inter, display, refs, size, state.motion)
    described = {}
    for role, n_outputs in roles.items():
        try:
            described[role] = _read_coolchic_fields(bits, size, n_outputs, sequence.bitdepth, role, state.coolchics)
        except BitstreamError as error:
            raise BitstreamError(f"{role} Cool-Chic: {error}") from None
    for role, (model, quantization, _) in described.items():
        read_network_parameters(bits, model, quantization, role)
    decoder_state = RangeDecoder(coded)
    for role, (model, quantization, coded_grids) in described.items():
        decode_coolchic_latents(model, quantization["arm"], coded_grids, decoder_state, bits)
    decoder_state.check_end()
    bits.check_end("the frame's bit section")
    coolchics = {role: DecodedCoolChic(model, quantization) for role, (model, quantization, _) in described.items()}
    decoder = coolchics["residue"].model if inter is None else _inter_decoder(frame, sequence, state, coolchics, base)
    planes, motion = _planes_and_motion(decoder, sequence, integer=True)
    return frame, coolchics, planes, motion


def _read_inter_fields(bits: BitReader, n_refs: int) -> tuple[InterFrameParameters, tuple[bool, bool]]:
    translations = tuple(tuple(bits.signed(2).tolist()) for _ in range(n_refs))
    if any(abs(v) > MAX_DIMENSION for pair in translations for v in pair):
        raise BitstreamError("a global translation is out of range")
    (half_filter,) = bits.varints(1)
    filter_size = 2 * (half_filter + 1)
    if filter_size > MAX_WARP_FILTER:
        raise BitstreamError(f"warp filter length {filter_size} is not an even number in 2..{MAX_WARP_FILTER}")
    (kind,) = bits.varints(1)
    if kind >= len(MOTION_MODEL_KINDS):
        raise BitstreamError(f"unknown motion model {kind}")
    model = MotionModel(MOTION_MODEL_KINDS[kind])
    if model.kind == "affine":
        affine = tuple(tuple(bits.signed(AFFINE_PARAMETERS).tolist()) for _ in range(n_refs))
        if any(abs(v) > MAX_AFFINE_PARAMETER for p in affine for v in p):
            raise BitstreamError("an affine motion parameter is out of range")
        model = MotionModel("affine", affine=affine)
    elif model.kind == "derived":
        model = MotionModel("derived", source=tuple(bits.varints(2)))
    residue, motion = (bool(bit) for bit in bits.varints(2))
    if residue > 1 or motion > 1:
        raise BitstreamError("a Cool-Chic presence flag is out of range")
    return InterFrameParameters(translations, filter_size, model), (residue, motion)


def _read_coolchic_fields(bits: BitReader, size: tuple[int, int], n_outputs: int, bitdepth: int, role: str,
                          store: CoolChicStore) -> tuple[CoolChic, dict[str, ModuleQuantization], list[bool]]:
    """A Cool-Chic's description: its model (networks not yet read), how each network is
    coded, and which of its grids carry latents."""
    (source_code,) = bits.varints(1)
    source = None
    if source_code:
        part = store.get(source_code - 1, {}).get(role)
        if part is None:
            raise BitstreamError(f"its networks are predicted from frame {source_code - 1}, which has no such "
                                 "Cool-Chic decoded yet")
        source = NetworkSource(source_code - 1, part.model, part.network_quantization)
    as_source = bool(bits.varints(1)[0]) if source is not None else False
    if as_source:
        if source.coolchic.n_outputs != n_outputs:
            raise BitstreamError("it takes the architecture of a Cool-Chic with other outputs")
        architecture = source.coolchic.architecture
        output_range = bits.varints(2 * n_outputs) if architecture.output_range else None
    else:
        (version,) = bits.varints(1)
        if version not in (1, 2):
            raise BitstreamError(f"unknown model version {version}")
        architecture, output_range = read_architecture(bits, n_outputs, version)
    # Each parameter takes a bit, but for a network sent as its source's, which is already allocated.
    allowance = bits.remaining + (sum(p.numel() for p in source.coolchic.synthesis.parameters()) if source else 0)
    check_synthesis_size(architecture, n_outputs, allowance, allowance)
    model = decoder_model(architecture, size, n_outputs, output_range, bitdepth)
    model.network_source = source
    quantization = {}
    for name in NETWORK_NAMES:
        coding = "own"
        if source is not None and source.predicts(name, getattr(model, name)):
            (code,) = bits.varints(1)
            if code >= len(NETWORK_CODINGS):
                raise BitstreamError(f"{name} network coding {code} is unknown")
            coding = NETWORK_CODINGS[code]
        if coding == "same":
            quantization[name] = ModuleQuantization.same_as(source.quantization[name].value_steps)
            continue
        w_index, b_index, w_order, b_order = bits.varints(4)
        weight_steps, bias_steps = Q_STEPS[name]
        if w_index >= len(weight_steps) or b_index >= len(bias_steps):
            raise BitstreamError(f"{name} q-step index out of range")
        if w_order not in EXPGOLOMB_ORDERS or b_order not in EXPGOLOMB_ORDERS:
            raise BitstreamError(f"{name} exp-Golomb order out of range")
        quantization[name] = ModuleQuantization(weight_steps[w_index], bias_steps[b_index], w_order, b_order, 0,
                                                coding, source.quantization[name].value_steps if coding == "delta"
                                                else None)
    coded_grids = [bool(flag) for flag in bits.varints(len(_non_empty_grids(model)))]
    if any(flag > 1 for flag in coded_grids):
        raise BitstreamError("a latent grid flag is out of range")
    return model, quantization, coded_grids


def read_network_parameters(bits: BitReader, model: CoolChic, quantization: dict[str, ModuleQuantization],
                             role: str) -> None:
    """Set the model's networks from the bit section (each as its coding says)."""
    source = model.network_source
    for name in NETWORK_NAMES:
        q = quantization[name]
        groups = split_weights_and_biases(getattr(model, name))
        predicted = split_weights_and_biases(getattr(source.coolchic, name)) if q.coding != "own" else None
        start = bits.position
        for group, (params, step, order) in enumerate(zip(groups, (q.weight_step, q.bias_step),
                                                          (q.weight_order, q.bias_order))):
            for index, param in enumerate(params):
                base = None if predicted is None else predicted[group][index].detach()
                if q.coding == "same":
                    values = base.double()
                else:
                    try:
                        integers = torch.from_numpy(bits.signed(param.numel(), order))
                    except BitstreamError as error:
                        raise BitstreamError(f"{role} {name} network: {error}") from None
                    values = dequantized(integers, step, base)
                    if values is None:
                        raise BitstreamError(f"{role} {name} network: a value is not exact in float32")
                with torch.no_grad():
                    param.copy_(values.view_as(param).to(param.dtype))
        quantization[name] = replace(q, rate_bits=bits.position - start)


def decode_coolchic_latents(model: CoolChic, arm_quantization: ModuleQuantization, coded_grids: list[bool],
                            decoder: RangeDecoder, escapes: BitReader) -> None:
    """Decode a Cool-Chic's latent grids from a frame's range decoder and escape bits."""
    architecture = model.architecture
    arm = IntegerArm.from_module(model.arm, *arm_quantization.value_steps)
    latent = model.latent
    flat = np.zeros(latent.n_latents, dtype=np.int64)
    starts = np.cumsum([0] + latent.numels)
    with torch.no_grad():
        for grid_index, coded in zip(_non_empty_grids(model), coded_grids):
            if not coded:
                continue
            grid = latent.grids[grid_index]
            grid_h, grid_w = latent.sizes[grid_index]
            try:
                latents = decode_grid_from(decoder, escapes, grid_h, grid_w, arm, architecture.dim_arm,
                                           architecture.context_order, grid_ifce(model, arm, flat, grid_index))
            except BitstreamError as error:
                raise BitstreamError(f"latent grid {grid_index}: {error}") from None
            flat[starts[grid_index]:starts[grid_index + 1]] = latents.reshape(-1)
            grid.copy_(torch.from_numpy(latents).to(grid.dtype).view_as(grid) / latent.encoder_gain)


# ------------------------------------------------------------ formats 1 to 3 (still decoded)

def _zigzag(value: int) -> int:
    return (value << 1) ^ -1 if value < 0 else value << 1


def _unzigzag(value: int) -> int:
    return -((value + 1) >> 1) if value & 1 else value >> 1


def _read_layered_coolchic(reader: ByteReader, size: tuple[int, int], n_outputs: int, file_version: int,
                           bitdepth: int, role: str, store: CoolChicStore) -> DecodedCoolChic:
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
        model.predict_networks(NetworkSource(value, source.model, source.network_quantization), frozen=True)
        model.eval()
        quantization = model.frozen_quantization()
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


def _decode_layered(reader: ByteReader, display: int, refs: tuple[int, ...], sequence: SequenceHeader,
                    state: DecodedSequence, file_version: int) -> _FrameBody:
    """A record of formats 1 to 3: translations and filter as varints, then each Cool-Chic."""
    inter = None
    if refs:
        translations = tuple((_unzigzag(x), _unzigzag(y)) for x, y in (reader.varints(2) for _ in refs))
        (filter_size,) = reader.varints(1)
        if not 2 <= filter_size <= MAX_WARP_FILTER or filter_size % 2:
            raise BitstreamError(f"warp filter length {filter_size} is not an even number in 2..{MAX_WARP_FILTER}")
        inter = InterFrameParameters(translations, filter_size)
    frame = FrameHeader(display, refs, inter)
    size = (sequence.height, sequence.width)

    def read(role: str, n_outputs: int) -> DecodedCoolChic:
        try:
            return _read_layered_coolchic(reader, size, n_outputs, file_version, sequence.bitdepth, role,
                                          state.coolchics)
        except BitstreamError as error:
            raise BitstreamError(f"{role} Cool-Chic: {error}") from None

    coolchics = {"residue": read("residue", 3 if inter is None else RESIDUE_OUTPUTS)}
    if inter is not None:
        coolchics["motion"] = read("motion", MOTION_OUTPUTS[len(refs)])
    if reader.position != len(reader.data):
        raise BitstreamError("the record holds bytes that no field accounts for")
    decoder = (coolchics["residue"].model if inter is None
               else _inter_decoder(frame, sequence, state, coolchics, None))
    planes, motion = _planes_and_motion(decoder, sequence, file_version >= _INTEGER_VIDEO_VERSION)
    return frame, coolchics, planes, motion


# ----------------------------------------------------------------------------- sequences

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
    state = DecodedSequence()
    for _ in range(n_frames):
        (length,) = reader.varints(1)
        record = reader.bytes(length)
        as_bitstream_errors(lambda: decode_frame(record, sequence, state, file_version))
    if reader.position != len(reader.data):
        raise BitstreamError("the file holds bytes after its last frame")
    return sequence, [state.frames[i] for i in range(n_frames)]

