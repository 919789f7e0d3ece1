"""The inter-frame decoder and the video bitstream on small crops of BQSquare."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from coolchic_pl.bitstream import BitstreamError
from coolchic_pl.fixedpoint.modules import coolchic_module, decoded_planes, reference_tensor
from coolchic_pl.io import FrameData, read_frame
from coolchic_pl.metrics import yuv_psnrs
from coolchic_pl.model.architecture import ARCHITECTURES, MOTION_ARCHITECTURES
from coolchic_pl.model.coolchic import NetworkSource
from coolchic_pl.model.interframe import InterCoolChic
from coolchic_pl.model.interparams import InterFrameParameters, MotionModel
from coolchic_pl.model.warp import shift, warp
from coolchic_pl.config import make_preset
from coolchic_pl.nnquant.quantize import TYPICAL_STEPS, difference_bits, network_rate_bits, quantize_networks
from coolchic_pl.training.module import CoolChicModule
from coolchic_pl.video.bitstream import encode_frame, encode_video, to_444
from coolchic_pl.video.decoder import (
    DecodedSequence, FrameHeader, SequenceHeader, base_flows, decode_frame, decode_video,
)

SIZE = (32, 48)


@pytest.fixture(scope="module")
def frames(data_dir: Path) -> list[FrameData]:
    """Frames 0 and 1 of BQSquare, cropped to 48x32 (4:2:0)."""
    path = data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"
    crops = []
    for index in range(2):
        y, u, v = read_frame(path, index).planes
        crops.append(FrameData((y[..., 40:72, 80:128].clone(), u[..., 20:36, 40:64].clone(),
                                v[..., 20:36, 40:64].clone()), 8, "yuv420"))
    return crops


def _decoder(frames: list[FrameData], n_refs: int, translations=((2, -1), (0, 3))) -> InterCoolChic:
    references = [to_444(frames[0]), to_444(frames[1])][:n_refs]
    torch.manual_seed(3)
    return InterCoolChic(SIZE, references, InterFrameParameters(tuple(translations[:n_refs]), 8),
                         ARCHITECTURES["lop"], MOTION_ARCHITECTURES["lop"])


def test_to_444_repeats_chroma(frames: list[FrameData]) -> None:
    full = to_444(frames[0])
    assert full.shape == (1, 3, 32, 48)
    assert torch.equal(full[:, 1:2, ::2, ::2], frames[0].planes[1])
    assert torch.equal(full[:, 1:2, 1::2, 1::2], frames[0].planes[1])


def test_prediction_of_p_and_b_frames(frames: list[FrameData]) -> None:
    p_frame = _decoder(frames, 1).eval()
    flow = torch.zeros(1, 2, *SIZE)
    assert torch.equal(p_frame.prediction(flow), shift(to_444(frames[0]), 2, -1))
    b_frame = _decoder(frames, 2).eval()
    flows = torch.zeros(1, 5, *SIZE)
    flows[:, 0] = 1.25  # beta raw 0 -> 0.5: the mean of the two warped references
    expected = 0.5 * warp(shift(to_444(frames[0]), 2, -1), flows[:, :2]) + 0.5 * shift(to_444(frames[1]), 0, 3)
    assert torch.allclose(b_frame.prediction(flows), expected, atol=1e-6)
    flows[:, 4] = 10.0  # beta clamped to 1: the past reference only
    assert torch.allclose(b_frame.prediction(flows), warp(shift(to_444(frames[0]), 2, -1), flows[:, :2]), atol=1e-6)


def test_flows_are_rounded_to_a_64th_pel_in_evaluation_only(frames: list[FrameData]) -> None:
    decoder = _decoder(frames, 1)
    flow = torch.full((1, 2, *SIZE), 0.3)
    rounded = warp(decoder.reference_0, torch.full_like(flow, round(0.3 * 64) / 64))
    assert torch.equal(decoder.eval().prediction(flow), rounded)
    assert not torch.equal(decoder.train().prediction(flow), rounded)


def test_module_selection_by_coolchic(frames: list[FrameData]) -> None:
    decoder = _decoder(frames, 2)

    def ids(*names: str) -> set[int]:
        return {id(p) for p in decoder.module_parameters(names)}

    motion_latents = {id(p) for p in decoder.motion.latent.parameters()}
    residue_latents = {id(p) for p in decoder.residue.latent.parameters()}
    assert ids("motion.latent") == motion_latents
    assert ids("all.latent") == ids("latent") == motion_latents | residue_latents
    assert ids("residue.all") == {id(p) for p in decoder.residue.parameters()}
    assert ids("all") == {id(p) for p in decoder.parameters()}
    assert ids("all.arm") == {id(p) for p in [*decoder.residue.arm.parameters(), *decoder.motion.arm.parameters()]}
    with pytest.raises(ValueError, match="unknown module 'flow.arm'"):
        decoder.module_parameters(["flow.arm"])
    assert list(decoder.quantizable_modules()) == [
        "residue.arm", "residue.synthesis", "residue.upsampling", "motion.arm", "motion.synthesis",
        "motion.upsampling"]


def test_outputs_and_rates(frames: list[FrameData]) -> None:
    decoder = _decoder(frames, 2)
    out = decoder()
    assert out.image.shape == (1, 3, *SIZE)
    assert out.rate_bits.numel() == decoder.residue.latent.n_latents + decoder.motion.latent.n_latents
    parts = decoder.latent_bits(out.rate_bits)
    assert torch.allclose(parts["residue"] + parts["motion"], out.rate_bits.sum())
    assert decoder.motion(  # two empty finest grids: the flows are constant on 4x4 blocks
    ).image[0, 0].unfold(0, 4, 4).unfold(1, 4, 4).flatten(-2).std(-1).max() == 0


def _randomised(decoder: InterCoolChic) -> InterCoolChic:
    with torch.no_grad():
        for coolchic in decoder.coolchics.values():
            for grid in coolchic.latent.grids:
                grid.normal_(0, 0.3)
    return decoder.eval()


def _quantize(decoder: InterCoolChic, frames: list[FrameData], lmbda: float = 1e-3,
              target: torch.Tensor | None = None) -> dict:
    target = to_444(frames[1]) if target is None else target

    def loss(bits: float) -> float:
        with torch.no_grad():
            image = decoder().image
        return torch.mean((image - target) ** 2).item() + lmbda * bits / 1536

    return quantize_networks(decoder, loss, max_passes=1)


def _coded(frames: list[FrameData], n_refs: int,
           lmbda: float = 1e-3) -> tuple[InterCoolChic, bytes, SequenceHeader, DecodedSequence]:
    decoder = _randomised(_decoder(frames, n_refs))
    header = FrameHeader(2, tuple(range(n_refs)), decoder.frame_parameters)
    record, sizes = encode_frame(header, decoder, _quantize(decoder, frames, lmbda))
    assert set(sizes) == {"frame", "residue", "motion"} and sum(sizes.values()) == 8 * len(record)
    sequence = SequenceHeader(*SIZE, "yuv420", 8, 4)
    return decoder, record, sequence, DecodedSequence(frames={0: frames[0].to_samples(), 1: frames[1].to_samples()})


@pytest.mark.parametrize("n_refs", [1, 2])
def test_frame_record_round_trip(frames: list[FrameData], n_refs: int) -> None:
    decoder, record, sequence, state = _coded(frames, n_refs)
    frame, planes = decode_frame(record, sequence, state)
    assert frame.display == 2 and frame.refs == tuple(range(n_refs))
    assert frame.inter == decoder.frame_parameters
    expected = decoded_planes(decoder, "yuv420", 8)
    assert all(torch.equal(a, b) for a, b in zip(planes.to_frame_data().planes, expected))
    assert state.frames[2] is planes and set(state.coolchics[2]) == {"residue", "motion"}
    assert state.motion[2].refs == frame.refs and state.motion[2].flows.shape == (n_refs, 2, *SIZE)


def test_video_file_round_trip_and_damage(frames: list[FrameData]) -> None:
    """An I frame coded as the first record, then the B frame referencing it and frame 1,
    which the file does not hold: the decoder refuses the order; truncations are refused."""
    decoder, record, sequence, _ = _coded(frames, 1)
    with pytest.raises(BitstreamError, match="before its references"):
        decode_video(encode_video(sequence, [record]))
    data = encode_video(SequenceHeader(*SIZE, "yuv420", 8, 3), [record])
    for cut in (5, len(data) // 2, len(data) - 1):
        with pytest.raises(BitstreamError):
            decode_video(data[:cut])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(BitstreamError, match="integrity"):
        decode_video(bytes(flipped))


@pytest.mark.parametrize("roles", [("residue",), ("motion",), ()])
def test_a_frame_without_a_residue_or_motion_cool_chic(frames: list[FrameData], roles: tuple[str, ...]) -> None:
    """A B frame that codes only some of its Cool-Chics (none: the prediction alone) decodes
    to what its encoder-side decoder gives; without a residue, that is its prediction."""
    references = [to_444(frames[0]), to_444(frames[1])]
    torch.manual_seed(5)
    decoder = _randomised(InterCoolChic(
        SIZE, references, InterFrameParameters(((2, -1), (0, 3)), 4),
        ARCHITECTURES["vlop"] if "residue" in roles else None,
        MOTION_ARCHITECTURES["vlop"] if "motion" in roles else None))
    assert tuple(decoder.coolchics) == roles
    quantization = _quantize(decoder, frames)
    record, sizes = encode_frame(FrameHeader(2, (0, 1), decoder.frame_parameters), decoder, quantization)
    assert set(sizes) == {"frame", *roles}
    state = DecodedSequence(frames={0: frames[0].to_samples(), 1: frames[1].to_samples()})
    _, planes = decode_frame(record, SequenceHeader(*SIZE, "yuv420", 8, 4), state)
    expected = decoded_planes(decoder, "yuv420", 8)
    assert all(torch.equal(a, b) for a, b in zip(planes.to_frame_data().planes, expected))
    if not roles:
        assert len(record) <= 10  # display, references, length and a few bits of fields
        prediction = (shift(references[0], 2, -1) + shift(references[1], 0, 3)) / 2
        luma = planes.to_frame_data().planes[0]
        assert torch.allclose(luma, prediction[:, :1], atol=0.5 / 255 + 1e-6)  # rounded


def test_networks_predicted_from_an_earlier_frame(frames: list[FrameData]) -> None:
    """Frame 2 codes its networks; frame 3 predicts its own from them: reused as they are
    (frozen), its record is shorter by their bits; trained a little from them, the search
    codes each as differences or as the same network, for fewer bits than its own coding,
    and the file decodes exactly. A record predicting from a frame not decoded is damaged."""
    first, record, sequence, state = _coded(frames, 2, lmbda=1e-7)  # fine steps: networks worth predicting
    decode_frame(record, sequence, state)
    own_bits = {r: network_rate_bits({k: q for k, q in state.coolchics[2][r].network_quantization.items()})
                for r in ("residue", "motion")}

    def predicted(frozen: bool) -> InterCoolChic:
        second = _randomised(_decoder(frames, 2))
        for role, coolchic in second.coolchics.items():
            part = state.coolchics[2][role]
            source = NetworkSource(2, coolchic_module(part.coolchic, 8), part.network_quantization)
            coolchic.predict_networks(source, frozen=frozen)
        return second

    reused = predicted(frozen=True)
    assert reused.quantizable_modules() == {}
    assert not any(p.requires_grad for name, p in reused.named_parameters() if ".latent." not in name)
    reused_record, sizes = encode_frame(FrameHeader(3, (0, 1), reused.frame_parameters), reused, {})
    own_sizes = encode_frame(FrameHeader(2, (0, 1), first.frame_parameters), first,
                             {f"{r}.{k}": q for r in ("residue", "motion")
                              for k, q in state.coolchics[2][r].network_quantization.items()})[1]
    assert all(sizes[r] < own_sizes[r] - own_bits[r] + 64 for r in own_bits)

    trained = predicted(frozen=False)
    with torch.no_grad():  # one residue synthesis weight in ten moved by a step of its source's grid
        step = state.coolchics[2]["residue"].network_quantization["synthesis"].weight_step
        generator = torch.Generator().manual_seed(1)
        for layer in trained.residue.synthesis.layers:
            layer.weight.add_(step * (torch.rand(layer.weight.shape, generator=generator) < 0.1))
    with torch.no_grad():  # what the changed networks make is the target: coding the change exactly is best
        target = trained().image
    quantization = _quantize(trained, frames, lmbda=1e-9, target=target)
    codings = {name: q.coding for name, q in quantization.items()}
    assert set(codings.values()) <= {"delta", "same"} and "delta" in codings.values()
    assert network_rate_bits(quantization) < sum(own_bits.values())
    trained_record, _ = encode_frame(FrameHeader(3, (0, 1), trained.frame_parameters), trained, quantization)
    for second, coded in ((reused, reused_record), (trained, trained_record)):
        copy = DecodedSequence(dict(state.frames), dict(state.coolchics), dict(state.motion))
        _, planes = decode_frame(coded, SequenceHeader(*SIZE, "yuv420", 8, 4), copy)
        expected = decoded_planes(second, "yuv420", 8)
        assert all(torch.equal(a, b) for a, b in zip(planes.to_frame_data().planes, expected))
        assert {q.coding for q in copy.coolchics[3]["residue"].network_quantization.values()} <= {"delta", "same"}
    with pytest.raises(BitstreamError, match="predicted from frame 2"):
        decode_frame(reused_record, SequenceHeader(*SIZE, "yuv420", 8, 4),
                     DecodedSequence(frames={0: frames[0].to_samples(), 1: frames[1].to_samples()}))


def test_affine_and_derived_motion_models_decode_exactly(frames: list[FrameData]) -> None:
    """A P frame whose motion model is affine, then a B frame whose motion is derived from
    the P frame's decoded motion: both decode to their encoder-side reconstruction."""
    state = DecodedSequence(frames={0: frames[0].to_samples(), 1: frames[1].to_samples()})
    sequence = SequenceHeader(*SIZE, "yuv420", 8, 4)
    affine = MotionModel("affine", affine=((32, 650, -120, -16, 80, 1300),))
    p_parameters = InterFrameParameters(((1, 0),), 4, affine)
    p_frame = _randomised(InterCoolChic(SIZE, [to_444(frames[0])], p_parameters, None, MOTION_ARCHITECTURES["vlop"],
                                        base_flows(p_parameters, 3, (0,), SIZE, state.motion)))
    record, _ = encode_frame(FrameHeader(3, (0,), p_parameters), p_frame, _quantize(p_frame, frames))
    _, planes = decode_frame(record, sequence, state)
    assert all(torch.equal(a, b) for a, b in zip(planes.to_frame_data().planes, decoded_planes(p_frame, "yuv420", 8)))
    derived = MotionModel("derived", source=(3, 0))
    b_parameters = InterFrameParameters(((0, 0), (1, 1)), 4, derived)
    base = base_flows(b_parameters, 2, (0, 3), SIZE, state.motion)
    assert base.shape == (2, 2, *SIZE) and base.any()
    references = [to_444(frames[0]), reference_tensor(state.frames[3])]
    b_frame = InterCoolChic(SIZE, references, b_parameters, None, None, base).eval()
    record, _ = encode_frame(FrameHeader(2, (0, 3), b_parameters), b_frame, {})
    _, planes = decode_frame(record, sequence, state)
    assert all(torch.equal(a, b) for a, b in zip(planes.to_frame_data().planes, decoded_planes(b_frame, "yuv420", 8)))
    with pytest.raises(BitstreamError, match="derived from frame 3"):
        decode_frame(record, sequence, DecodedSequence(frames={0: frames[0].to_samples(), 3: state.frames[3]}))


