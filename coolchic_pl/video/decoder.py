"""Decoding a video .cool file (layout: :mod:`coolchic_pl.video.bitstream`), without torch.

Every frame is read into :class:`~coolchic_pl.fixedpoint.coolchic.IntegerCoolChic` arrays and
computed by :mod:`coolchic_pl.fixedpoint`; the encoder decodes its own records with the same
code to keep the references, Cool-Chics and motion that its later frames build on. Files of
versions 1 and 2 are decoded in float32 through the torch modules they were written by.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from coolchic_pl.bitstream.armint import IntegerArm
from coolchic_pl.bitstream.codec import (
    MAX_DIMENSION, ByteReader, as_bitstream_errors, check_container, check_pixel_count, check_synthesis_size,
    decode_latent_grid, decode_latents, decode_networks, empty_coolchic, grid_order, network_values,
    read_architecture,
)
from coolchic_pl.bitstream.errors import BitstreamError
from coolchic_pl.bitstream.expgolomb import BitReader
from coolchic_pl.bitstream.latents import RangeDecoder, decode_grid_from
from coolchic_pl.fixedpoint.coolchic import IntegerCoolChic, IntegerInterFrame, shift
from coolchic_pl.fixedpoint.motionmodel import AFFINE_PARAMETERS, FLOW_UNITS, affine_flow, derived_flow
from coolchic_pl.fixedpoint.samples import (
    check_frame_bounds, decoded_motion, image_samples, inter_samples, sample_planes,
)
from coolchic_pl.io.frame import COLOR_SPACES, ColorSpace, SampleFrame
from coolchic_pl.model.layout import NETWORK_NAMES, network_shapes
from coolchic_pl.model.interparams import (
    MOTION_MODEL_KINDS, MOTION_OUTPUTS, RESIDUE_OUTPUTS, InterFrameParameters, MotionModel,
)
from coolchic_pl.nnquant.steps import EXPGOLOMB_ORDERS, NETWORK_CODINGS, Q_STEPS, ModuleQuantization

VIDEO_MAGIC = b"CCPV"
# 2: Cool-Chic 5 decoders and networks shared between frames; 3: laid out as 2, decoded in
# integers after the latents; 4: compact records (bit fields, one range-coded stream per
# frame), optional Cool-Chics, motion models, networks predicted from an earlier frame's.
VIDEO_FORMAT_VERSION = 4
_INTEGER_VIDEO_VERSION = 3
_COMPACT_VIDEO_VERSION = 4
OWN_NETWORKS, SHARED_NETWORKS = 0, 1
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

    coolchic: IntegerCoolChic
    network_quantization: dict[str, ModuleQuantization]


# Decoded Cool-Chics by display index, then by role ("residue", "motion").
CoolChicStore = dict[int, dict[str, DecodedCoolChic]]


@dataclass(frozen=True)
class FrameMotion:
    """The decoded motion of an inter frame: its references (display indices) and the flow
    towards each, [references, 2, H, W] int64 in 1/64 pel, relative to the unshifted
    references."""

    refs: tuple[int, ...]
    flows: np.ndarray


@dataclass
class DecodedSequence:
    """What decoding keeps of the frames decoded so far, by display index: their samples (the
    references of later frames), their Cool-Chics (whose networks later ones predict theirs
    from) and their motion (which later ones derive theirs from)."""

    frames: dict[int, SampleFrame] = field(default_factory=dict)
    coolchics: CoolChicStore = field(default_factory=dict)
    motion: dict[int, FrameMotion] = field(default_factory=dict)


def is_video_bitstream(data: bytes) -> bool:
    return data[:len(VIDEO_MAGIC)] == VIDEO_MAGIC


def base_flows(parameters: InterFrameParameters, display: int, refs: tuple[int, ...], size: tuple[int, int],
               motion: dict[int, FrameMotion]) -> np.ndarray | None:
    """The motion model's flows [references, 2, H, W] (int64, 1/64 pel, relative to the
    references shifted by their global translations), or None for translation only.
    ``motion`` holds the decoded motion of earlier frames, for a derived model."""
    model = parameters.motion_model
    height, width = size
    if model.kind == "translation":
        return None
    if model.kind == "affine":
        return np.stack([affine_flow(p, height, width) for p in model.affine])
    source_display, slot = model.source
    source = motion.get(source_display)
    if source is None or slot >= len(source.refs):
        raise BitstreamError(f"the motion is derived from frame {source_display}, reference {slot}, which has no "
                             "decoded motion")
    flows = [derived_flow(source.flows[slot], source_display, source.refs[slot], display, ref)
             - np.asarray(translation, dtype=np.int64).reshape(2, 1, 1) * FLOW_UNITS
             for ref, translation in zip(refs, parameters.translations)]
    return np.stack(flows)


def non_empty_grids(coolchic: IntegerCoolChic) -> list[int]:
    """Indices of the latent grids that hold latents, in coding order."""
    return [i for i in grid_order(coolchic) if coolchic.layout.numels[i]]


def read_frame_header(reader: ByteReader, n_frames: int) -> tuple[int, tuple[int, ...]]:
    display, n_refs = reader.varints(2)
    if display >= n_frames or n_refs > 2:
        raise BitstreamError(f"frame {display} with {n_refs} references does not fit a {n_frames}-frame sequence")
    return display, tuple(reader.varints(n_refs))


def decode_frame(record: bytes, sequence: SequenceHeader, state: DecodedSequence,
                 file_version: int = VIDEO_FORMAT_VERSION) -> tuple[FrameHeader, SampleFrame]:
    """Decode one frame record given what was decoded before it, to which the frame (its
    samples, Cool-Chics and motion) is added."""
    reader = ByteReader(record)
    display, refs = read_frame_header(reader, sequence.n_frames)
    missing = [r for r in refs if r not in state.frames]
    if display in state.frames or missing:
        raise BitstreamError(f"frame {display} is coded twice or before its references {missing}")
    body = _decode_compact if file_version >= _COMPACT_VIDEO_VERSION else _decode_layered
    try:
        frame, coolchics, decoded, motion = as_bitstream_errors(
            lambda: body(reader, display, refs, sequence, state, file_version))
    except BitstreamError as error:
        raise BitstreamError(f"frame {display}: {error}") from None
    state.frames[display], state.coolchics[display] = decoded, coolchics
    if motion is not None:
        state.motion[display] = FrameMotion(refs, motion)
    return frame, decoded


_FrameBody = tuple[FrameHeader, dict[str, DecodedCoolChic], SampleFrame, np.ndarray | None]


def _inter_frame(frame: FrameHeader, sequence: SequenceHeader, state: DecodedSequence,
                 coolchics: dict[str, DecodedCoolChic], base: np.ndarray | None) -> IntegerInterFrame:
    references = [shift(state.frames[r].to_444().astype(np.float64), dx, dy)
                  for r, (dx, dy) in zip(frame.refs, frame.inter.translations)]
    if base is None:
        base = np.zeros((len(references), 2, sequence.height, sequence.width), dtype=np.int64)
    parts = {role: part.coolchic for role, part in coolchics.items()}
    return IntegerInterFrame(references, base, frame.inter.warp_filter_size, frame.inter.translations,
                             parts.get("residue"), parts.get("motion"))


def _integer_frame(frame: FrameHeader, sequence: SequenceHeader, state: DecodedSequence,
                   coolchics: dict[str, DecodedCoolChic],
                   base: np.ndarray | None) -> tuple[SampleFrame, np.ndarray | None]:
    """The frame's samples and, for an inter frame, its decoded motion."""
    max_value = 2**sequence.bitdepth - 1
    motion = None
    if frame.inter is None:
        coolchic = coolchics["residue"].coolchic
        check_frame_bounds(coolchic)
        samples = image_samples(coolchic, max_value)
    else:
        inter = _inter_frame(frame, sequence, state, coolchics, base)
        check_frame_bounds(inter)
        samples, flows = inter_samples(inter, max_value)
        motion = decoded_motion(inter, flows)
    planes = sample_planes(samples, sequence.color_space)
    return SampleFrame.of(planes, sequence.bitdepth, sequence.color_space), motion


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
            described[role] = _read_coolchic_fields(bits, size, n_outputs, role, state.coolchics)
        except BitstreamError as error:
            raise BitstreamError(f"{role} Cool-Chic: {error}") from None
    for role, (coolchic, quantization, _, source) in described.items():
        read_network_parameters(bits, coolchic, quantization, source, role)
    decoder_state = RangeDecoder(coded)
    for coolchic, quantization, coded_grids, _ in described.values():
        decode_coolchic_latents(coolchic, quantization["arm"], coded_grids, decoder_state, bits)
    decoder_state.check_end()
    bits.check_end("the frame's bit section")
    coolchics = {role: DecodedCoolChic(coolchic, quantization)
                 for role, (coolchic, quantization, _, _) in described.items()}
    decoded, motion = _integer_frame(frame, sequence, state, coolchics, base)
    return frame, coolchics, decoded, motion


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


