"""``python -m coolchic_pl.bench.breakdown PROFILE``: where the wall time of an encode goes,
from a py-spy profile of it.

Record the profile of any encode with py-spy (``pip install py-spy``), then read it::

    py-spy record -r 100 --format raw -o profile.txt -- python -m coolchic_pl.fit --config configs/fast.yaml
    python -m coolchic_pl.bench.breakdown profile.txt

Every sample of the main thread is a call stack; it is put in the first category of
:data:`CATEGORIES` one of whose functions it contains, so a forward inside the q-step
search counts as search, not as validation. Samples of other threads (TensorBoard's
writer, mostly waiting) are left out. The table gives each category's share of the
samples (of the wall time: py-spy samples at a fixed rate) and its seconds.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

# (category, functions as py-spy names them: "name (file:line)" starts with the name).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bitstream (write and check)", ("write_bitstream",)),
    ("RDOQ", ("Rdoq.run",)),
    ("q-step search", ("QStepSearch.run",)),
    ("validations and ranking", ("CoolChicModule.validation_step", "PhaseRunner._ranking_loss",
                                 "PhaseRunner._finish_loop")),
    ("training steps", ("CoolChicModule.training_step",)),
    ("image logging", ("log_phase_image",)),
    ("checkpoints", ("Checkpointer.save",)),
    ("candidate set-up", ("PhaseRunner._new_module",)),
    ("Trainer set-up, loops, callbacks", ("PhaseRunner._train",)),
    ("start-up (imports, parsing)", ("<module>", "parse_config")),
)
OTHER = "other"
BACKGROUND_THREAD = "Thread._bootstrap "


def categorise(stack: str) -> str:
    frames = [frame.split(" (", 1)[0] for frame in stack.split(";")]
    for category, functions in CATEGORIES:
        if any(frame in functions for frame in frames):
            return category
    return OTHER


def breakdown(profile: Path) -> tuple[Counter, int]:
    """Samples of the main thread per category, and their total."""
    counts: Counter = Counter()
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit() and not stack.startswith(BACKGROUND_THREAD):
            counts[categorise(stack)] += int(count)
    return counts, sum(counts.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coolchic_pl.bench.breakdown", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--rate", type=float, default=100.0, help="py-spy's sampling rate (-r), samples per second")
    args = parser.parse_args(argv)
    if not args.profile.is_file():
        parser.error(f"{args.profile}: no such file")
    counts, total = breakdown(args.profile)
    if not total:
        parser.error(f"{args.profile}: no py-spy samples in it (record with --format raw)")
    for category, _ in (*CATEGORIES, (OTHER, ())):
        if counts[category]:
            print(f"{category:34s} {100 * counts[category] / total:5.1f} %  {counts[category] / args.rate:7.1f} s")
    print(f"{'total':34s} {100.0:5.1f} %  {total / args.rate:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
