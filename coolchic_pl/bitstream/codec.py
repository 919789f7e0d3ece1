"""The .cool file: header, exp-Golomb network parameters, range-coded latents, CRC32.

Layout (see docs/bitstream.md):

    "CCPL" | u8 version | varint header length | header (varints) | payload | u32 CRC32

Both sides work on an :class:`~coolchic_pl.fixedpoint.coolchic.IntegerCoolChic`, arrays
without torch: the encoder converts its trained CoolChic, whose networks are quantised (every
parameter an integer multiple of its q-step), and the decoder reads an identical one from the
file, so both run the same integer code and the decoder never imports torch.

Version 1 holds Cool-Chic 4.2 decoders. Version 2 adds the fields of Cool-Chic 5's modules
(context order, stabilisers, IFCE, hyper-latents, output range) and codes the latent grids
coarsest first, since a grid's inter-feature contexts come from the coarser ones. Versions 3
and 4 are laid out as 1 and 2 and are decoded in the integer arithmetic of
:mod:`coolchic_pl.fixedpoint` after the latents; the encoder writes only these. Files of
versions 1 and 2 are still decoded, in float32 as they were written.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, TypeVar

import numpy as np

from coolchic_pl.bitstream.armint import IntegerArm
from coolchic_pl.bitstream.errors import BitstreamError
from coolchic_pl.bitstream.expgolomb import decode_signed, encode_signed
from coolchic_pl.bitstream.latents import GridIfce, decode_grid, encode_grid
from coolchic_pl.fixedpoint.coolchic import IntegerCoolChic
from coolchic_pl.fixedpoint.image import check_bounds
from coolchic_pl.io.frame import COLOR_SPACES, ColorSpace
from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.model.layers import parse_synthesis_layers, synthesis_parameter_counts
from coolchic_pl.model.layout import NETWORK_NAMES, ifce_grids, ifce_sources, mac_per_pixel, network_shapes
from coolchic_pl.nnquant import EXPGOLOMB_ORDERS, Q_STEPS, ModuleQuantization

T = TypeVar("T")
MAGIC = b"CCPL"
FORMAT_VERSION = 4
# Versions 3 and 4 are the layouts of 1 and 2 decoded in integers after the latents.
INTEGER_DECODING_OFFSET = 2
_CONTEXT_ORDERS = ("v4", "v5")
_ARM_STABILISER, _SYNTHESIS_STABILISER, _OUTPUT_RANGE = 1, 2, 4
MAX_DIMENSION = 1 << 16
# Resource bounds of a decode (docs/bitstream.md, "Limits"): pixels <= FREE_PIXELS +
# MAX_PIXELS_PER_BYTE x file bytes (all frames of a video together), and at most
# MAX_MACS_PER_PIXEL multiplications per pixel (11 times the largest shipped decoder, vhop5).
FREE_PIXELS = 1 << 20
MAX_PIXELS_PER_BYTE = 1 << 12
MAX_MACS_PER_PIXEL = 1 << 15
# Bounds on architecture fields: a file within the CRC cannot ask for an absurd model.
_MAX_GRIDS = 16
_MAX_ARM_LAYERS = 16
_MAX_KERNEL = 63
_MAX_SYNTHESIS_LAYERS = 64
_MAX_CHANNELS = 1024


@dataclass
class DecodedBitstream:
    coolchic: IntegerCoolChic
    color_space: ColorSpace
    bitdepth: int
    quantization: dict[str, ModuleQuantization]
    integer: bool  # decoded in the integer arithmetic after the latents (versions 3 and 4)


def varints_bytes(*values: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, high bit set on every byte but the last. Header
    fields are small numbers, so this keeps the fixed cost of a file near 70 bytes."""
    out = bytearray()
    for value in values:
        if value < 0:
            raise ValueError(f"header fields are unsigned, got {value}")
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


