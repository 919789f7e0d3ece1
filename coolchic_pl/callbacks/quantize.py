"""Network quantisation after a phase flagged ``quantize_model`` (and RDOQ if flagged ``rdoq``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

import time

import lightning.pytorch as pl

from coolchic_pl.nnquant import ModuleQuantization
from coolchic_pl.nnquant.quantize import QStepSearch
from coolchic_pl.nnquant.rdoq import Rdoq

# Called between two candidates of the search with the callback itself: a safe point to
# write a checkpoint holding its ``state_dict()``, or to stop.
SearchProgress = Callable[["PostPhaseQuantization"], None]


class PostPhaseQuantization(pl.Callback):
    """Runs the greedy q-step search on the phase's final (best) parameters, then RDOQ when
    the phase asks for it.

    It hooks ``on_train_end``: the module is still on the training device there (the
    Trainer moves it to the CPU in its teardown, before ``on_fit_end``), and the patience
    callback, placed before this one, has restored the best parameters. The search can be
    checkpointed between candidates (and during RDOQ) through ``progress`` and resumed with
    :meth:`load_state_dict` followed by :meth:`quantize`.
    """

    def __init__(self, progress: SearchProgress | None = None, rdoq: bool = False, max_passes: int = 3) -> None:
        self.progress = progress
        self.rdoq = rdoq
        self.max_passes = max_passes
        self.quantization: dict[str, ModuleQuantization] = {}
        self._search: QStepSearch | None = None
        self._pending_search: dict[str, Any] | None = None
        self._rdoq: Rdoq | None = None
        self._pending_rdoq: dict[str, Any] | None = None
        self.seconds = 0.0  # spent in quantize(), by this process

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device != trainer.strategy.root_device:
            raise RuntimeError(f"quantisation would run on {pl_module.device}, not on the training device "
                               f"{trainer.strategy.root_device}")
        self.quantize(pl_module)

    def quantize(self, pl_module: pl.LightningModule) -> None:
        """Search (or finish a resumed search) and give the module its quantisation."""
        started = time.perf_counter()
        try:
            self._quantize(pl_module)
        finally:
            self.seconds += time.perf_counter() - started

    def _quantize(self, pl_module: pl.LightningModule) -> None:
        search = QStepSearch(pl_module.coolchic, pl_module.evaluate_loss, self.max_passes)
        if self._pending_search is not None:
            search.load_state_dict(self._pending_search)
            self._pending_search = None
        self._search = search
        progress = self.progress
        after_each = (lambda: progress(self)) if progress else lambda: None
        with pl_module.evaluating():
            self.quantization = search.run(after_each)
            if self.rdoq:
                rdoq = Rdoq(pl_module.coolchic, self.quantization, pl_module.evaluate_loss)
                if self._pending_rdoq is not None:
                    rdoq.load_state_dict(self._pending_rdoq)
                    self._pending_rdoq = None
                self._rdoq = rdoq
                self.quantization = rdoq.run(after_each)
        pl_module.quantization = dict(self.quantization)

    def state_dict(self) -> dict[str, Any]:
        return {"quantization": {name: asdict(q) for name, q in self.quantization.items()},
                "search": self._search.state_dict() if self._search is not None else None,
                "rdoq": self._rdoq.state_dict() if self._rdoq is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.quantization = {name: ModuleQuantization(**q) for name, q in state_dict["quantization"].items()}
        self._pending_search = state_dict["search"]
        self._pending_rdoq = state_dict.get("rdoq")
