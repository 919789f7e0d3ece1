"""Reuse of evaluation-time results whose inputs did not change, during the network
quantisation search.

The search evaluates the decoder hundreds of times, changing the parameters of one
network at a time: while it tries ARM steps the synthesis output stays the same; while it
tries residue steps of an inter frame the motion compensation does. Inside
:func:`reusing_unchanged_results`, a result is keyed on the storage and version counter of
every tensor it reads (the search changes parameters with ``copy_``, which bumps the
counter), so only what a change can affect is recomputed. Outside it nothing is cached:
fused optimisers update parameters without bumping their version counters.

Results chain: a layer's cache is keyed on the cached output of the layer before it, so a
change to one layer's parameters recomputes that layer and those after it, nothing before.
A cache keeps the tensors it was keyed on alive, so no new tensor can take the storage of
one a key names; every cache is emptied when the block ends.
"""

from __future__ import annotations

import itertools
import weakref
from contextlib import contextmanager
from typing import Callable, Generic, Iterable, Iterator, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")
_sessions = itertools.count()
_active_session: int | None = None
_caches: weakref.WeakSet[VersionedCache] = weakref.WeakSet()


@contextmanager
def reusing_unchanged_results() -> Iterator[None]:
    """Let evaluation reuse results inside this block; each block starts with fresh keys."""
    global _active_session
    previous, _active_session = _active_session, next(_sessions)
    try:
        yield
    finally:
        _active_session = previous
        for cache in list(_caches):
            cache.clear()


class VersionedCache(Generic[T]):
    """The last result of one computation, reused while the tensors it reads are unchanged.

    Only inside :func:`reusing_unchanged_results` and without autograd (a cached result has
    no graph to back-propagate through). A result keyed on parameters alone must not
    depend on random draws: the Cool-Chic skips its caches in training mode, where the
    quantiser draws noise.
    """

    def __init__(self) -> None:
        self.clear()
        _caches.add(self)

    def __deepcopy__(self, memo: dict) -> VersionedCache[T]:
        """A copied module starts with an empty cache: the results belong to the original's tensors."""
        return VersionedCache()

    def clear(self) -> None:
        self._key: tuple | None = None
        self._inputs: list[Tensor] = []
        self._value: T | None = None

    def get(self, inputs: Iterable[Tensor], compute: Callable[[], T]) -> T:
        if _active_session is None or torch.is_grad_enabled():
            return compute()
        inputs = list(inputs)
        key = (_active_session, *((t.data_ptr(), t._version, t.device) for t in inputs))
        if key != self._key:
            self._value, self._key, self._inputs = compute(), key, inputs
        return self._value  # type: ignore[return-value]
