"""PhaseRunner: warm-up competition, main phases and restarts, one Trainer per stage.

An encode is a fixed plan of stages: for each loop, every warm-up candidate training
(``warmup<p>/c<c>``) then every main phase (``phase<i>``). Through a
:class:`~coolchic_pl.training.checkpoint.Checkpointer` the runner keeps one checkpoint of
the encode up to date: at every stage end (its own state, no Trainer), inside a stage
(the Trainer's checkpoint, written by :class:`StageCheckpoint`) and between candidates of
the post-phase quantisation search. ``run(checkpoint)`` continues exactly where that
checkpoint was taken: same candidates, same optimiser and callback states, same random
numbers.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from coolchic_pl.callbacks import CosineLR, LinearSchedule, PatienceWithReload, PostPhaseQuantization, ValidationReport
from coolchic_pl.callbacks.checkpoint import StageCheckpoint
from coolchic_pl.config import Preset, TrainerPhase
from coolchic_pl.extensions import callback_states, load_callback_states
from coolchic_pl.io import FrameData
from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.model.latents import ENCODER_GAIN, encoder_gain_for
from coolchic_pl.training.checkpoint import (
    CHECKPOINT_KEY, CHECKPOINT_VERSION, AtomicCheckpointIO, Checkpointer, EncodeStopped, StopReason,
)
from coolchic_pl.training.datamodule import SingleFrameDataModule
from coolchic_pl.nnquant.quantize import estimated_network_bits
from coolchic_pl.training.module import CoolChicModule
from coolchic_pl.training.rng import capture_rng_states, derive_seed, restore_rng_states

# Lightning announces devices and tips for every Trainer; with one short-lived Trainer
# per stage that is noise.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")

# Where a checkpoint was taken within the stage ``runner["stage"]``.
BEFORE_STAGE = "before_stage"  # nothing of that stage done yet
IN_TRAINING = "training"  # a Trainer checkpoint inside its fit
IN_QUANTIZATION = "quantization"  # its training done, between two candidates of the q-step search
SECONDS_KEYS = ("warmup", "training", "quantization")


@dataclass(frozen=True)
class Stage:
    loop: int
    kind: str  # "warmup" or "phase"
    index: int  # warm-up phase or main phase index
    candidate: int = 0

    def name(self, n_loops: int) -> str:
        local = f"warmup{self.index}/c{self.candidate}" if self.kind == "warmup" else f"phase{self.index}"
        return f"loop{self.loop}/{local}" if n_loops > 1 else local


@dataclass
class Candidate:
    """A live warm-up competitor. ``id`` is the candidate it started as, which fixes its
    decoder and its random initialisation; ``loss`` is its last ranking loss."""
    module: CoolChicModule
    id: int
    loss: float = float("inf")

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps of it (plain types: checkpoints load with weights_only)."""
        return {"id": self.id, "loss": self.loss, "codec_state": self.module.codec_state()}


def stage_callbacks(phase: TrainerPhase, stage: str, global_offset: int, report_stream: Any) -> list[pl.Callback]:
    """Fresh callbacks for one stage, in the order they must run at each validation and
    at the stage end: report what was measured, record the best (and restore it at the
    end, before any quantisation), then move the schedules."""
    callbacks: list[pl.Callback] = [
        ValidationReport(stage, global_offset, phase.max_itr, report_stream),
        PatienceWithReload(phase.patience, phase.schedule_lr, phase.max_itr),
        LinearSchedule("temperature", *phase.softround_temperature, phase.max_itr),
        LinearSchedule("noise_parameter", *phase.noise_parameter, phase.max_itr),
    ]
    if phase.schedule_lr:
        callbacks.append(CosineLR(phase.max_itr, phase.freq_valid))
    return callbacks


