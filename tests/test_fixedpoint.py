"""Integer decoding after the latents: the same samples whatever runs the decoder."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from coolchic_pl.bitstream import decode_coolchic, encode_coolchic
from coolchic_pl.decode import decode_sequence
from coolchic_pl.fixedpoint import ArithmeticBoundError
from coolchic_pl.fixedpoint.arithmetic import EXACT_LIMIT, UNIT, check_layer_bound
from coolchic_pl.fixedpoint.image import _pointwise_run, check_bounds, synthesis_layers
from coolchic_pl.fixedpoint.modules import coolchic_module, decoded_planes, integer_frame
from coolchic_pl.fixedpoint.samples import check_frame_bounds
from coolchic_pl.fixedpoint.warp import TAP_BITS, tap_table, warp
from coolchic_pl.io import read_frame
from coolchic_pl.model.architecture import architecture_from_name
from coolchic_pl.model.interframe import InterCoolChic
from coolchic_pl.model.interparams import InterFrameParameters
from coolchic_pl.model.warp import shift
from coolchic_pl.model.warp import warp as float_warp
from coolchic_pl.training.loss import output_planes
from coolchic_pl.bitstream.codec import ByteReader, check_container
from coolchic_pl.video.bitstream import to_444
from coolchic_pl.video.decoder import (
    MAX_WARP_FILTER, VIDEO_FORMAT_VERSION, VIDEO_MAGIC, DecodedSequence, SequenceHeader, decode_frame,
)
from golden import GOLDEN, samples_sha256

HASHES = json.loads((GOLDEN / "golden.json").read_text())
IMAGES = [name for name in HASHES if not name.startswith("bqsquare")]
# SHA-256 of json.dumps([tap_table(n) for n in 2, 4, ..., 32]): the warp filters are part of the format.
TAP_TABLES_SHA256 = "8a7fe3c8e6ef794953a67946261b5aada866597d4464fe47143aba66234c86d2"


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("onednn", [True, False])
def test_golden_files_decode_to_their_samples_with_any_threads_and_backend(threads: int, onednn: bool) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.backends.mkldnn.flags(enabled=onednn):
            decoded = {name: samples_sha256(decode_sequence(GOLDEN / name)) for name in HASHES}
    finally:
        torch.set_num_threads(before)
    assert decoded == HASHES


VIDEOS = {name: 4 if name == "bqsquare_reuse.cool" else 3 for name in HASHES if name.startswith("bqsquare")}


@pytest.mark.parametrize("name, output_name, n_frames", [("hop5.cool", "192x128_yuv420_10b.yuv", 1)] + [
    (name, "224x128_yuv420_8b.yuv", n_frames) for name, n_frames in VIDEOS.items()])
def test_golden_files_decode_through_the_cli_on_one_and_two_threads(name: str, output_name: str, n_frames: int,
                                                                    tmp_path: Path) -> None:
    for threads in ("1", "2"):
        output = tmp_path / f"t{threads}_{output_name}"
        result = subprocess.run([sys.executable, "-m", "coolchic_pl.decode", str(GOLDEN / name), "-o", str(output)],
                                capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": threads})
        assert result.returncode == 0, result.stderr
        assert samples_sha256([read_frame(output, index) for index in range(n_frames)]) == HASHES[name]


@pytest.mark.parametrize("name, output_name", [("hop5.cool", "out_192x128_yuv420_10b.yuv"), ("lop.cool", "out.png"),
                                                ("bqsquare_motion_derived.cool", "out_224x128_yuv420_8b.yuv")])
def test_coolchic_decode_never_imports_torch(name: str, output_name: str, tmp_path: Path) -> None:
    """The decoder's start-up is a fraction of a second because it reads, decodes and writes
    without torch (whose import alone takes most of a second)."""
    output = tmp_path / output_name
    code = (f"import sys; from coolchic_pl.decode import main; code = main([{str(GOLDEN / name)!r}, '-o', "
            f"{str(output)!r}]); print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["0", "False"], result.stderr
    assert output.stat().st_size > 0


def test_the_golden_videos_hold_every_inter_frame_mode_and_network_coding() -> None:
    """Between them, the golden videos of format 4 code an inter frame as the prediction alone
    (translation, affine, derived motion), with a motion, a residue or both Cool-Chics, and
    networks of their own, as differences from an earlier frame's and as that frame's."""
    modes, models, codings = set(), set(), set()
    for name in VIDEOS:
        data = (GOLDEN / name).read_bytes()
        if data[4] < 4:
            continue
        state = DecodedSequence()
        reader = check_container(data, VIDEO_MAGIC, VIDEO_FORMAT_VERSION, "video")
        fields = ByteReader(reader.bytes(reader.varints(1)[0]))
        sequence = SequenceHeader(*fields.varints(2), "yuv420", *fields.varints(3)[1:])
        for _ in range(sequence.n_frames):
            frame, _ = decode_frame(reader.bytes(reader.varints(1)[0]), sequence, state)
            if frame.inter is not None:
                parts = state.coolchics[frame.display]
                modes.add("+".join(role for role in ("motion", "residue") if role in parts) or "prediction")
                models.add(frame.inter.motion_model.kind)
                codings |= {q.coding for part in parts.values() for q in part.network_quantization.values()}
    assert modes == {"prediction", "motion", "residue", "motion+residue"}
    assert models == {"translation", "affine", "derived"} and codings == {"own", "delta", "same"}


def test_a_layer_sums_to_the_same_value_in_any_order() -> None:
    """The synthesis layer of a golden decoder, its inputs and weights permuted: a float32
    sum moves in its last bits (checked, on inputs on the 2^-16 grid that upsampled latents
    are on), the integer one does not move at all."""
    layer = synthesis_layers(decode_coolchic((GOLDEN / "hop.cool").read_bytes()).coolchic)[0][0]
    generator = torch.Generator().manual_seed(0)
    latents = torch.round(torch.randn(layer.weight.shape[1], 32 * 48, dtype=torch.float64, generator=generator)
                          * 8 * UNIT)
    permutation = torch.randperm(latents.shape[0], generator=generator)
    weight = torch.from_numpy(layer.weight).reshape(layer.weight.shape[0], -1).float()
    assert not torch.equal(weight @ latents.float(), weight[:, permutation] @ latents[permutation].float())
    permuted = layer._replace(weight=layer.weight[:, permutation.numpy()])
    assert (_pointwise_run([layer], latents.numpy()) == _pointwise_run([permuted], latents[permutation].numpy())).all()


@pytest.mark.parametrize("name", IMAGES)
def test_integer_decoding_costs_no_quality(name: str) -> None:
    """Against the float32 decoder of the same file: under 1 % of the samples move, by one level."""
    decoded = decode_coolchic((GOLDEN / name).read_bytes())
    model = coolchic_module(decoded.coolchic, decoded.bitdepth)
    integer = decoded_planes(model, decoded.color_space, decoded.bitdepth)
    with torch.no_grad():
        floating = output_planes(model().image, decoded.color_space, decoded.bitdepth, rounded=True)
    changed = sum(int((a != b).sum()) for a, b in zip(integer, floating)) / sum(p.numel() for p in integer)
    assert changed < 0.01
    assert max(float((a - b).abs().max()) for a, b in zip(integer, floating)) <= 1 / (2**decoded.bitdepth - 1) + 1e-7


def test_the_largest_sums_of_every_golden_decoder_stay_far_below_two_to_the_53() -> None:
    """The per-layer bound the decoder checks, on real decoders: the margin it leaves."""
    for name in IMAGES:
        layers, _ = synthesis_layers(decode_coolchic((GOLDEN / name).read_bytes()).coolchic)
        largest = max(check_layer_bound(layer.weight, layer.bias, "layer") for layer in layers)
        assert largest < EXACT_LIMIT / 2**8, name


def test_a_file_whose_weights_could_leave_the_exact_range_is_refused(tmp_path: Path) -> None:
    decoded = decode_coolchic((GOLDEN / "lop.cool").read_bytes())
    coolchic, quantization = decoded.coolchic, dict(decoded.quantization)
    quantization["synthesis"] = replace(quantization["synthesis"], weight_step=1.0)
    coolchic.networks["synthesis"]["layers.0.weight"][:] = 60000.0
    with pytest.raises(ArithmeticBoundError, match="synthesis layer 1"):
        check_bounds(coolchic)
    path = tmp_path / "huge.cool"
    path.write_bytes(encode_coolchic(coolchic, quantization, decoded.color_space, decoded.bitdepth))
    result = subprocess.run([sys.executable, "-m", "coolchic_pl.decode", str(path), "-o", str(tmp_path / "x.png")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and not (tmp_path / "x.png").exists()
    assert result.stderr.count("\n") == 1 and "exact range of the integer decoder" in result.stderr


def test_a_file_of_format_version_2_still_decodes_in_float32(tmp_path: Path) -> None:
    """A version 4 file relabelled 2 (same layout): decoded as before integer decoding,
    within one level of the integer samples."""
    data = bytearray((GOLDEN / "hop5.cool").read_bytes())
    assert data[4] == 4
    data[4] = 2
    data[-4:] = struct.pack(">I", zlib.crc32(bytes(data[:-4])))
    assert not decode_coolchic(bytes(data)).integer
    (tmp_path / "legacy.cool").write_bytes(bytes(data))
    legacy = decode_sequence(tmp_path / "legacy.cool")[0]
    current = decode_sequence(GOLDEN / "hop5.cool")[0]
    assert max(float((a - b).abs().max()) for a, b in zip(legacy.planes, current.planes)) <= 1 / 1023 + 1e-7


def test_warp_tap_tables_are_fixed_and_keep_the_warp_exact() -> None:
    tables = [tap_table(n) for n in range(2, MAX_WARP_FILTER + 1, 2)]
    assert hashlib.sha256(json.dumps(tables).encode()).hexdigest() == TAP_TABLES_SHA256
    for table in tables:
        assert table[0][len(table[0]) // 2 - 1] == 2**TAP_BITS and sum(map(abs, table[0])) == 2**TAP_BITS
        # vertical pass: taps x (taps x 16-bit samples), in 2^-32 units, below 2^53
        gain = max(sum(map(abs, row)) for row in table) / 2**TAP_BITS
        assert gain**2 * 65535 * 2.0**(2 * TAP_BITS) < EXACT_LIMIT


@pytest.mark.parametrize("filter_size", [2, 4, 8])
def test_integer_warp_copies_on_whole_pixels_and_follows_the_float_warp(bqsquare_frame: torch.Tensor,
                                                                         filter_size: int) -> None:
    samples = torch.round(bqsquare_frame.double() * 255)[0]
    height, width = samples.shape[-2:]
    whole = torch.zeros(2, height, width, dtype=torch.long)
    whole[0], whole[1] = 3 * 64, -2 * 64
    shifted = shift(samples.unsqueeze(0), 3, -2)[0] * UNIT
    prediction, flows = warp(samples.numpy(), whole.numpy(), filter_size)
    assert (prediction == shifted.numpy()).all() and (flows == whole.numpy()).all()
    flow = torch.stack([torch.full((height, width), 1.25 * 64), torch.linspace(-80, 80, width).expand(height, width)])
    flow = flow.double().round()
    integer = torch.from_numpy(warp(samples.numpy(), flow.long().numpy(), filter_size)[0]) / UNIT
    floating = float_warp(samples.unsqueeze(0), flow.unsqueeze(0) / 64, filter_size)[0]
    assert float((integer - floating).abs().max()) < 0.05


@pytest.fixture(scope="module")
def bqsquare_frame(data_dir: Path) -> torch.Tensor:
    return to_444(read_frame(data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv", 0))


def test_bounds_of_an_inter_frame_are_checked_for_both_cool_chics() -> None:
    reference = torch.zeros(1, 3, 16, 16)
    inter = InterCoolChic((16, 16), [reference], InterFrameParameters(((0, 0),), 4), architecture_from_name("vlop"),
                          architecture_from_name("vlop"))
    with torch.no_grad():  # on the q-step grid, as a decoded file's parameters are
        for parameter in [*inter.residue.parameters(), *inter.motion.parameters()]:
            parameter.copy_(torch.round(parameter * 2**12) / 2**12)
    check_frame_bounds(integer_frame(inter, 8))
    with torch.no_grad():
        inter.motion.synthesis.layers[0].weight.fill_(1e6)
    with pytest.raises(ArithmeticBoundError):
        check_frame_bounds(integer_frame(inter, 8))
