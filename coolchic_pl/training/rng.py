"""Every random generator an encode touches: captured into checkpoints, restored on resume.

An interrupted encode must continue with exactly the random numbers it would have drawn,
or the resumed result differs from the uninterrupted one. The states are kept as tensors,
integers and tuples only, so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 64-bit seed for the stream named by ``keys`` (e.g. seed, loop, candidate).

    NumPy's SeedSequence hashes the whole tuple, so distinct tuples give independent
    streams: unlike ``seed * 1000 + loop * 100 + candidate``, no two tuples collide.
    """
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0])


def capture_rng_states() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when present) every CUDA generator."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_states`. CUDA states are restored for the devices this
    machine has; a state saved on a GPU machine resumes on a CPU one without them."""
    random.setstate(states["python"])
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and states["cuda"]:
        for device, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)
