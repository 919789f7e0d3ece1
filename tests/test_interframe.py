"""The inter-frame decoder and the video bitstream on small crops of BQSquare."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from coolchic_pl.bitstream import BitstreamError
from coolchic_pl.fixedpoint import decoded_planes
from coolchic_pl.io import FrameData, read_frame
from coolchic_pl.metrics import yuv_psnrs
from coolchic_pl.model.architecture import ARCHITECTURES, MOTION_ARCHITECTURES
from coolchic_pl.model.coolchic import SharedNetworks
from coolchic_pl.model.interframe import InterCoolChic, InterFrameParameters
from coolchic_pl.model.warp import shift, warp
from coolchic_pl.nnquant import quantize_networks
from coolchic_pl.video.bitstream import (
    FrameHeader, SequenceHeader, decode_frame, decode_video, encode_frame, encode_video, to_444,
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


def _coded(frames: list[FrameData], n_refs: int) -> tuple[InterCoolChic, bytes, SequenceHeader, dict]:
    decoder = _decoder(frames, n_refs)
    with torch.no_grad():
        for coolchic in decoder.coolchics.values():
            for grid in coolchic.latent.grids:
                grid.normal_(0, 0.3)
    decoder.eval()

    def loss(bits: float) -> float:
        with torch.no_grad():
            image = decoder().image
        return torch.mean((image - to_444(frames[1])) ** 2).item() + 1e-3 * bits / 1536

    quantization = quantize_networks(decoder, loss, max_passes=1)
    header = FrameHeader(2, tuple(range(n_refs)), decoder.frame_parameters)
    record, sizes = encode_frame(header, decoder, quantization)
    assert set(sizes) == {"residue", "motion"} and sum(sizes.values()) < len(record)
    sequence = SequenceHeader(*SIZE, "yuv420", 8, 3)
    return decoder, record, sequence, {0: frames[0], 1: frames[1]}


@pytest.mark.parametrize("n_refs", [1, 2])
def test_frame_record_round_trip(frames: list[FrameData], n_refs: int) -> None:
    decoder, record, sequence, decoded = _coded(frames, n_refs)
    frame, planes = decode_frame(record, sequence, decoded, {})
    assert frame.display == 2 and frame.refs == tuple(range(n_refs))
    assert frame.inter == decoder.frame_parameters
    expected = decoded_planes(decoder, "yuv420", 8)
    assert all(torch.equal(a, b) for a, b in zip(planes.planes, expected))


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


def test_a_cool_chic_sharing_an_earlier_frames_networks_sends_only_latents(frames: list[FrameData]) -> None:
    """Frame 2 codes its networks; frame 3 shares them (mode 1): its record is shorter by
    their bytes, it decodes to what its encoder-side decoder gives, and a record naming a
    frame that was not decoded is a damaged file."""
    first, record, sequence, decoded = _coded(frames, 2)
    store: dict = {}
    decode_frame(record, sequence, decoded, store)
    second = _decoder(frames, 2)
    with torch.no_grad():
        for coolchic in second.coolchics.values():
            for grid in coolchic.latent.grids:
                grid.normal_(0, 0.3)
    for role, coolchic in second.coolchics.items():
        coolchic.share_networks(store[2][role].model, SharedNetworks(2, store[2][role].network_quantization))
    assert second.quantizable_modules() == {}
    assert not any(p.requires_grad for name, p in second.named_parameters() if ".latent." not in name)
    second.eval()
    shared_record, sizes = encode_frame(FrameHeader(3, (0, 1), second.frame_parameters), second, {})
    own_sizes = encode_frame(FrameHeader(2, (0, 1), first.frame_parameters), first,
                             {f"{r}.{k}": q for r in ("residue", "motion")
                              for k, q in store[2][r].network_quantization.items()})[1]
    network_bytes = {r: sum(q.rate_bits for q in store[2][r].network_quantization.values()) // 8 for r in sizes}
    assert all(sizes[r] < own_sizes[r] - network_bytes[r] + 8 for r in sizes)
    _, planes = decode_frame(shared_record, SequenceHeader(*SIZE, "yuv420", 8, 4), decoded, store)
    expected = decoded_planes(second, "yuv420", 8)
    assert all(torch.equal(a, b) for a, b in zip(planes.planes, expected))
    assert store[3]["residue"].model.shared_networks is not None
    with pytest.raises(BitstreamError, match="shares the networks of frame 2"):
        decode_frame(shared_record, SequenceHeader(*SIZE, "yuv420", 8, 4), decoded, {})


def test_a_file_of_video_format_1_still_decodes(data_dir: Path) -> None:
    """Written by the encoder of video format 1 (three debug frames I0 B1 P2 of BQSquare):
    it decodes to the PSNRs its encoder reported."""
    sequence, decoded = decode_video((Path(__file__).parent / "data" / "bqsquare_3frames_video_v1.cool").read_bytes())
    assert (sequence.n_frames, sequence.height, sequence.width) == (3, 128, 224)
    source = data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"
    psnrs = [yuv_psnrs(frame.planes, read_frame(source, index).planes)["psnr_yuv"]
             for index, frame in enumerate(decoded)]
    assert psnrs == pytest.approx([30.8150, 28.8381, 28.4004], abs=2e-3)