def make_trainer(phase: TrainerPhase, callbacks: Sequence[pl.Callback], accelerator: str = "cpu",
                 loggers: Sequence[Logger] = ()) -> pl.Trainer:
    """A short-lived Trainer for one stage.

    Checkpoints are written atomically in place. Under SLURM, Lightning's own
    auto-requeue (its SIGUSR1 handler saving an ``hpc_ckpt`` and calling ``scontrol
    requeue``) is turned off: the encode checkpoints itself and exits with the requeue
    code, and the job script decides what to do.
    """
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return pl.Trainer(
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
        callbacks=list(callbacks),
        enable_checkpointing=any(isinstance(c, pl.callbacks.Checkpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=plugins,
    )


def fit_stage(module: CoolChicModule, phase: TrainerPhase, stage: str, accelerator: str = "cpu") -> pl.Trainer:
    """Train ``module`` for one phase with a fresh Trainer and callbacks, nothing else
    (no checkpoints, no quantisation): one main phase as the speed benchmark times it."""
    module.phase = phase
    trainer = make_trainer(phase, stage_callbacks(phase, stage, 0, None), accelerator)
    trainer.fit(module, datamodule=SingleFrameDataModule())
    return trainer


class PhaseRunner:
    def __init__(
        self,
        frame: FrameData,
        architecture: CoolChicArchitecture | Sequence[CoolChicArchitecture],
        preset: Preset,
        lmbda: float,
        *,
        seed: int = 0,
        n_loops: int = 1,
        accelerator: str = "cpu",
        compile_decoder: bool = False,
        loggers: Sequence[Logger] = (),
        user_callbacks: Sequence[pl.Callback] = (),
        report_stream: Any = None,
        checkpointer: Checkpointer | None = None,
        on_phase_end: Callable[[str, CoolChicModule, int], None] | None = None,
        module_factory: Callable[[int], CoolChicModule] | None = None,
        name_prefix: str = "",
        rank_with_network_bits: bool = False,
    ):
        """``module_factory(candidate)`` builds the module of a candidate (by default a
        CoolChicModule of ``architecture``, or of ``architecture[candidate % n]`` when
        several decoders compete): inter frames and motion pre-training bring their own
        decoders and targets. ``name_prefix`` starts every stage name in logs (the frame
        of a video). Warm-up candidates are ranked on their RD loss with an estimate of
        their network rate when several decoders compete or ``rank_with_network_bits``
        says so (candidates of an inter frame may send no networks at all)."""
        architectures = [architecture] if isinstance(architecture, CoolChicArchitecture) else list(architecture)
        if len(architectures) > preset.warmup.n_candidates:
            raise ValueError(f"{len(architectures)} decoders cannot compete in a warm-up of "
                             f"{preset.warmup.n_candidates} candidate(s) (preset {preset.name})")
        self.frame, self.architectures, self.preset, self.lmbda = frame, architectures, preset, lmbda
        self.seed, self.n_loops, self.accelerator = seed, n_loops, accelerator
        self.device = torch.device("cuda" if accelerator == "cuda" else "cpu")
        self.compile_decoder = compile_decoder
        self.loggers = list(loggers)
        self.user_callbacks = list(user_callbacks)
        self.report_stream = report_stream
        self.checkpointer = checkpointer
        self.on_phase_end = on_phase_end
        self.name_prefix = name_prefix
        self.rank_with_network_bits = rank_with_network_bits or len(architectures) > 1
        gain = encoder_gain_for(lmbda) if preset.gain_from_lambda else ENCODER_GAIN
        self.module_factory = module_factory or (lambda candidate: CoolChicModule(
            frame, architectures[candidate % len(architectures)], lmbda, gain))
        # "candidates": the live candidates' records, filled only in a snapshot. "seconds":
        # where the time went (warm-up, main-phase training, network quantisation).
        self.state: dict[str, Any] = {"loop": 0, "stage": 0, "candidates": [], "global_iteration": 0,
                                      "elapsed_s": 0.0, "best": None, "seconds": dict.fromkeys(SECONDS_KEYS, 0.0)}
        self._live: list[Candidate] | None = None
        self._stage_started: float | None = None
        self._trainer: pl.Trainer | None = None

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

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds spent in warm-up stages, in main-phase training and quantising networks."""
        return dict(self.state["seconds"])

    def describe(self, checkpoint: dict[str, Any]) -> str:
        """Where ``checkpoint`` stands in this runner's plan, for a progress line."""
        resume = checkpoint[CHECKPOINT_KEY]
        runner = resume["runner"]
        plan = self.plan(runner["loop"]) if runner["loop"] < self.n_loops else []
        if runner["stage"] >= len(plan):  # stopped after a loop's last stage
            return "the end of the last stage"
        stage = self._stage_name(plan[runner["stage"]])
        if resume["position"] == IN_TRAINING:
            return f"{stage}, iteration {checkpoint['global_step']}"
        if resume["position"] == IN_QUANTIZATION:
            return f"{stage}, network quantisation"
        return f"the start of {stage}"

    def _stage_name(self, stage: Stage) -> str:
        return self.name_prefix + stage.name(self.n_loops)

    def _new_module(self, codec_state: dict | None = None, candidate: int = 0) -> CoolChicModule:
        """A candidate on the training device. Its random initialisation comes from its
        own stream, derived from (seed, loop, candidate), and leaves the encode's random
        generator untouched, so building modules (again, on resume) changes no other
        random number."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, self.state["loop"], candidate))
            module = self.module_factory(candidate)
        if codec_state is not None:
            module.load_codec_state(codec_state)
        return module.to(self.device)

    def _candidates(self) -> list[Candidate]:
        if self._live is None:
            if self.state["candidates"]:
                self._live = [Candidate(self._new_module(r["codec_state"], r["id"]), r["id"], r["loss"])
                              for r in self.state["candidates"]]
            else:
                self._live = [Candidate(self._new_module(candidate=c), c)
                              for c in range(self.preset.warmup.n_candidates)]
        return self._live

    @property
    def winner_architecture(self) -> CoolChicArchitecture:
        """The decoder of the best candidate (after the run: of the returned module)."""
        best = self.state["best"]
        return self.architectures[best["candidate_id"] % len(self.architectures)]

    # ------------------------------------------------------------------- run

    def run(self, checkpoint: dict[str, Any] | None = None) -> tuple[CoolChicModule, dict[str, float]]:
        """Run every loop, or finish them from ``checkpoint`` (as loaded by the
        checkpointer); returns the best module and its final test metrics."""
        resume = checkpoint[CHECKPOINT_KEY] if checkpoint is not None else None
        if resume is None:
            torch.manual_seed(self.seed)
        else:
            self.state = resume["runner"]
            load_callback_states(self.user_callbacks, resume.get("user_callbacks", {}))
        while self.state["loop"] < self.n_loops:
            for stage in self.plan(self.state["loop"])[self.state["stage"]:]:
                self._candidates()
                if resume is not None:
                    restore_rng_states(resume["rng"])
                self._stage_started = time.perf_counter()
                quantization_s = self._run_stage(stage, resume)
                resume = None
                stage_s = time.perf_counter() - self._stage_started
                self.state["elapsed_s"] += stage_s
                seconds = self.state["seconds"]
                seconds["quantization"] += quantization_s
                seconds["warmup" if stage.kind == "warmup" else "training"] += stage_s - quantization_s
                self._stage_started = None
                self.state["stage"] += 1
                self._save_between_stages()
            self._finish_loop()
        best = self.state["best"]
        return self._new_module(best["codec_state"], best["candidate_id"]), best["metrics"]

    def _run_stage(self, stage: Stage, resume: dict[str, Any] | None) -> float:
        """Run one stage; returns the seconds it spent quantising networks."""
        live = self._candidates()
        name = self._stage_name(stage)
        if stage.kind == "warmup":
            warm = self.preset.warmup.phases[stage.index]
            del live[warm.candidates:]
            candidate = live[stage.candidate]
            quantization_s = self._train(candidate.module, warm.training_phase, name, resume)
            candidate.loss = self._ranking_loss(candidate.module)
            self.state.setdefault("ranking", {})[f"{stage.index}:{candidate.id}"] = candidate.loss
            if stage.candidate == warm.candidates - 1:
                live.sort(key=lambda c: c.loss)
            return quantization_s
        del live[1:]
        module = live[0].module
        if self.compile_decoder:
            module.use_compiled_decoder()
        quantization_s = self._train(module, self.preset.all_phases[stage.index], name, resume)
        if self.on_phase_end is not None:
            self.on_phase_end(name, module, self.global_iteration)
        return quantization_s

    def _train(self, module: CoolChicModule, phase: TrainerPhase, stage: str, resume: dict[str, Any] | None) -> float:
        """One stage's fit, then its quantisation if the phase asks for one; resumed from
        inside either when ``resume`` says so. The module ends on the training device.
        Returns the seconds the quantisation took (0 without one)."""
        module.phase = phase
        quantizer = (PostPhaseQuantization(self._quantization_progress, phase.rdoq, phase.quantization_passes)
                     if phase.quantize_model else None)
        position = resume["position"] if resume is not None else BEFORE_STAGE
        if position == IN_QUANTIZATION:
            self.state["global_iteration"] += resume["stage_steps"]
            quantizer.load_state_dict(resume["quantization"])
            quantizer.quantize(module)
            return quantizer.seconds
        callbacks = stage_callbacks(phase, stage, self.global_iteration, self.report_stream)
        if quantizer is not None:
            callbacks.append(quantizer)
        callbacks += self.user_callbacks
        if self.checkpointer is not None:
            callbacks.append(StageCheckpoint(self.checkpointer, phase, lambda: self._extras(IN_TRAINING)))
        self._trainer = make_trainer(phase, callbacks, self.accelerator, self.loggers)
        ckpt_path = self.checkpointer.path if position == IN_TRAINING else None
        try:
            self._trainer.fit(module, datamodule=SingleFrameDataModule(), ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException:
            raise EncodeStopped(StopReason.TERMINATE) from None
        finally:
            module.to(self.device)  # the Trainer's teardown leaves it on the CPU
        self.state["global_iteration"] += self._trainer.global_step
        self._trainer = None
        return quantizer.seconds if quantizer is not None else 0.0

    def _ranking_loss(self, module: CoolChicModule) -> float:
        """A warm-up candidate's test loss. When decoders of different sizes compete, their
        networks' rate is part of the choice, estimated before any quantisation."""
        if not self.rank_with_network_bits:
            return module.evaluate()["loss"]
        return module.evaluate_loss(estimated_network_bits(module.coolchic))

    def _finish_loop(self) -> None:
        winner = self._candidates()[0]
        metrics = winner.module.evaluate()
        best = self.state["best"]
        if best is None or metrics["loss"] < best["metrics"]["loss"]:
            self.state["best"] = {"codec_state": winner.module.codec_state(), "metrics": metrics,
                                  "candidate_id": winner.id}
        self.state.update(loop=self.state["loop"] + 1, stage=0, candidates=[])
        self._live = None
        self._save_between_stages()

    # ------------------------------------------------------------- checkpoints

    def _snapshot(self) -> dict[str, Any]:
        """The runner's state as of now: live candidates and the time spent so far."""
        state = dict(self.state)
        if self._live is not None:
            state["candidates"] = [c.record() for c in self._live]
        if self._stage_started is not None:
            state["elapsed_s"] += time.perf_counter() - self._stage_started
        return state

    def _extras(self, position: str, **more: Any) -> dict[str, Any]:
        return {"version": CHECKPOINT_VERSION, "position": position, "runner": self._snapshot(),
                "rng": capture_rng_states(), "user_callbacks": callback_states(self.user_callbacks), **more}

    def _save_between_stages(self) -> None:
        if self.checkpointer is None:
            return
        self.checkpointer.at_safe_point(lambda: self.checkpointer.save({CHECKPOINT_KEY: self._extras(BEFORE_STAGE)}),
                                        always=True)

    def _quantization_progress(self, quantizer: PostPhaseQuantization) -> None:
        if self.checkpointer is None:
            return
        # The stage's iterations are added to the global count when its fit returns; a
        # search resumed without a Trainer has added them already.
        steps = self._trainer.global_step if self._trainer is not None else 0
        self.checkpointer.at_safe_point(lambda: self.checkpointer.save({CHECKPOINT_KEY: self._extras(
            IN_QUANTIZATION, quantization=quantizer.state_dict(), stage_steps=steps)}))
