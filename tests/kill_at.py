"""Test harness: ``python tests/kill_at.py POINT N <fit arguments>`` runs the fit command
and sends itself SIGKILL at a precise moment, so that tests can check what a rerun makes
of a process that died there. POINT is one of:

* ``step``: when the encode is about to run its N-th training step (0-based, counted over
  every stage);
* ``quantization``: when it is about to try its N-th step pair in the network
  quantisation search;
* ``bitstream``: when it starts writing the bitstream, all stages done (N unused);
* ``checkpoint``: halfway through writing its N-th checkpoint file (0-based).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any, Callable

import torch

from coolchic_pl import encode, fit
from coolchic_pl.io.frame import atomic_write
from coolchic_pl.nnquant.quantize import QStepSearch
from coolchic_pl.training import checkpoint
from coolchic_pl.training.module import CoolChicModule


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_on_call(owner: Any, name: str, n: int, before: Callable[..., None] = lambda *args: die()) -> None:
    """Replace ``owner.name`` so that its n-th call (0-based) runs ``before`` first."""
    original = getattr(owner, name)
    calls = []

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(None)
        if len(calls) == n + 1:
            before(*args)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def write_half_and_die(io: Any, payload: dict, path: Any, *rest: Any) -> None:
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
        data = tmp.read_bytes()
        tmp.write_bytes(data[: len(data) // 2])
        die()


def main() -> int:
    point, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if point == "step":
        kill_on_call(CoolChicModule, "training_step", n)
    elif point == "quantization":
        kill_on_call(QStepSearch, "_try", n)
    elif point == "bitstream":
        kill_on_call(encode, "write_bitstream", 0)
    elif point == "checkpoint":
        kill_on_call(checkpoint.AtomicCheckpointIO, "save_checkpoint", n, before=write_half_and_die)
    else:
        raise SystemExit(f"unknown kill point {point}")
    return fit.main(argv)


if __name__ == "__main__":
    sys.exit(main())
