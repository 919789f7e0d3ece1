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

import constriction
import torch
from torch import Tensor

from coolchic_pl.bitstream.armint import IntegerArm
from coolchic_pl.bitstream.codec import (
    architecture_fields, ifce_features, integer_grids, model_version, output_range_fields, varints_bytes, with_crc,
)
from coolchic_pl.bitstream.expgolomb import BitWriter
from coolchic_pl.bitstream.latents import encode_grid_into
from coolchic_pl.fixedpoint.coolchic import IntegerCoolChic
from coolchic_pl.io import COLOR_SPACES, FrameData
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.model.interframe import InterCoolChic
from coolchic_pl.model.interparams import MOTION_MODEL_KINDS, InterFrameParameters
from coolchic_pl.model.layout import NETWORK_NAMES
from coolchic_pl.nnquant import Q_STEPS, ModuleQuantization
from coolchic_pl.nnquant.quantize import quantized_integers, split_weights_and_biases
from coolchic_pl.nnquant.steps import NETWORK_CODINGS
from coolchic_pl.video.decoder import VIDEO_FORMAT_VERSION, VIDEO_MAGIC, FrameHeader, SequenceHeader, non_empty_grids


def to_444(frame: FrameData) -> Tensor:
    """[1, 3, H, W] samples of a decoded frame, chroma repeated 2x2 for 4:2:0: how a
    decoded frame serves as a reference."""
    if frame.color_space != "yuv420":
        return frame.planes[0]
    luma, *chroma = frame.planes
    height, width = luma.shape[-2:]
    full = [c.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :height, :width] for c in chroma]
    return torch.cat([luma, *full], dim=1)


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
    integer = {role: IntegerCoolChic.from_module(coolchic, bitdepth) for role, coolchic in coolchics.items()}
    for role, coolchic in coolchics.items():
        prefix = "" if frame.inter is None else f"{role}."
        own = {k[len(prefix):]: q for k, q in quantization.items() if k.startswith(prefix)}
        parts[role] = {**coolchic.frozen_quantization(), **own}
        start = len(bits)
        _write_coolchic_fields(bits, coolchic, integer[role], parts[role])
        sizes[role] = len(bits) - start
    for role, coolchic in coolchics.items():
        start = len(bits)
        _write_network_parameters(bits, coolchic, parts[role])
        sizes[role] += len(bits) - start
    encoder, escapes = constriction.stream.queue.RangeEncoder(), BitWriter()
    for role, coolchic in integer.items():
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


def _write_coolchic_fields(bits: BitWriter, model: CoolChic, coolchic: IntegerCoolChic,
                           quantization: dict[str, ModuleQuantization]) -> None:
    source = model.network_source
    bits.write_unsigned(0 if source is None else source.frame + 1)
    as_source = source is not None and _same_architecture(model, source.coolchic)
    if source is not None:
        bits.write_unsigned(int(as_source))
    if as_source:
        bits.write_unsigned(*output_range_fields(coolchic))
    else:
        bits.write_unsigned(model_version(model.architecture), *architecture_fields(coolchic))
    for name in NETWORK_NAMES:
        q = quantization[name]
        if source is not None and source.predicts(name, getattr(model, name)):
            bits.write_unsigned(NETWORK_CODINGS.index(q.coding))
        if q.coding != "same":
            weight_steps, bias_steps = Q_STEPS[name]
            bits.write_unsigned(weight_steps.index(q.weight_step), bias_steps.index(q.bias_step), q.weight_order,
                                q.bias_order)
    grids = integer_grids(coolchic)
    bits.write_unsigned(*(int(bool(grids[i].any())) for i in non_empty_grids(coolchic)))


def _same_architecture(model: CoolChic, source: CoolChic) -> bool:
    return model.architecture == source.architecture and model.n_outputs == source.n_outputs


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


def _encode_latents(coolchic: IntegerCoolChic, arm_quantization: ModuleQuantization,
                    encoder: constriction.stream.queue.RangeEncoder, escapes: BitWriter) -> None:
    arm = IntegerArm.from_parameters(coolchic.networks["arm"], *arm_quantization.value_steps)
    grids = integer_grids(coolchic)
    architecture = coolchic.architecture
    for grid_index in non_empty_grids(coolchic):
        grid = grids[grid_index]
        if grid.any():
            encode_grid_into(encoder, escapes, grid, arm, architecture.dim_arm, architecture.context_order,
                             ifce_features(coolchic, arm, coolchic.latents, grid_index))


def encode_video(header: SequenceHeader, records: list[bytes]) -> bytes:
    """The sequence file from its frame records in coding order."""
    fields = varints_bytes(header.height, header.width, COLOR_SPACES.index(header.color_space), header.bitdepth,
                           header.n_frames)
    body = bytearray(VIDEO_MAGIC + bytes([VIDEO_FORMAT_VERSION]) + varints_bytes(len(fields)) + fields)
    for record in records:
        body += varints_bytes(len(record)) + record
    return with_crc(bytes(body))