def predicts(source: DecodedCoolChic, coolchic: IntegerCoolChic, name: str) -> bool:
    """Whether the source's network ``name`` has the shapes of ``coolchic``'s, as
    :meth:`~coolchic_pl.model.coolchic.NetworkSource.predicts` decides it for the encoder."""
    theirs = [value.shape for value in source.coolchic.networks[name].values()]
    ours = network_shapes(coolchic.architecture, coolchic.image_size, coolchic.n_outputs)[name]
    return theirs == [shape for _, shape in ours]


_Described = tuple[IntegerCoolChic, dict[str, ModuleQuantization], list[bool], DecodedCoolChic | None]


def _read_coolchic_fields(bits: BitReader, size: tuple[int, int], n_outputs: int, role: str,
                          store: CoolChicStore) -> _Described:
    """A Cool-Chic's description: its arrays (networks not yet read), how each network is
    coded, which of its grids carry latents, and the Cool-Chic its networks are predicted from."""
    (source_code,) = bits.varints(1)
    source = None
    if source_code:
        source = store.get(source_code - 1, {}).get(role)
        if source is None:
            raise BitstreamError(f"its networks are predicted from frame {source_code - 1}, which has no such "
                                 "Cool-Chic decoded yet")
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
    allowance = bits.remaining + (sum(v.size for v in source.coolchic.networks["synthesis"].values())
                                  if source else 0)
    check_synthesis_size(architecture, n_outputs, allowance, allowance)
    coolchic = empty_coolchic(architecture, size, n_outputs, output_range)
    quantization = {}
    for name in NETWORK_NAMES:
        coding = "own"
        if source is not None and predicts(source, coolchic, name):
            (code,) = bits.varints(1)
            if code >= len(NETWORK_CODINGS):
                raise BitstreamError(f"{name} network coding {code} is unknown")
            coding = NETWORK_CODINGS[code]
        if coding == "same":
            quantization[name] = ModuleQuantization.same_as(source.network_quantization[name].value_steps)
            continue
        w_index, b_index, w_order, b_order = bits.varints(4)
        weight_steps, bias_steps = Q_STEPS[name]
        if w_index >= len(weight_steps) or b_index >= len(bias_steps):
            raise BitstreamError(f"{name} q-step index out of range")
        if w_order not in EXPGOLOMB_ORDERS or b_order not in EXPGOLOMB_ORDERS:
            raise BitstreamError(f"{name} exp-Golomb order out of range")
        quantization[name] = ModuleQuantization(weight_steps[w_index], bias_steps[b_index], w_order, b_order, 0,
                                                coding, source.network_quantization[name].value_steps
                                                if coding == "delta" else None)
    coded_grids = [bool(flag) for flag in bits.varints(len(non_empty_grids(coolchic)))]
    if any(flag > 1 for flag in coded_grids):
        raise BitstreamError("a latent grid flag is out of range")
    return coolchic, quantization, coded_grids, source