def test_a_file_of_video_format_1_still_decodes(data_dir: Path) -> None:
    """Written by the encoder of video format 1 (three debug frames I0 B1 P2 of BQSquare):
    it decodes to the PSNRs its encoder reported."""
    sequence, decoded = decode_video((Path(__file__).parent / "data" / "bqsquare_3frames_video_v1.cool").read_bytes())
    assert (sequence.n_frames, sequence.height, sequence.width) == (3, 128, 224)
    source = data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"
    psnrs = [yuv_psnrs(frame.to_frame_data().planes, read_frame(source, index).planes)["psnr_yuv"]
             for index, frame in enumerate(decoded)]
    assert psnrs == pytest.approx([30.8150, 28.8381, 28.4004], abs=2e-3)


def test_training_counts_the_differences_of_warm_started_networks(frames: list[FrameData]) -> None:
    """A Cool-Chic started from an earlier frame's networks pays, in its training loss, about
    the exp-Golomb bits of its networks' differences from them: nothing while they are equal,
    more as they move apart; one started from random networks does not."""
    first, record, sequence, state = _coded(frames, 2, lmbda=1e-7)
    decode_frame(record, sequence, state)
    target = FrameData(frames[1].planes, 8, "yuv420")

    def module(warm: bool) -> CoolChicModule:
        decoder = _randomised(_decoder(frames, 2)).train()
        for role, coolchic in decoder.coolchics.items():
            part = state.coolchics[2][role]
            source = NetworkSource(2, coolchic_module(part.coolchic, 8), part.network_quantization)
            coolchic.predict_networks(source, warm=warm)
        trained = CoolChicModule(target, decoder, lmbda=1e-2)
        trained.phase = make_preset("debug", 50).all_phases[0]
        trained.configure_optimizers()
        return trained

    warm, cold = module(warm=True), module(warm=False)
    assert warm._difference_terms and not cold._difference_terms
    assert float(difference_bits(warm._difference_terms).detach()) == 0.0
    with torch.no_grad():
        warm.coolchic.residue.synthesis.layers[0].weight.add_(0.05)
    moved = float(difference_bits(warm._difference_terms).detach())
    n_weights = warm.coolchic.residue.synthesis.layers[0].weight.numel()
    assert moved == pytest.approx(n_weights * 2 * math.log2(1 + 0.05 / TYPICAL_STEPS["synthesis"][0]), rel=1e-4)
