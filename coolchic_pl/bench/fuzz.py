"""Robustness: ``python -m coolchic_pl.bench fuzz a.cool video.cool --cases 2000 [--seed 0]``.

Mutates real ``.cool`` files in six ways (bit flips, truncation, zeroed runs, appended
bytes, splices from another file, header bytes) and, in three cases out of four,
recomputes the CRC-32 so that the damage reaches the parsers behind it. Every case must
end in a :class:`~coolchic_pl.bitstream.BitstreamError` or decode to frames: anything else
is a crash, printed with its traceback's last line. Prints the counts by kind and outcome
and the slowest case. Seeded: the same seed and files give the same cases.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from coolchic_pl.bitstream import BitstreamError
from coolchic_pl.bitstream.codec import MAGIC, with_crc
from coolchic_pl.decode import decode_bytes

# Magic and version bytes are left alone: changing them is refused before any parsing (a
# video's magic has the image's length).
_PROTECTED = len(MAGIC) + 1
KINDS = ("bitflip", "truncate", "zeros", "append", "splice", "header")


def _bitflip(data: bytearray, rng: random.Random, _: list[bytes]) -> bytearray:
    for _ in range(rng.randint(1, 3)):
        position = rng.randrange(_PROTECTED, len(data) - 4)
        data[position] ^= 1 << rng.randrange(8)
    return data


def _truncate(data: bytearray, rng: random.Random, _: list[bytes]) -> bytearray:
    return data[:rng.randrange(_PROTECTED + 1, len(data) - 4)] + data[-4:]


def _zeros(data: bytearray, rng: random.Random, _: list[bytes]) -> bytearray:
    start = rng.randrange(_PROTECTED, len(data) - 4)
    end = min(len(data) - 4, start + rng.randint(1, 16))
    data[start:end] = bytes(end - start)
    return data


def _append(data: bytearray, rng: random.Random, _: list[bytes]) -> bytearray:
    return data[:-4] + bytearray(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[-4:]


def _splice(data: bytearray, rng: random.Random, others: list[bytes]) -> bytearray:
    other = rng.choice(others)
    start = rng.randrange(_PROTECTED, len(data) - 4)
    length = rng.randint(1, 64)
    source = rng.randrange(_PROTECTED, max(_PROTECTED + 1, len(other) - 4 - length))
    return data[:start] + other[source:source + length] + data[start + length:]


def _header(data: bytearray, rng: random.Random, _: list[bytes]) -> bytearray:
    position = rng.randrange(_PROTECTED, min(len(data) - 4, 48))
    data[position] = rng.randrange(256)
    return data


_MUTATIONS: dict[str, Callable[[bytearray, random.Random, list[bytes]], bytearray]] = dict(
    zip(KINDS, (_bitflip, _truncate, _zeros, _append, _splice, _header)))


@dataclass
class Case:
    kind: str
    source: str
    crc_fixed: bool
    outcome: str  # "error", "decoded" or "crash"
    seconds: float
    detail: str


def mutate(data: bytes, kind: str, rng: random.Random, others: list[bytes], fix_crc: bool) -> bytes:
    mutated = bytes(_MUTATIONS[kind](bytearray(data), rng, others))
    return with_crc(mutated[:-4]) if fix_crc else mutated


def run_case(data: bytes) -> tuple[str, str]:
    """(outcome, detail) of decoding ``data``: a clean error, a decode, or a crash."""
    try:
        frames = decode_bytes(data)
    except BitstreamError as error:
        return "error", str(error)
    except Exception as error:  # noqa: BLE001 - what the fuzzer exists to find
        where = traceback.extract_tb(error.__traceback__)[-1]
        return "crash", f"{type(error).__name__}: {error} ({Path(where.filename).name}:{where.lineno})"
    return "decoded", f"{len(frames)} frame(s)"


def fuzz(files: dict[str, bytes], n_cases: int, seed: int, report: Callable[[Case], None] = lambda _: None
         ) -> list[Case]:
    """``n_cases`` mutations spread evenly over the kinds, each of a random file."""
    rng = random.Random(seed)
    names, contents = list(files), list(files.values())
    cases = []
    for index in range(n_cases):
        kind = KINDS[index % len(KINDS)]
        source = rng.choice(names)
        fix_crc = rng.random() < 0.75
        data = mutate(files[source], kind, rng, contents, fix_crc)
        start = time.perf_counter()
        outcome, detail = run_case(data)
        case = Case(kind, source, fix_crc, outcome, time.perf_counter() - start, detail)
        report(case)
        cases.append(case)
    return cases


def summary(cases: list[Case]) -> str:
    counts = Counter((c.kind, c.outcome) for c in cases)
    lines = [f"{'kind':<9} {'cases':>6} {'error':>6} {'decoded':>8} {'crash':>6}"]
    for kind in KINDS:
        row = [counts[kind, outcome] for outcome in ("error", "decoded", "crash")]
        lines.append(f"{kind:<9} {sum(row):>6} {row[0]:>6} {row[1]:>8} {row[2]:>6}")
    slowest = max(cases, key=lambda c: c.seconds)
    lines.append(f"{len(cases)} cases ({sum(c.crc_fixed for c in cases)} with the CRC recomputed), "
                 f"{sum(c.outcome == 'crash' for c in cases)} crashes; slowest {slowest.seconds:.2f} s "
                 f"({slowest.kind} of {slowest.source}: {slowest.outcome}, {slowest.detail})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coolchic-bench fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="valid .cool files (image or video) to mutate")
    parser.add_argument("--cases", type=int, default=2000, help="number of mutated files")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing or args.cases < 1:
        parser.error(f"no such file: {', '.join(missing)}" if missing else "--cases must be >= 1")
    files = {path.name: path.read_bytes() for path in args.files}

    def report(case: Case) -> None:
        if case.outcome == "crash":
            print(f"crash: {case.kind} of {case.source}: {case.detail}", flush=True)

    cases = fuzz(files, args.cases, args.seed, report)
    print(summary(cases))
    return 1 if any(c.outcome == "crash" for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