def read_network_parameters(bits: BitReader, coolchic: IntegerCoolChic, quantization: dict[str, ModuleQuantization],
                            source: DecodedCoolChic | None, role: str) -> None:
    """Set the Cool-Chic's networks from the bit section (each as its coding says). A value
    that float32 cannot hold exactly (a difference on a finer grid than large predicted
    values allow) is refused: the encoder's modules hold float32."""
    shapes = network_shapes(coolchic.architecture, coolchic.image_size, coolchic.n_outputs)
    for name in NETWORK_NAMES:
        q = quantization[name]
        start = bits.position
        values = {}
        for is_bias, step, order in ((False, q.weight_step, q.weight_order), (True, q.bias_step, q.bias_order)):
            group = [(key, shape) for key, shape in shapes[name] if key.endswith("bias") == is_bias]
            for key, shape in group:
                predicted = None if q.coding == "own" else source.coolchic.networks[name][key]
                if q.coding == "same":
                    values[key] = predicted
                    continue
                try:
                    integers = bits.signed(int(np.prod(shape)), order)
                except BitstreamError as error:
                    raise BitstreamError(f"{role} {name} network: {error}") from None
                value = network_values(integers, [shape], step)[0]
                if predicted is not None:
                    value = value + predicted
                if not np.array_equal(value.astype(np.float32), value):
                    raise BitstreamError(f"{role} {name} network: a value is not exact in float32")
                values[key] = value
        coolchic.networks[name] = {key: values[key] for key, _ in shapes[name]}
        quantization[name] = replace(q, rate_bits=bits.position - start)


def decode_coolchic_latents(coolchic: IntegerCoolChic, arm_quantization: ModuleQuantization, coded_grids: list[bool],
                            decoder: RangeDecoder, escapes: BitReader) -> None:
    """Decode a Cool-Chic's latent grids from a frame's range decoder and escape bits."""
    architecture = coolchic.architecture
    arm = IntegerArm.from_parameters(coolchic.networks["arm"], *arm_quantization.value_steps)
    for grid_index, coded in zip(non_empty_grids(coolchic), coded_grids):
        if coded:
            decode_latent_grid(coolchic, arm, grid_index, lambda height, width, ifce: decode_grid_from(
                decoder, escapes, height, width, arm, architecture.dim_arm, architecture.context_order, ifce))


