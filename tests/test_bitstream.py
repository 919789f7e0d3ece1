"""The .cool bitstream: coders, integer ARM determinism, round trips and damage."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coolchic_pl import decode, fit
from coolchic_pl.bitstream import FORMAT_VERSION, BitstreamError, decode_coolchic
from coolchic_pl.bitstream.armint import IntegerArm
from coolchic_pl.bitstream.codec import header_bits
from coolchic_pl.bitstream.expgolomb import decode_signed, encode_signed
from coolchic_pl.bitstream.laplace_table import generate_table, load_table
from coolchic_pl.bitstream.latents import decode_grid, encode_grid, grid_plan, wavefront_slope
from coolchic_pl.io import read_frame
from coolchic_pl.model.architecture import V5_ARCHITECTURES
from coolchic_pl.model.arm import Arm, context_index
from coolchic_pl.model.contexts import context_offsets
from coolchic_pl.nnquant import EXPGOLOMB_ORDERS
from coolchic_pl.nnquant.expgolomb import best_expgolomb_order, expgolomb_bits

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("order", range(13))
def test_expgolomb_round_trips_at_every_order(order: int) -> None:
    rng = np.random.default_rng(order)
    values = np.concatenate([rng.integers(-70000, 70000, 300), rng.integers(-3, 4, 200), [0, 65535, -65535]])
    data = encode_signed(values, order)
    np.testing.assert_array_equal(decode_signed(data, len(values), order), values)
    estimate = int(expgolomb_bits(torch.from_numpy(values), order))
    assert 0 <= 8 * len(data) - estimate < 8  # the estimated rate plus byte padding


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0, 300.0, 5000.0])
def test_best_expgolomb_order_is_the_cheapest_written_order(scale: float) -> None:
    values = torch.round(torch.randn(500, generator=torch.Generator().manual_seed(int(scale))) * scale)
    order, bits = best_expgolomb_order(values)
    costs = [len(encode_signed(values.numpy().astype(np.int64), k)) * 8 for k in EXPGOLOMB_ORDERS]
    assert abs(costs[order] - bits) < 8 and costs[order] - 8 < min(costs)  # byte padding apart, the cheapest
    assert bits == min(int(expgolomb_bits(values, k)) for k in EXPGOLOMB_ORDERS)


def test_shipped_table_is_what_the_generator_produces() -> None:
    np.testing.assert_array_equal(load_table(), generate_table().astype(np.float64))


def _random_arm(seed: int, dim: int = 16) -> IntegerArm:
    """A 2-hidden-layer ARM with random integer parameters at steps 2^-6 (weights), 2^-12 (biases)."""
    rng = np.random.default_rng(seed)
    arm = Arm(dim, 2)
    values = [(rng.integers(-40, 40, (dim, dim)), rng.integers(-500, 500, dim)),
              (rng.integers(-40, 40, (dim, dim)), rng.integers(-500, 500, dim)),
              (rng.integers(-80, 80, (2, dim)), np.array([30, 700]))]
    with torch.no_grad():
        for layer, (weight, bias) in zip([*arm.hidden, arm.output], values):
            layer.weight.copy_(torch.from_numpy(weight) * 2.0**-6)
            layer.bias.copy_(torch.from_numpy(bias) * 2.0**-12)
    return IntegerArm.from_parameters({name: p.detach().double().numpy() for name, p in arm.named_parameters()},
                                      2.0**-6, 2.0**-12)


def test_integer_arm_is_the_same_over_grid_rows_and_wavefronts() -> None:
    arm = _random_arm(0)
    latents = np.round(np.random.default_rng(1).laplace(0, 2.0, (37, 53))).astype(np.int64)
    plan = grid_plan(37, 53, 16)
    order, starts = plan.order, plan.starts
    contexts = np.append(latents.reshape(-1), 0)[context_index([(1, 37, 53)], 16).numpy()]
    whole = np.stack(arm(contexts))
    by_rows = np.concatenate([np.stack(arm(contexts[r * 53:(r + 1) * 53])) for r in range(37)], axis=1)
    by_front = np.zeros_like(whole)
    for start, end in zip(starts[:-1], starts[1:]):
        by_front[:, order[start:end]] = np.stack(arm(contexts[order[start:end]]))
    np.testing.assert_array_equal(whole, by_rows)
    np.testing.assert_array_equal(whole, by_front)
    coded, escapes = encode_grid(latents, arm, 16)
    np.testing.assert_array_equal(decode_grid(coded, escapes, 37, 53, arm, 16), latents)


@pytest.mark.parametrize("height, width, dim_arm, order", [(37, 53, 16, "v4"), (64, 96, 14, "v5"), (9, 2, 32, "v4"),
                                                            (7, 1, 24, "v5"), (1, 1, 8, "v4")])
def test_the_grid_plan_codes_front_by_front_every_context_first(height: int, width: int, dim_arm: int,
                                                                 order: str) -> None:
    """The coding order is the raster positions sorted by (front x + s*y, row), fronts start
    where that front's latents start, and every causal context of a latent is coded before it.
    The compiled decoder, which walks the fronts from their closed form, decodes what was
    coded in the plan's order."""
    plan = grid_plan(height, width, dim_arm, order)
    rows, cols = np.divmod(np.arange(height * width), width)
    slope = wavefront_slope(dim_arm, order)
    front = cols + slope * rows
    assert np.array_equal(plan.order, np.lexsort((rows, front)))
    ordered_fronts = front[plan.order]
    assert np.array_equal(plan.starts, np.append(np.flatnonzero(np.diff(ordered_fronts, prepend=-1)), height * width))
    padded_width = plan.padded_shape[1]
    assert np.array_equal(plan.positions, (rows[plan.order] + plan.top) * padded_width + cols[plan.order] + plan.left)
    for dy, dx in context_offsets(dim_arm, order):
        assert dy < 0 or dx < 0 and dy == 0
        assert dx < slope * -dy or dy == 0  # a context of the row above lies in an earlier front
    arm = _random_arm(height, dim_arm)
    latents = np.round(np.random.default_rng(width).laplace(0, 3.0, (height, width))).astype(np.int64)
    coded, escapes = encode_grid(latents, arm, dim_arm, order)
    np.testing.assert_array_equal(decode_grid(coded, escapes, height, width, arm, dim_arm, order), latents)


