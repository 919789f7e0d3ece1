"""PhaseRunner: warm-up competition, main phases and restarts, one Trainer per stage.

An encode is a fixed plan of stages: for each loop, every warm-up candidate training
(``warmup<p>/c<c>``) then every main phase (``phase<i>``). After each stage the runner
hands its complete state to ``save_state``; a runner built with that state skips the
stages already done, so an interruption loses at most the stage in progress.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger

from coolchic_pl.callbacks import CosineLR, LinearSchedule, PatienceWithReload, PostPhaseQuantization, ValidationReport
from coolchic_pl.config import Preset, TrainerPhase
from coolchic_pl.io import FrameData
from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.training.datamodule import SingleFrameDataModule
from coolchic_pl.training.module import CoolChicModule

# Lightning announces devices and hints about data loader workers for every Trainer; with
# one short-lived Trainer per stage that is noise, and a single in-memory frame needs no
# workers.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


class EncodeInterrupted(Exception):
    """The user or the system stopped the encode; the last finished stage is saved."""


@dataclass(frozen=True)
class Stage:
    loop: int
    kind: str  # "warmup" or "phase"
    index: int  # warm-up phase or main phase index
    candidate: int = 0

    def name(self, n_loops: int) -> str:
        local = f"warmup{self.index}/c{self.candidate}" if self.kind == "warmup" else f"phase{self.index}"
        return f"loop{self.loop}/{local}" if n_loops > 1 else local


def stage_callbacks(phase: TrainerPhase, stage: str, global_offset: int, report_stream: Any) -> list[pl.Callback]:
    """Fresh callbacks for one stage, in the order they must run at each validation:
    report what was measured, record the best, then move the schedules."""
    callbacks: list[pl.Callback] = [
        ValidationReport(stage, global_offset, phase.max_itr, report_stream),
        PatienceWithReload(phase.patience, phase.schedule_lr, phase.freq_valid, phase.max_itr),
        LinearSchedule("temperature", *phase.softround_temperature, phase.max_itr),
        LinearSchedule("noise_parameter", *phase.noise_parameter, phase.max_itr),
    ]
    if phase.schedule_lr:
        callbacks.append(CosineLR(phase.max_itr, phase.freq_valid))
    if phase.quantize_model:
        callbacks.append(PostPhaseQuantization())
    return callbacks


def fit_stage(module: CoolChicModule, phase: TrainerPhase, stage: str, global_offset: int = 0,
              accelerator: str = "cpu", loggers: Sequence[Logger] = (), report_stream: Any = None) -> pl.Trainer:
    """Train ``module`` for one phase with a fresh, short-lived Trainer and callbacks."""
    module.phase = phase
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=phase.max_itr,
        max_epochs=1,
        val_check_interval=min(phase.freq_valid, phase.max_itr),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        log_every_n_steps=phase.max_itr,
        logger=list(loggers) or False,
        callbacks=stage_callbacks(phase, stage, global_offset, report_stream),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=SingleFrameDataModule(phase.max_itr))
    return trainer


class PhaseRunner:
    def __init__(
        self,
        frame: FrameData,
        architecture: CoolChicArchitecture,
        preset: Preset,
        lmbda: float,
        *,
        seed: int = 0,
        n_loops: int = 1,
        accelerator: str = "cpu",
        compile_decoder: bool = False,
        loggers: Sequence[Logger] = (),
        report_stream: Any = None,
        state: dict | None = None,
        save_state: Callable[[dict], None] | None = None,
        on_phase_end: Callable[[str, CoolChicModule, int], None] | None = None,
    ):
        self.frame, self.architecture, self.preset, self.lmbda = frame, architecture, preset, lmbda
        self.seed, self.n_loops, self.accelerator = seed, n_loops, accelerator
        self.compile_decoder = compile_decoder
        self.loggers = list(loggers)
        self.report_stream = report_stream
        self.save_state = save_state
        self.on_phase_end = on_phase_end
        self.state = state or {"loop": 0, "stage": 0, "candidates": [], "losses": [], "global_iteration": 0,
                               "elapsed_s": 0.0, "best": None}
        self._modules: list[CoolChicModule] | None = None

    # ------------------------------------------------------------------ plan

    def plan(self, loop: int) -> list[Stage]:
        stages = [Stage(loop, "warmup", p, c)
                  for p, warm in enumerate(self.preset.warmup.phases) for c in range(warm.candidates)]
        return stages + [Stage(loop, "phase", i) for i in range(len(self.preset.all_phases))]

    @property
    def global_iteration(self) -> int:
        return self.state["global_iteration"]

    @property
    def elapsed_s(self) -> float:
        return self.state["elapsed_s"]

    def _new_module(self, codec_state: dict | None = None, init_seed: int | None = None) -> CoolChicModule:
        if init_seed is not None:
            torch.manual_seed(init_seed)
        module = CoolChicModule(self.frame, self.architecture, self.lmbda)
        if codec_state is not None:
            module.load_codec_state(codec_state)
        return module

    def _candidates(self) -> list[CoolChicModule]:
        if self._modules is None:
            if self.state["candidates"]:
                self._modules = [self._new_module(s) for s in self.state["candidates"]]
            else:
                loop = self.state["loop"]
                self._modules = [self._new_module(init_seed=self.seed * 1000 + loop * 100 + c)
                                 for c in range(self.preset.warmup.n_candidates)]
                self.state["losses"] = [float("inf")] * len(self._modules)
        return self._modules

    # ------------------------------------------------------------------- run

    def run(self) -> tuple[CoolChicModule, dict[str, float]]:
        """Run (or finish) every loop; returns the best module and its final test metrics."""
        while self.state["loop"] < self.n_loops:
            plan = self.plan(self.state["loop"])
            for stage in plan[self.state["stage"]:]:
                started = time.perf_counter()
                self._run_stage(stage)
                self.state["elapsed_s"] += time.perf_counter() - started
                self.state["stage"] += 1
                self._checkpoint()
            self._finish_loop()
        best = self.state["best"]
        return self._new_module(best["codec_state"]), best["metrics"]

    def _run_stage(self, stage: Stage) -> None:
        modules = self._candidates()
        name = stage.name(self.n_loops)
        if stage.kind == "warmup":
            phase = self.preset.warmup.phases[stage.index]
            if stage.candidate == 0 and stage.index > 0:
                del modules[phase.candidates:]
                del self.state["losses"][phase.candidates:]
            module = modules[stage.candidate]
            self._fit(module, phase.training_phase, name)
            self.state["losses"][stage.candidate] = module.evaluate()["loss"]
            if stage.candidate == phase.candidates - 1:
                self._sort_candidates()
            return
        del modules[1:]
        del self.state["losses"][1:]
        if self.compile_decoder:
            modules[0].use_compiled_decoder()
        self._fit(modules[0], self.preset.all_phases[stage.index], name)
        if self.on_phase_end is not None:
            self.on_phase_end(name, modules[0], self.global_iteration)

    def _sort_candidates(self) -> None:
        order = sorted(range(len(self._modules)), key=self.state["losses"].__getitem__)
        self._modules = [self._modules[i] for i in order]
        self.state["losses"] = [self.state["losses"][i] for i in order]

    def _fit(self, module: CoolChicModule, phase: TrainerPhase, stage: str) -> None:
        trainer = fit_stage(module, phase, stage, self.global_iteration, self.accelerator, self.loggers,
                            self.report_stream)
        if trainer.interrupted:
            raise EncodeInterrupted(f"interrupted during {stage}")
        self.state["global_iteration"] += trainer.global_step

    def _finish_loop(self) -> None:
        winner = self._candidates()[0]
        metrics = winner.evaluate()
        best = self.state["best"]
        if best is None or metrics["loss"] < best["metrics"]["loss"]:
            self.state["best"] = {"codec_state": winner.codec_state(), "metrics": metrics}
        self.state.update(loop=self.state["loop"] + 1, stage=0, candidates=[], losses=[])
        self._modules = None
        self._checkpoint()

    def _checkpoint(self) -> None:
        if self._modules is not None:
            self.state["candidates"] = [m.codec_state() for m in self._modules]
        if self.save_state is not None:
            self.save_state(self.state)