# ------------------------------------------------------------ formats 1 to 3 (still decoded)

def unzigzag(value: int) -> int:
    return -((value + 1) >> 1) if value & 1 else value >> 1


def _read_layered_coolchic(reader: ByteReader, size: tuple[int, int], n_outputs: int, file_version: int,
                           role: str, store: CoolChicStore) -> DecodedCoolChic:
    if file_version == 1:
        mode, version = OWN_NETWORKS, 1
    else:
        mode, value = reader.varints(2)
        version = value
    if mode == SHARED_NETWORKS:
        source = store.get(value, {}).get(role)
        if source is None or source.coolchic.n_outputs != n_outputs:
            raise BitstreamError(f"a {role} Cool-Chic shares the networks of frame {value}, which has no such "
                                 "Cool-Chic decoded yet")
        # The networks as they are; the output range, not a network, stays unset, as these
        # versions' decoder left it.
        coolchic = empty_coolchic(source.coolchic.architecture, size, n_outputs, None)
        coolchic.networks = dict(source.coolchic.networks)
        quantization = {name: ModuleQuantization.same_as(source.network_quantization[name].value_steps)
                        for name in NETWORK_NAMES}
    elif mode != OWN_NETWORKS or version not in (1, 2):
        raise BitstreamError(f"unknown Cool-Chic mode {mode} or model version {version}")
    header_length, payload_length = reader.varints(2)
    header, payload = ByteReader(reader.bytes(header_length)), ByteReader(reader.bytes(payload_length))
    if mode == OWN_NETWORKS:
        coolchic, quantization = decode_networks(header, payload, size, n_outputs, version)
    decode_latents(coolchic, quantization["arm"], header, payload)
    if header.position != len(header.data) or payload.position != len(payload.data):
        raise BitstreamError("a Cool-Chic of a frame holds bytes that no field accounts for")
    return DecodedCoolChic(coolchic, quantization)


def _decode_layered(reader: ByteReader, display: int, refs: tuple[int, ...], sequence: SequenceHeader,
                    state: DecodedSequence, file_version: int) -> _FrameBody:
    """A record of formats 1 to 3: translations and filter as varints, then each Cool-Chic."""
    inter = None
    if refs:
        translations = tuple((unzigzag(x), unzigzag(y)) for x, y in (reader.varints(2) for _ in refs))
        (filter_size,) = reader.varints(1)
        if not 2 <= filter_size <= MAX_WARP_FILTER or filter_size % 2:
            raise BitstreamError(f"warp filter length {filter_size} is not an even number in 2..{MAX_WARP_FILTER}")
        inter = InterFrameParameters(translations, filter_size)
    frame = FrameHeader(display, refs, inter)
    size = (sequence.height, sequence.width)

    def read(role: str, n_outputs: int) -> DecodedCoolChic:
        try:
            return _read_layered_coolchic(reader, size, n_outputs, file_version, role, state.coolchics)
        except BitstreamError as error:
            raise BitstreamError(f"{role} Cool-Chic: {error}") from None

    coolchics = {"residue": read("residue", 3 if inter is None else RESIDUE_OUTPUTS)}
    if inter is not None:
        coolchics["motion"] = read("motion", MOTION_OUTPUTS[len(refs)])
    if reader.position != len(reader.data):
        raise BitstreamError("the record holds bytes that no field accounts for")
    if file_version >= _INTEGER_VIDEO_VERSION:
        decoded, motion = _integer_frame(frame, sequence, state, coolchics, None)
        return frame, coolchics, decoded, motion
    return frame, coolchics, _float_frame(frame, sequence, state, coolchics), None


def _float_frame(frame: FrameHeader, sequence: SequenceHeader, state: DecodedSequence,
                 coolchics: dict[str, DecodedCoolChic]) -> SampleFrame:
    """A version 1 or 2 frame, through the torch modules it was written by (imported here:
    the current versions decode without torch)."""
    from coolchic_pl.fixedpoint.modules import float_frame

    parts = {role: part.coolchic for role, part in coolchics.items()}
    references = [state.frames[r] for r in frame.refs]
    return float_frame(parts, references, frame.inter, sequence.color_space, sequence.bitdepth)


# ----------------------------------------------------------------------------- sequences

def decode_video(data: bytes) -> tuple[SequenceHeader, list[SampleFrame]]:
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