def test_float64_integer_arm_gives_the_int64_integers_up_to_its_limit_and_falls_back_beyond(monkeypatch) -> None:
    arm = _random_arm(7)
    rng = np.random.default_rng(8)
    limit = arm._fast_input_limit / 256
    assert limit > 1e6  # far beyond any latent a real encode makes
    int64_call = arm._int64_call
    fallbacks = []
    monkeypatch.setattr(arm, "_int64_call", lambda x: fallbacks.append(None) or int64_call(x))
    for magnitude in (3, 60, 1000, int(limit) - 1, int(limit) * 4):
        contexts = rng.integers(-magnitude, magnitude + 1, (700, 16))
        contexts[0, 0] = magnitude
        fallbacks.clear()
        fast = np.stack(arm(contexts))
        assert len(fallbacks) == (magnitude > limit), magnitude  # float64 up to the limit, int64 beyond
        exact = np.stack(int64_call(contexts.astype(np.int64) << 8))
        np.testing.assert_array_equal(fast, exact)


def test_integer_arm_does_not_depend_on_thread_count() -> None:
    script = ("import numpy as np, torch, hashlib; from tests.test_bitstream import _random_arm;"
              "torch.set_num_threads(int(__import__('os').environ['N'])); arm = _random_arm(3);"
              "x = np.random.default_rng(4).integers(-20, 20, (5000, 16));"
              "print(hashlib.sha256(np.stack(arm(x)).tobytes()).hexdigest())")
    root = Path(__file__).resolve().parents[1]
    digests = {subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True,
                              env={**os.environ, "N": str(n), "OMP_NUM_THREADS": str(n)}).stdout for n in (1, 2)}
    assert len(digests) == 1


def test_large_residuals_use_escapes() -> None:
    arm = _random_arm(5)
    latents = np.zeros((9, 11), dtype=np.int64)
    latents[0, 0], latents[4, 5], latents[8, 10] = 500, -77, 26
    coded, escapes = encode_grid(latents, arm, 16)
    assert len(escapes) > 0
    np.testing.assert_array_equal(decode_grid(coded, escapes, 9, 11, arm, 16), latents)


@pytest.fixture(scope="module")
def encodes(data_dir: Path, tmp_path_factory) -> dict[str, Path]:
    output = tmp_path_factory.mktemp("cool")
    runs = {}
    for name in ("kodim15_192x128.png", "kodim15_192x128_01p_yuv420_8b.yuv", "kodim15_192x128_01p_yuv420_10b.yuv"):
        args = ["--config", str(CONFIGS / "debug.yaml"), "--input", str(data_dir / "images" / name),
                "--output_dir", str(output)]
        assert fit.main(args) == 0
        runs[name] = output / f"{Path(name).stem}_l0.001"
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kodim15_192x128.png", "kodim15_192x128_01p_yuv420_8b.yuv",
                                  "kodim15_192x128_01p_yuv420_10b.yuv"])
def test_round_trip_matches_the_encoder_and_its_rate(encodes, name: str, tmp_path: Path) -> None:
    run_dir = encodes[name]
    results = json.loads((run_dir / "results.json").read_text())
    bitstream = run_dir / results["bitstream"]
    decoded_name = "decoded.png" if name.endswith(".png") else next(p.name for p in run_dir.glob("decoded_*.yuv"))
    output = tmp_path / decoded_name
    assert decode.main([str(bitstream), "-o", str(output)]) == 0
    assert output.read_bytes() == (run_dir / decoded_name).read_bytes()
    data = bitstream.read_bytes()
    estimate = results["bpp"] * results["height"] * results["width"] + header_bits(data)
    assert 8 * len(data) == pytest.approx(estimate, rel=0.02)
    assert results["bpp_file"] == pytest.approx(8 * len(data) / (results["height"] * results["width"]))
    assert decode_coolchic(data).bitdepth == read_frame(output).bitdepth


