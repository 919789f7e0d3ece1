"""Malformed files behind a valid CRC: always one BitstreamError (one line, exit 2), never a
traceback, never an allocation or a decode out of proportion with the file."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

from coolchic_pl.bench.fuzz import KINDS, Case, fuzz, mutate, run_case
from coolchic_pl.bitstream import BitstreamError, decode_coolchic, encode_coolchic
from coolchic_pl.bitstream.codec import MAX_MACS_PER_PIXEL, ByteReader, varints_bytes
from coolchic_pl.decode import decode_bytes
from coolchic_pl.fixedpoint.coolchic import IntegerCoolChic
from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.nnquant import ModuleQuantization
from golden import GOLDEN

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    """Every decoder family (the golden images), a video of format 3 and one of format 1."""
    paths = sorted(GOLDEN.glob("*.cool")) + [DATA / "bqsquare_3frames_video_v1.cool"]
    return {path.name: path.read_bytes() for path in paths}


@pytest.fixture(scope="module")
def fuzzed(corpus: dict[str, bytes]) -> tuple[list[Case], float]:
    """300 seeded mutations decoded through the Python API, and the seconds they took."""
    start = time.perf_counter()
    return fuzz(corpus, 300, seed=2026), time.perf_counter() - start


def test_300_mutations_end_in_a_clean_error_or_a_decode(fuzzed: tuple[list[Case], float]) -> None:
    cases, seconds = fuzzed
    crashes = [f"{c.kind} of {c.source}: {c.detail}" for c in cases if c.outcome == "crash"]
    assert not crashes, crashes
    assert {c.kind for c in cases} == set(KINDS) and sum(c.crc_fixed for c in cases) > 200
    assert sum(c.outcome == "error" for c in cases) > 250
    assert all("\n" not in c.detail for c in cases)
    assert max(c.seconds for c in cases) < 5 and seconds < 60


def test_mutated_files_through_the_cli_give_one_line_exit_2_and_no_output(corpus: dict[str, bytes],
                                                                          tmp_path: Path) -> None:
    rng = random.Random(7)
    checked = 0
    while checked < len(KINDS):
        kind = KINDS[checked]
        source = rng.choice(sorted(corpus))
        data = mutate(corpus[source], kind, rng, list(corpus.values()), fix_crc=True)
        if run_case(data)[0] != "error":
            continue
        path = tmp_path / f"{kind}.cool"
        path.write_bytes(data)
        output = tmp_path / f"{kind}_224x128_yuv420_8b.yuv"
        result = subprocess.run([sys.executable, "-m", "coolchic_pl.decode", str(path), "-o", str(output)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert not output.exists() and not list(tmp_path.glob(".*"))
        checked += 1


def _with_size(data: bytes, height: int, width: int) -> bytes:
    """An image .cool whose header claims another size, the rest untouched, CRC recomputed."""
    reader = ByteReader(data, 5)
    (header_length,) = reader.varints(1)
    header = ByteReader(reader.bytes(header_length))
    header.varints(2)  # height, width
    fields = varints_bytes(height, width) + header.data[header.position:]
    body = data[:5] + varints_bytes(len(fields)) + fields + data[reader.position:-4]
    return body + struct.pack(">I", zlib.crc32(body))


def test_a_small_file_claiming_a_huge_image_is_refused_before_allocating() -> None:
    data = (GOLDEN / "lop.cool").read_bytes()
    start = time.perf_counter()
    with pytest.raises(BitstreamError, match="more than a .*-byte file may hold"):
        decode_bytes(_with_size(data, 60000, 60000))
    assert time.perf_counter() - start < 1


def test_a_decoder_beyond_the_format_s_work_per_pixel_is_refused() -> None:
    architecture = CoolChicArchitecture(layers_synthesis="1024-3-linear-relu,X-1-linear-none")
    model = CoolChic((16, 16), architecture)
    assert model.mac_per_pixel() > MAX_MACS_PER_PIXEL
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    quantization = {name: ModuleQuantization(1.0, 1.0, 0, 0, 0) for name in model.quantizable_modules()}
    data = encode_coolchic(IntegerCoolChic.from_module(model, 8), quantization, "rgb", 8)
    with pytest.raises(BitstreamError, match="multiplications per pixel exceeds"):
        decode_coolchic(data)


def test_errors_name_where_the_damage_is(fuzzed: tuple[list[Case], float]) -> None:
    """Latent grids, networks, and the frame and Cool-Chic of a video."""
    messages = {c.detail for c in fuzzed[0] if c.outcome == "error"}
    assert any(m.startswith("latent grid ") for m in messages)
    assert any(m.startswith("frame ") and "Cool-Chic: " in m for m in messages)
    assert any(" network: " in m for m in messages)
