"""Reuse of evaluation-time results whose inputs did not change, during the network
quantisation search.

The search evaluates the decoder hundreds of times, changing the parameters of one
network at a time: while it tries ARM steps the synthesis output stays the same; while it
tries residue steps of an inter frame the motion compensation does. Inside
:func:`reusing_unchanged_results`, a result is keyed on the storage and version counter of
every tensor it reads (the search changes parameters with ``copy_``, which bumps the
counter), so only what a change can affect is recomputed. Outside it nothing is cached:
fused optimisers update parameters without bumping their version counters.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from typing import Callable, Generic, Iterable, Iterator, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")
_sessions = itertools.count()
_active_session: int | None = None


@contextmanager
def reusing_unchanged_results() -> Iterator[None]:
    """Let evaluation reuse results inside this block; each block starts with fresh keys."""
    global _active_session
    previous, _active_session = _active_session, next(_sessions)
    try:
        yield
    finally:
        _active_session = previous


class VersionedCache(Generic[T]):
    """The last result of one computation, reused while the tensors it reads are unchanged.

    Only inside :func:`reusing_unchanged_results` and without autograd (a cached result has
    no graph to back-propagate through); callers also skip it in training mode, where the
    quantiser draws noise.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: T | None = None

    def get(self, inputs: Iterable[Tensor], compute: Callable[[], T]) -> T:
        if _active_session is None or torch.is_grad_enabled():
            return compute()
        key = (_active_session, *((t.data_ptr(), t._version, t.device) for t in inputs))
        if key != self._key:
            self._value, self._key = compute(), key
        return self._value  # type: ignore[return-value]