@pytest.mark.slow
def test_damaged_files_are_rejected_quickly(encodes) -> None:
    data = (encodes["kodim15_192x128.png"] / "kodim15_192x128.cool").read_bytes()
    rng = np.random.default_rng(0)
    for trial in range(300):
        damaged = bytearray(data)
        if trial % 2:
            damaged = damaged[:rng.integers(0, len(data))]
        else:
            for _ in range(rng.integers(1, 4)):
                damaged[rng.integers(0, len(data))] ^= 1 << int(rng.integers(0, 8))
        if bytes(damaged) == data:
            continue
        started = time.perf_counter()
        with pytest.raises(BitstreamError):
            decode_coolchic(bytes(damaged))
        assert time.perf_counter() - started < 1.0


def test_magic_version_and_empty_files(tmp_path: Path, capsys) -> None:
    cases = {
        "missing.cool": None,
        "empty.cool": b"",
        "magic.cool": b"JUNK" + bytes(40),
        "newer.cool": b"CCPL" + bytes([FORMAT_VERSION + 1]) + bytes(40),
    }
    body = b"CCPL" + bytes([FORMAT_VERSION]) + struct.pack(">I", 3) + b"abc"
    cases["inconsistent.cool"] = body + struct.pack(">I", zlib.crc32(body))
    messages = {"missing.cool": "no such file", "empty.cool": "file is empty", "magic.cool": "wrong magic",
                "newer.cool": "newer than this decoder", "inconsistent.cool": "truncated"}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        output = tmp_path / f"{name}.png"
        assert decode.main([str(path), "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and messages[name] in err and err.count("\n") == 1, err
        assert not output.exists()


@pytest.mark.slow
def test_unwritable_output_is_reported(encodes, tmp_path: Path, capsys) -> None:
    bitstream = encodes["kodim15_192x128.png"] / "kodim15_192x128.cool"
    target = tmp_path / "missing" / "out.png"
    assert decode.main([str(bitstream), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and err.count("\n") == 1
    assert not target.parent.exists()


@pytest.fixture(scope="module")
def v5_encodes(data_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """Each Cool-Chic 5 decoder on a 96x64 crop, and hop5 on a 10-bit 4:2:0 frame (output range)."""
    output = tmp_path_factory.mktemp("cool5")
    crop = output / "kodim15_96x64.png"
    with Image.open(data_dir / "images" / "kodim15_192x128.png") as image:
        image.crop((40, 30, 136, 94)).save(crop)
    inputs = {arch: (crop, arch) for arch in V5_ARCHITECTURES}
    inputs["hop5_yuv"] = (data_dir / "images" / "kodim15_192x128_01p_yuv420_10b.yuv", "hop5")
    runs = {}
    for name, (source, arch) in inputs.items():
        args = ["--config", str(CONFIGS / "debug.yaml"), "--input", str(source), "--arch", arch,
                "--output_dir", str(output / name)]
        assert fit.main(args) == 0
        runs[name] = next((output / name).glob("*/results.json")).parent
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", [*V5_ARCHITECTURES, "hop5_yuv"])
def test_cool_chic_5_files_round_trip_through_the_cli(v5_encodes, name: str, tmp_path: Path) -> None:
    run_dir = v5_encodes[name]
    results = json.loads((run_dir / "results.json").read_text())
    data = (run_dir / results["bitstream"]).read_bytes()
    assert data[4] == 4, "Cool-Chic 5 modules need the version 2 layout (version 4: integer decoding)"
    decoded_name = next(p.name for p in run_dir.glob("decoded*"))
    output = tmp_path / decoded_name
    assert decode.main([str(run_dir / results["bitstream"]), "-o", str(output)]) == 0
    assert output.read_bytes() == (run_dir / decoded_name).read_bytes()
    decoded = decode_coolchic(data)
    coolchic = decoded.coolchic
    assert coolchic.architecture.n_ifce_features and "stabiliser.weight" in coolchic.networks["arm"]
    assert "stabiliser.weight" in coolchic.networks["synthesis"] and coolchic.output_range is not None
    if name == "hop5_yuv":  # 10-bit samples: the range is not [0, 1023]
        assert (coolchic.output_range[:, 1] - coolchic.output_range[:, 0]).min() < 2**decoded.bitdepth - 1


@pytest.mark.slow
def test_cool_chic_4_decoders_keep_the_version_1_layout(encodes) -> None:
    for run_dir in encodes.values():
        results = json.loads((run_dir / "results.json").read_text())
        assert (run_dir / results["bitstream"]).read_bytes()[4] == 3