class ByteReader:
    """Cursor over the file; running past the end is a damaged file, not an IndexError."""

    def __init__(self, data: bytes, position: int = 0):
        self.data, self.position = data, position

    def varints(self, count: int) -> list[int]:
        values = []
        for _ in range(count):
            value = shift = 0
            while True:
                if self.position >= len(self.data):
                    raise BitstreamError("the header is truncated")
                byte = self.data[self.position]
                self.position += 1
                value |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 35:
                    raise BitstreamError("a header field is impossibly long")
            values.append(value)
        return values

    def bytes(self, length: int) -> bytes:
        if self.position + length > len(self.data):
            raise BitstreamError("a payload stream runs past the end of the file")
        chunk = self.data[self.position:self.position + length]
        self.position += length
        return chunk


def _layer_fields(architecture: CoolChicArchitecture, n_outputs: int) -> list[tuple[int, int, int]]:
    n_inputs = sum(architecture.n_ft_per_res)
    specs = parse_synthesis_layers(architecture.layers_synthesis, n_inputs, n_outputs)
    items = architecture.layers_synthesis.split(",")
    return [(0 if item.strip().startswith("X-") else spec.out_channels, spec.kernel_size,
             int(spec.residual) | int(spec.relu) << 1) for item, spec in zip(items, specs)]


def _layer_string(fields: list[tuple[int, int, int]]) -> str:
    return ",".join(f"{'X' if out == 0 else out}-{kernel}-{'residual' if flags & 1 else 'linear'}-"
                    f"{'relu' if flags & 2 else 'none'}" for out, kernel, flags in fields)


def model_version(architecture: CoolChicArchitecture) -> int:
    """1 for a Cool-Chic 4.2 decoder, 2 when it uses any of Cool-Chic 5's modules."""
    return 2 if architecture.uses_v5_modules else 1


def _v2_fields(coolchic: IntegerCoolChic) -> list[int]:
    architecture = coolchic.architecture
    flags = (_ARM_STABILISER * architecture.arm_stabiliser | _SYNTHESIS_STABILISER * architecture.synthesis_stabiliser
             | _OUTPUT_RANGE * architecture.output_range)
    hyper_mask = sum(1 << i for i, c in enumerate(architecture.hyper_per_res) if c)
    fields = [_CONTEXT_ORDERS.index(architecture.context_order), flags, architecture.n_ifce_features,
              architecture.n_ifce_grids, len(architecture.hyper_per_res), hyper_mask]
    return fields + output_range_fields(coolchic)


def output_range_fields(coolchic: IntegerCoolChic) -> list[int]:
    """The output range the synthesis maps [0, 1] onto, (low, high) per output on the sample
    grid; nothing for an architecture without one."""
    if not coolchic.architecture.output_range:
        return []
    return [int(v) for v in coolchic.output_range.reshape(-1)]


def _ifce_position(coolchic: IntegerCoolChic, grid: int) -> tuple[list, list, int, int | None]:
    """The coded grids' sizes and resolutions, grid ``grid``'s position among them and the
    index of its IFCE layer (None for a grid without inter-feature contexts)."""
    sizes, resolutions = coolchic.layout.ifce_geometry()
    position = coolchic.layout.coded_grids().index(grid)
    with_ifce = ifce_grids(resolutions, coolchic.architecture.n_ifce_grids)
    return sizes, resolutions, position, with_ifce.index(position) if position in with_ifce else None


def ifce_features(coolchic: IntegerCoolChic, arm: IntegerArm, flat: np.ndarray, grid: int) -> np.ndarray | None:
    """Integer inter-feature contexts of latent grid ``grid`` from the integer latents in
    ``flat`` (only its coarser grids are read), or None when the grid has no IFCE."""
    n_features = coolchic.architecture.n_ifce_features
    if not n_features:
        return None
    sizes, resolutions, position, layer = _ifce_position(coolchic, grid)
    height, width = sizes[position]
    if layer is None:
        return np.zeros((height * width, n_features), dtype=np.int64)
    rows, columns = np.divmod(np.arange(height * width), width)
    index = np.zeros((height * width, 0), dtype=np.int64)
    for start, source_width, shift in ifce_sources(sizes, resolutions, position):
        index = np.column_stack([index, start + (rows >> shift) * source_width + (columns >> shift)])
    return arm.ifce_features(layer, flat[index])


