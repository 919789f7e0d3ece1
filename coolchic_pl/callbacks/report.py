"""Validation metrics to the loggers and a one-line progress report, nothing per step."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import lightning.pytorch as pl


class ValidationReport(pl.Callback):
    """Logs each validation under ``<stage>/`` at the stage's own step and under
    ``global/`` at the encode's global iteration, and prints one progress line.

    The runner owns the global iteration count (every stage's Trainer restarts at 0)
    and passes the count reached before this stage as ``global_offset``.
    """

    def __init__(self, stage: str, global_offset: int, max_itr: int, stream: TextIO | None = sys.stderr):
        self.stage, self.global_offset, self.max_itr = stage, global_offset, max_itr
        self.stream = stream
        self.n_reports = 0

    @property
    def state_key(self) -> str:
        return f"ValidationReport[{self.stage}]"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = dict(pl_module.last_metrics)
        metrics["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        metrics["temperature"] = pl_module.temperature.item()
        metrics["noise_parameter"] = pl_module.noise_parameter.item()
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics({f"{self.stage}/{k}": v for k, v in metrics.items()}, step=step)
            logger.log_metrics({f"global/{k}": metrics[k] for k in ("loss", "psnr_db", "bpp")},
                               step=self.global_offset + step)
        self.n_reports += 1
        if self.stream is not None:
            print(f"{self.stage:>16s} {step:6d}/{self.max_itr:<6d} loss {metrics['loss']:.6f} "
                  f"PSNR {metrics['psnr_db']:6.2f} dB  {metrics['bpp']:.4f} bpp", file=self.stream, flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"n_reports": self.n_reports}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.n_reports = state_dict["n_reports"]