def grid_ifce(coolchic: IntegerCoolChic, arm: IntegerArm, flat: np.ndarray, grid: int) -> GridIfce | None:
    """What the decoder computes grid ``grid``'s inter-feature contexts from (the counterpart
    of :func:`ifce_features`, whose arithmetic the compiled decoder repeats latent by latent)."""
    n_features = coolchic.architecture.n_ifce_features
    if not n_features:
        return None
    sizes, resolutions, position, layer = _ifce_position(coolchic, grid)
    if layer is None:
        empty = np.zeros(0, dtype=np.int64)
        return GridIfce(n_features, empty, empty, flat, ())
    sources = tuple(ifce_sources(sizes, resolutions, position))
    return GridIfce(n_features, np.ascontiguousarray(arm.ifce_weights[layer]),
                    np.ascontiguousarray(arm.ifce_biases[layer]), flat, sources)


def encode_model(coolchic: IntegerCoolChic, quantization: dict[str, ModuleQuantization]) -> tuple[bytes, bytes]:
    """Header fields (architecture, q-steps, stream lengths) and payload of one quantised
    Cool-Chic; the image size, output count and format version (:func:`model_version`) are
    the container's to send."""
    header, payload = encode_networks(coolchic, quantization)
    latent_header, latent_payload = encode_latents(coolchic, quantization["arm"])
    return header + latent_header, payload + latent_payload


def architecture_fields(coolchic: IntegerCoolChic) -> list[int]:
    """The unsigned fields that describe a Cool-Chic's architecture (and its output range):
    grids, ARM, upsampling, synthesis layers, then Cool-Chic 5's fields for a version 2 model."""
    architecture = coolchic.architecture
    mask = sum(1 << i for i, c in enumerate(architecture.n_ft_per_res) if c)
    layers = _layer_fields(architecture, coolchic.n_outputs)
    fields = [len(architecture.n_ft_per_res), mask, architecture.dim_arm, architecture.n_hidden_layers_arm,
              architecture.ups_k_size, architecture.ups_preconcat_k_size, len(layers)]
    fields += [value for layer in layers for value in layer]
    if model_version(architecture) == 2:
        fields += _v2_fields(coolchic)
    return fields


def weights_and_biases(network: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A network's parameters in file order, weights then biases: the two streams it is sent in."""
    weights = [value for name, value in network.items() if not name.endswith("bias")]
    return weights, [value for name, value in network.items() if name.endswith("bias")]


def network_integers(values: list[np.ndarray], step: float) -> np.ndarray:
    """Quantised values as the integers of their q-step, flat."""
    return np.concatenate([np.round(v.reshape(-1) / step) for v in values]).astype(np.int64) if values \
        else np.zeros(0, dtype=np.int64)


def encode_networks(coolchic: IntegerCoolChic, quantization: dict[str, ModuleQuantization]) -> tuple[bytes, bytes]:
    """The architecture and the exp-Golomb coded networks: the first part of
    :func:`encode_model`, which a Cool-Chic sharing an earlier frame's networks omits."""
    header = bytearray(varints_bytes(*architecture_fields(coolchic)))
    payload = bytearray()
    for name in NETWORK_NAMES:
        q = quantization[name]
        weights, biases = weights_and_biases(coolchic.networks[name])
        streams = [encode_signed(network_integers(values, step), order)
                   for values, step, order in ((weights, q.weight_step, q.weight_order),
                                               (biases, q.bias_step, q.bias_order))]
        weight_steps, bias_steps = Q_STEPS[name]
        header += varints_bytes(weight_steps.index(q.weight_step), bias_steps.index(q.bias_step), q.weight_order,
                                q.bias_order, len(streams[0]), len(streams[1]))
        payload += streams[0] + streams[1]
    return bytes(header), bytes(payload)


def encode_latents(coolchic: IntegerCoolChic, arm_quantization: ModuleQuantization) -> tuple[bytes, bytes]:
    """Stream lengths and range-coded latents of every grid, with the integer ARM of the
    Cool-Chic's (quantised) ARM: the second part of :func:`encode_model`."""
    architecture = coolchic.architecture
    arm = IntegerArm.from_parameters(coolchic.networks["arm"], *arm_quantization.value_steps)
    grids = integer_grids(coolchic)
    header, payload = bytearray(), bytearray()
    for grid_index in grid_order(coolchic):
        coded = escapes = b""
        latents = grids[grid_index]
        if latents.size and latents.any():
            coded, escapes = encode_grid(latents, arm, architecture.dim_arm, architecture.context_order,
                                         ifce_features(coolchic, arm, coolchic.latents, grid_index))
        header += varints_bytes(len(coded), len(escapes))
        payload += coded + escapes
    return bytes(header), bytes(payload)


def integer_grids(coolchic: IntegerCoolChic) -> list[np.ndarray]:
    """The latents of every grid, [h, w] int64 (empty grids [0, 0]), as coded."""
    layout = coolchic.layout
    starts = np.cumsum([0] + layout.numels)
    return [coolchic.latents[starts[g]:starts[g + 1]].reshape(size if channels else (0, 0))
            for g, (channels, size) in enumerate(zip(layout.channels, layout.sizes))]


def grid_order(coolchic: IntegerCoolChic) -> Sequence[int]:
    """Version 2 codes the grids coarsest first (their inter-feature contexts come from coarser grids)."""
    if model_version(coolchic.architecture) == 2:
        return coolchic.layout.decoding_order()
    return range(len(coolchic.architecture.n_ft_per_res))


def encode_coolchic(coolchic: IntegerCoolChic, quantization: dict[str, ModuleQuantization], color_space: ColorSpace,
                    bitdepth: int) -> bytes:
    """Entropy-code a quantised Cool-Chic into a .cool byte string."""
    height, width = coolchic.image_size
    model_header, payload = encode_model(coolchic, quantization)
    header = varints_bytes(height, width, COLOR_SPACES.index(color_space), bitdepth, coolchic.n_outputs) + model_header
    version = model_version(coolchic.architecture) + INTEGER_DECODING_OFFSET
    return with_crc(MAGIC + bytes([version]) + varints_bytes(len(header)) + header + payload)


def with_crc(body: bytes) -> bytes:
    """A coolchic_pl file: its body, then the CRC-32 that :func:`check_container` checks."""
    return body + struct.pack(">I", zlib.crc32(body))


def check_container(data: bytes, magic: bytes, version: int, what: str) -> ByteReader:
    """Magic, version (1 to ``version``) and CRC of a coolchic_pl file; a reader positioned
    after the version."""
    if len(data) < len(magic) + 6:
        raise BitstreamError(f"file too short ({len(data)} bytes) to be a {what}")
    if data[:len(magic)] != magic:
        raise BitstreamError(f"not a {what} (wrong magic bytes)")
    found = data[len(magic)]
    if found > version:
        raise BitstreamError(f"format version {found} is newer than this decoder supports ({version})")
    if found < 1:
        raise BitstreamError(f"unknown format version {found}")
    (stored_crc,) = struct.unpack(">I", data[-4:])
    if zlib.crc32(data[:-4]) != stored_crc:
        raise BitstreamError("integrity check failed: the file is truncated or corrupted")
    return ByteReader(data[:-4], len(magic) + 1)


def as_bitstream_errors(decode: Callable[[], T]) -> T:
    """Run a decoding step; a value that makes the model code fail is a damaged file."""
    try:
        return decode()
    except (ValueError, RuntimeError, OverflowError, IndexError) as error:
        if isinstance(error, BitstreamError):
            raise
        raise BitstreamError(f"inconsistent bitstream content ({error})") from None


def decode_coolchic(data: bytes) -> DecodedBitstream:
    """Parse and decode a .cool byte string; any damage raises BitstreamError."""
    reader = check_container(data, MAGIC, FORMAT_VERSION, "coolchic_pl bitstream")
    version = data[len(MAGIC)]
    (header_length,) = reader.varints(1)
    header = ByteReader(reader.bytes(header_length))
    return as_bitstream_errors(lambda: _decode(header, reader, version))


def _decode(header: ByteReader, payload: ByteReader, version: int) -> DecodedBitstream:
    height, width, color_code, bitdepth, n_outputs = header.varints(5)
    if not (1 <= height <= MAX_DIMENSION and 1 <= width <= MAX_DIMENSION):
        raise BitstreamError(f"image size {width}x{height} is out of range")
    if color_code >= len(COLOR_SPACES) or not 1 <= bitdepth <= 16 or n_outputs < 1:
        raise BitstreamError("invalid colour space, bit depth or output count")
    check_pixel_count(height * width, len(payload.data) + 4)  # the payload reader holds the file but its CRC
    integer = version > INTEGER_DECODING_OFFSET
    layout = version - INTEGER_DECODING_OFFSET if integer else version
    coolchic, quantization = decode_model(header, payload, (height, width), n_outputs, layout)
    if header.position != len(header.data) or payload.position != len(payload.data):
        raise BitstreamError("the file holds bytes that no field accounts for")
    if integer:
        check_bounds(coolchic)
    return DecodedBitstream(coolchic, COLOR_SPACES[color_code], bitdepth, quantization, integer)


def _read_v2_fields(header: ByteReader, n_outputs: int) -> tuple[dict, list[int] | None]:
    """The Cool-Chic 5 architecture fields, and the output range (low, high per output) if any."""
    order, flags, n_ifce_features, n_ifce_grids, n_hyper, hyper_mask = header.varints(6)
    if order >= len(_CONTEXT_ORDERS) or flags > 7 or n_hyper > _MAX_GRIDS or hyper_mask >> n_hyper:
        raise BitstreamError("the Cool-Chic 5 fields are out of range")
    if n_ifce_features > _MAX_CHANNELS or n_ifce_grids > _MAX_GRIDS:
        raise BitstreamError("the IFCE fields are out of range")
    fields = dict(context_order=_CONTEXT_ORDERS[order], arm_stabiliser=bool(flags & _ARM_STABILISER),
                  synthesis_stabiliser=bool(flags & _SYNTHESIS_STABILISER), output_range=bool(flags & _OUTPUT_RANGE),
                  n_ifce_features=n_ifce_features, n_ifce_grids=n_ifce_grids,
                  hyper_per_res=tuple((hyper_mask >> i) & 1 for i in range(n_hyper)))
    return fields, header.varints(2 * n_outputs) if flags & _OUTPUT_RANGE else None


def decode_model(header: ByteReader, payload: ByteReader, image_size: tuple[int, int], n_outputs: int,
                 version: int = 1) -> tuple[IntegerCoolChic, dict[str, ModuleQuantization]]:
    """The Cool-Chic whose fields and streams ``encode_model`` wrote."""
    coolchic, quantization = decode_networks(header, payload, image_size, n_outputs, version)
    decode_latents(coolchic, quantization["arm"], header, payload)
    return coolchic, quantization


class FieldReader(Protocol):
    """Reads unsigned header fields: varints from bytes, or exp-Golomb codes from bits."""

    def varints(self, count: int) -> list[int]: ...


def read_architecture(header: FieldReader, n_outputs: int,
                      version: int) -> tuple[CoolChicArchitecture, list[int] | None]:
    """The fields :func:`architecture_fields` wrote, checked against the format's bounds: the
    architecture and the output range (low, high per output), if any."""
    n_grids, mask, dim_arm, n_hidden, ups_k, refine_k = header.varints(6)
    if not 1 <= n_grids <= _MAX_GRIDS:
        raise BitstreamError(f"{n_grids} latent grids is out of range")
    if n_hidden > _MAX_ARM_LAYERS or ups_k > _MAX_KERNEL or refine_k > _MAX_KERNEL or mask >> n_grids:
        raise BitstreamError("the architecture fields are out of range")
    (n_layers,) = header.varints(1)
    layers = [tuple(header.varints(3)) for _ in range(min(n_layers, _MAX_SYNTHESIS_LAYERS + 1))]
    if n_layers > _MAX_SYNTHESIS_LAYERS or any(out > _MAX_CHANNELS or kernel > _MAX_KERNEL or flags > 3
                                               for out, kernel, flags in layers):
        raise BitstreamError("the synthesis fields are out of range")
    v2_fields, output_range = _read_v2_fields(header, n_outputs) if version == 2 else ({}, None)
    architecture = CoolChicArchitecture(
        n_ft_per_res=tuple((mask >> i) & 1 for i in range(n_grids)), dim_arm=dim_arm, n_hidden_layers_arm=n_hidden,
        ups_k_size=ups_k, ups_preconcat_k_size=refine_k, layers_synthesis=_layer_string(layers), **v2_fields)
    if model_version(architecture) != version:
        raise BitstreamError(f"a version {version} Cool-Chic describes a version {model_version(architecture)} "
                             "architecture")
    return architecture, output_range


def check_synthesis_size(architecture: CoolChicArchitecture, n_outputs: int, weight_bits: int,
                         bias_bits: int) -> None:
    """Refuse, before anything is allocated, a synthesis the file cannot hold: every coded
    parameter takes at least one bit of the bits given, and its multiplications per pixel are
    within ``MAX_MACS_PER_PIXEL``. (The ARM and upsampling are small whatever the header
    says; the whole decoder's work is checked once it is built.)"""
    weights, biases = synthesis_parameter_counts(sum(architecture.n_ft_per_res), architecture.layers_synthesis,
                                                 n_outputs, architecture.synthesis_stabiliser)
    if weights > MAX_MACS_PER_PIXEL:
        raise BitstreamError(f"a synthesis of {weights} multiplications per pixel exceeds the format's "
                             f"{MAX_MACS_PER_PIXEL}")
    if weights > weight_bits or biases > bias_bits:
        raise BitstreamError(f"the synthesis has {weights} weights and {biases} biases but streams of only "
                             f"{weight_bits // 8} and {bias_bits // 8} bytes")


def empty_coolchic(architecture: CoolChicArchitecture, image_size: tuple[int, int], n_outputs: int,
                   output_range: list[int] | None) -> IntegerCoolChic:
    """A Cool-Chic of a checked architecture, its work within the format's bound and its
    output range set, whose networks and latents are still to be read."""
    architecture = architecture.for_image(image_size)
    work = mac_per_pixel(architecture, image_size, n_outputs)
    if work > MAX_MACS_PER_PIXEL:
        raise BitstreamError(f"a decoder of {work:.0f} multiplications per pixel exceeds the format's "
                             f"{MAX_MACS_PER_PIXEL}")
    coolchic = IntegerCoolChic(architecture, tuple(image_size), n_outputs, {}, np.zeros(0, dtype=np.int64),
                               None if output_range is None else np.array(output_range, dtype=np.int64).reshape(-1, 2))
    coolchic.latents = np.zeros(coolchic.layout.n_latents, dtype=np.int64)
    return coolchic


def network_values(integers: np.ndarray, shapes: list[tuple[int, ...]], step: float) -> list[np.ndarray]:
    """Decoded integers of one stream, times their q-step, cut into the parameters' shapes."""
    ends = np.cumsum([int(np.prod(shape)) for shape in shapes])
    return [part.reshape(shape) * step for part, shape in zip(np.split(integers, ends[:-1]), shapes)]


def decode_networks(header: ByteReader, payload: ByteReader, image_size: tuple[int, int], n_outputs: int,
                    version: int = 1) -> tuple[IntegerCoolChic, dict[str, ModuleQuantization]]:
    """A Cool-Chic with the networks ``encode_networks`` wrote (latents at 0)."""
    architecture, output_range = read_architecture(header, n_outputs, version)
    fields = _network_fields(architecture, n_outputs, header)
    coolchic = empty_coolchic(architecture, image_size, n_outputs, output_range)
    shapes = network_shapes(coolchic.architecture, coolchic.image_size, n_outputs)
    quantization: dict[str, ModuleQuantization] = {}
    for name, (w_index, b_index, w_order, b_order, w_length, b_length) in zip(NETWORK_NAMES, fields):
        weight_steps, bias_steps = Q_STEPS[name]
        weight_shapes = [(key, shape) for key, shape in shapes[name] if not key.endswith("bias")]
        bias_shapes = [(key, shape) for key, shape in shapes[name] if key.endswith("bias")]
        try:
            streams = [decode_signed(payload.bytes(length), sum(int(np.prod(shape)) for _, shape in group), order,
                                     what) for length, group, order, what in
                       ((w_length, weight_shapes, w_order, "the weight stream"),
                        (b_length, bias_shapes, b_order, "the bias stream"))]
        except BitstreamError as error:
            raise BitstreamError(f"{name} network: {error}") from None
        quantization[name] = ModuleQuantization(weight_steps[w_index], bias_steps[b_index], w_order, b_order,
                                                8 * (w_length + b_length))
        values = {}
        for group, integers, step in ((weight_shapes, streams[0], weight_steps[w_index]),
                                      (bias_shapes, streams[1], bias_steps[b_index])):
            values.update(zip([key for key, _ in group], network_values(integers, [s for _, s in group], step)))
        coolchic.networks[name] = {key: values[key] for key, _ in shapes[name]}
    return coolchic, quantization


def _network_fields(architecture: CoolChicArchitecture, n_outputs: int, header: ByteReader) -> list[list[int]]:
    """Read the per-network fields (arm, synthesis, upsampling) and check the synthesis
    against its stream lengths (:func:`check_synthesis_size`)."""
    fields = []
    for name in NETWORK_NAMES:
        w_index, b_index, w_order, b_order, w_length, b_length = values = header.varints(6)
        weight_steps, bias_steps = Q_STEPS[name]
        if w_index >= len(weight_steps) or b_index >= len(bias_steps):
            raise BitstreamError(f"{name} q-step index out of range")
        if w_order not in EXPGOLOMB_ORDERS or b_order not in EXPGOLOMB_ORDERS:
            raise BitstreamError(f"{name} exp-Golomb order out of range")
        fields.append(values)
    w_length, b_length = fields[NETWORK_NAMES.index("synthesis")][4:]
    check_synthesis_size(architecture, n_outputs, 8 * w_length, 8 * b_length)
    return fields


def check_pixel_count(n_pixels: int, file_bytes: int) -> None:
    """Refuse a file that claims more pixels than its size allows (``MAX_PIXELS_PER_BYTE``):
    the decoder's memory grows with the pixels, so a small file cannot ask for a lot of it."""
    allowed = FREE_PIXELS + MAX_PIXELS_PER_BYTE * file_bytes
    if n_pixels > allowed:
        raise BitstreamError(f"{n_pixels} pixels is more than a {file_bytes}-byte file may hold ({allowed})")


def decode_latents(coolchic: IntegerCoolChic, arm_quantization: ModuleQuantization, header: ByteReader,
                   payload: ByteReader) -> None:
    """Decode the latent grids ``encode_latents`` wrote into ``coolchic`` (whose networks are set)."""
    architecture = coolchic.architecture
    arm = IntegerArm.from_parameters(coolchic.networks["arm"], *arm_quantization.value_steps)
    for grid_index in grid_order(coolchic):
        coded_length, escape_length = header.varints(2)
        coded, escapes = payload.bytes(coded_length), payload.bytes(escape_length)
        if coolchic.layout.numels[grid_index] and coded_length:
            decode_latent_grid(coolchic, arm, grid_index, lambda height, width, ifce: decode_grid(
                coded, escapes, height, width, arm, architecture.dim_arm, architecture.context_order, ifce))
        elif coded_length or escape_length:
            raise BitstreamError("an empty latent grid carries data")


def decode_latent_grid(coolchic: IntegerCoolChic, arm: IntegerArm, grid: int,
                       decode: Callable[[int, int, GridIfce | None], np.ndarray]) -> None:
    """Grid ``grid`` of ``coolchic`` by ``decode(height, width, ifce)`` (a range decoder's
    grid), into its latents; a damaged stream's error names the grid."""
    layout = coolchic.layout
    start = sum(layout.numels[:grid])
    try:
        latents = decode(*layout.sizes[grid], grid_ifce(coolchic, arm, coolchic.latents, grid))
    except BitstreamError as error:
        raise BitstreamError(f"latent grid {grid}: {error}") from None
    coolchic.latents[start:start + layout.numels[grid]] = latents.reshape(-1)


def header_bits(data: bytes) -> int:
    """Bits spent outside the entropy-coded streams: magic, version, header, CRC."""
    reader = ByteReader(data, 5)
    (header_length,) = reader.varints(1)
    return 8 * (reader.position + header_length + 4)
