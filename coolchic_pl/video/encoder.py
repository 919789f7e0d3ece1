"""The video encode job: every frame of a sequence in coding order, one .cool file.

Each frame is an encode of its own, run by the same :class:`PhaseRunner` as an image:
an I frame trains a CoolChic, a P or B frame an :class:`InterCoolChic` over references
that are the encoder's own decoded frames, i.e. exactly what the decoder will rebuild.
The coding policy (:mod:`coolchic_pl.video.policy`) gives each frame its lambda, decoders,
iterations and tools. The warm-up of an inter frame is where its options compete, ranked
on their RD loss with their network rate: each pair of residue and motion decoders
starting from random networks and from the pre-trained motion, and, when the policy
allows, one starting from the networks of the previous inter frame of the same type
("warm") and one reusing that frame's quantised networks as they are, frozen, so that
the frame sends no networks at all ("reuse").

Each frame works in ``<run>/frame_<display>/`` (its checkpoint while it trains, then its
coded record, decoded planes and results), so an interrupted sequence resumes at the
frame and stage where it stopped: finished frames are read back, the current one resumes
from its checkpoint.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal, TextIO

import numpy as np
import torch
import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor

from coolchic_pl.config import (
    INTER_PRESETS, FitConfig, Preset, Warmup, WarmupPhase, dump_config, inter_budgets, with_warmup_iterations,
)
from coolchic_pl.encode import (
    CHECKPOINT_FILE, RESULTS_FILE, close_loggers, prepare_run_folder, resolve_device, run_checkpointer, run_folder,
    run_loggers, user_callbacks, write_text,
)
from coolchic_pl.extensions import callback_states, load_callback_states
from coolchic_pl.fixedpoint.modules import coolchic_module, reference_tensor
from coolchic_pl.io import FrameData, FrameFormatError, count_yuv_frames, read_frame, write_yuv, yuv_file_name
from coolchic_pl.io.frame import atomic_write
from coolchic_pl.metrics import yuv_psnrs
from coolchic_pl.model.architecture import (
    ARCHITECTURES, AUTO_MOTION_ARCHITECTURES, AUTO_RESIDUE_ARCHITECTURES, MOTION_ARCHITECTURES, CoolChicArchitecture,
)
from coolchic_pl.model.coolchic import NETWORK_NAMES, CoolChic, NetworkSource
from coolchic_pl.model.interframe import InterCoolChic
from coolchic_pl.model.interparams import (
    FLOW_ACCURACY, MOTION_OUTPUTS, RESIDUE_OUTPUTS, InterFrameParameters, MotionModel,
)
from coolchic_pl.model.warp import global_translation, shift
from coolchic_pl.nnquant import ModuleQuantization
from coolchic_pl.training.checkpoint import Checkpointer, StopReason
from coolchic_pl.training.loss import mse
from coolchic_pl.training.module import CoolChicModule
from coolchic_pl.training.rng import derive_seed
from coolchic_pl.training.runner import PhaseRunner
from coolchic_pl.video.bitstream import encode_frame, encode_video, to_444
from coolchic_pl.video.decoder import (
    DecodedSequence, FrameHeader, SequenceHeader, base_flows, decode_frame, decode_video,
)
from coolchic_pl.video.motion import (
    FlowTargetModule, PredictionReport, decoded_motion_psnrs, estimate_motion, final_prediction_psnrs, fit_affine,
    flow_target, initial_report, motion_predictions,
)
from coolchic_pl.video.policy import FrameSettings, resolve_settings, settings_row
from coolchic_pl.video.structure import CodedFrame, build_coding_structure

# The motion pre-training fits flows in pixels: its lambda is the frame's times this.
MOTION_PRETRAIN_LAMBDA_FACTOR = 20.0

StartKind = Literal["random", "flow", "warm", "reuse"]


@dataclass(frozen=True)
class CandidateStart:
    """How one warm-up candidate of an inter frame starts: its decoders (None for a
    Cool-Chic the frame does not code), and random networks, the pre-trained motion, or the
    networks of the earlier frames its networks are predicted from ("warm": trained from
    there, "reuse": taken as they are, frozen)."""

    residue: str | None
    motion: str | None
    kind: StartKind

    @property
    def mode(self) -> str:
        """Which Cool-Chics it codes: motion+residue, motion or residue."""
        return "+".join(role for role, arch in (("motion", self.motion), ("residue", self.residue)) if arch)

    def label(self) -> str:
        decoders = "/".join(arch for arch in (self.residue, self.motion) if arch)
        return f"{self.mode} {decoders} {self.kind}"

    @property
    def motion_key(self) -> str:
        """What its motion starts from: candidates with the same key share one pre-training."""
        return f"{self.kind}_{self.motion}"


@dataclass(frozen=True)
class MotionBase:
    """One motion model of an inter frame and the base flows it makes ([references, 2, H, W]
    int64, 1/64 pel, relative to the shifted references; None for translation only)."""

    model: MotionModel
    flows: Tensor | None

    @property
    def pixels(self) -> Tensor | None:
        return None if self.flows is None else self.flows.float() / FLOW_ACCURACY


def _copy_of(coolchic: CoolChic, state: dict[str, Tensor]) -> CoolChic:
    """A fresh Cool-Chic like ``coolchic`` (networks predicted the same way) holding ``state``."""
    copy = CoolChic(coolchic.image_size, coolchic.architecture, coolchic.n_outputs)
    if coolchic.network_source is not None:
        copy.predict_networks(coolchic.network_source, frozen=coolchic.networks_frozen, warm=False)
    copy.load_state_dict(state)
    return copy


def check_video_input(config: FitConfig) -> int:
    """Frames the input holds; one-line errors for what cannot be a video encode."""
    if Path(config.input).suffix.lower() != ".yuv":
        raise FrameFormatError(config.input, f"coding {config.n_frames} frames needs a raw .yuv sequence")
    available = count_yuv_frames(config.input)
    if config.frame_index + config.n_frames > available:
        raise FrameFormatError(config.input, f"{config.n_frames} frames from frame {config.frame_index} asked but "
                                             f"the file holds {available}")
    return available


def _decoder_names(name: str, auto: tuple[str, ...], known: dict[str, CoolChicArchitecture], role: str
                   ) -> tuple[str, ...]:
    names = auto if name == "auto" else (name,)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {role} decoder {unknown[0]!r}, expected one of {', '.join(known)} or auto")
    return names


def residue_names(settings: FrameSettings) -> tuple[str, ...]:
    return _decoder_names(settings.arch or "lop", AUTO_RESIDUE_ARCHITECTURES, ARCHITECTURES, "residue")


def motion_names(settings: FrameSettings) -> tuple[str, ...]:
    return _decoder_names(settings.motion_arch or "lop", AUTO_MOTION_ARCHITECTURES, MOTION_ARCHITECTURES, "motion")


def residue_architecture(name: str) -> CoolChicArchitecture:
    """A residue decoder: the named one, without an output range (a residue has no sample range)."""
    return replace(ARCHITECTURES[name], output_range=False)


def with_candidates(preset: Preset, n_candidates: int) -> Preset:
    """``preset`` whose first warm-up phase trains at least ``n_candidates`` candidates."""
    phases = list(preset.warmup.phases)
    if not phases or phases[0].candidates >= n_candidates:
        return preset
    phases[0] = WarmupPhase(n_candidates, phases[0].training_phase)
    return replace(preset, warmup=Warmup(phases))


def frame_table(structure: list[CodedFrame], config: FitConfig) -> str:
    """The structure with each frame's policy: lambda, decoders, iterations, lr, warp, tools."""
    header = ("coding", "display", "type", "depth", "refs", "lambda", "decoders", "itr main/warm/motion", "lr",
              "warp", "tools", "modes", "motion models")
    rows = []
    policy = config.frame_policy()
    for frame in structure:
        settings = resolve_settings(frame, policy)
        preset = frame_preset(config, frame, settings)
        if frame.frame_type == "I":
            decoders = settings.arch or config.arch or "hop"
            warp = tools = modes = models = "-"
        else:
            decoders = f"{settings.arch or 'lop'}/{settings.motion_arch or 'lop'}"
            warp = str(settings.warp_filter_size)
            tools = ",".join(name for name, on in (("flow", settings.motion_init == "flow"),
                                                   ("warm", settings.warm_start),
                                                   ("reuse", settings.reuse_networks != "never"),
                                                   ("predict", settings.network_prediction)) if on) or "-"
            modes, models = ",".join(settings.modes), ",".join(settings.motion_models)
        pretrain = preset.motion_pretrain.max_itr if preset.motion_pretrain is not None else 0
        warm = preset.warmup.phases[0].training_phase.max_itr if preset.warmup.phases else 0
        rows.append((str(frame.coding), str(frame.display), frame.frame_type, str(frame.depth),
                     ",".join(map(str, frame.refs)) or "-", f"{settings.lmbda(config.lmbda, frame.depth):.4g}",
                     decoders, f"{preset.all_phases[0].max_itr}/{warm}/{pretrain}",
                     f"{settings.lr or config.start_lr:g}", warp, tools, modes, models))
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def frame_preset(config: FitConfig, frame: CodedFrame, settings: FrameSettings) -> Preset:
    """The training schedule of one frame under its policy settings."""
    lr = settings.lr or config.start_lr
    lmbda = settings.lmbda(config.lmbda, frame.depth)
    if frame.frame_type == "I":
        preset = config.preset_object(settings.n_itr, lr, lmbda)
    else:
        name = config.inter_preset_name
        n_itr, pretrain = inter_budgets(name, frame.depth, frame.frame_type == "B", config.n_itr_inter,
                                        config.n_itr_pretrain_motion)
        preset = INTER_PRESETS[name](settings.n_itr or n_itr, lr, settings.n_itr_pretrain_motion or pretrain)
    return with_warmup_iterations(preset, settings.n_itr_warmup)


@dataclass
class _CodedFrame:
    """A frame coded one way: its module, record (and the bits of its parts), decoded planes
    and exact RD loss (MSE of the decoded planes + lambda x record bits per pixel)."""

    module: CoolChicModule
    record: bytes
    part_bits: dict[str, int]
    planes: tuple[Tensor, ...]
    loss: float
    bpp_estimated: float
    seconds: float
    mode: str = ""

    @classmethod
    def of(cls, frame: CodedFrame, module: CoolChicModule, metrics: dict[str, float] | None, bitdepth: int,
           mode: str = "") -> "_CodedFrame":
        started = time.perf_counter()
        module.cpu()
        decoder = module.coolchic
        inter = decoder.frame_parameters if isinstance(decoder, InterCoolChic) else None
        record, part_bits = encode_frame(FrameHeader(frame.display, frame.refs, inter), decoder, module.quantization,
                                         bitdepth)
        planes = module.decode()
        bpp = 8 * len(record) / module.n_pixels
        loss = mse(planes, module.target).item() + module.lmbda * bpp
        return cls(module, record, part_bits, planes, loss, metrics["bpp"] if metrics else bpp,
                   time.perf_counter() - started, mode)


@dataclass
class InterFramePlan:
    """What a P or B frame tries: its trained candidates (on the motion model ``base_name``
    that predicted best), their starts and the factory of their modules, the frame coded by
    each motion model alone (``direct``), the RD cost of every mode tried so far, and the
    prediction report."""

    base_name: str
    starts: list[CandidateStart]
    factory: Callable[[int], CoolChicModule]
    report: PredictionReport
    direct: dict[str, _CodedFrame]
    costs: dict[str, float]
    iterations: int
    seconds: float

    @property
    def best_direct(self) -> str | None:
        return min(self.direct, key=lambda name: self.direct[name].loss) if self.direct else None


def _warmup_costs(runner: PhaseRunner, plan: InterFramePlan) -> dict[str, float]:
    """The ranking loss of every candidate of the first warm-up phase, by mode and start."""
    ranking = runner.state.get("ranking", {})
    return {f"{plan.base_name}+{plan.starts[int(key.split(':')[1]) % len(plan.starts)].label()} (warm-up)": loss
            for key, loss in ranking.items() if key.startswith("0:")}


def _prediction_mse(target: Tensor, shifted_references: list[Tensor], base: MotionBase, filter_size: int) -> float:
    """MSE (4:4:4) of the prediction a motion model gives alone (an even blend for B frames)."""
    predictions = motion_predictions(None, shifted_references, filter_size, base.pixels)
    prediction = sum(predictions) / len(predictions)
    return torch.mean((prediction.clamp(0, 1) - target) ** 2).item()


def _network_coding(coolchic: CoolChic, quantization: dict[str, ModuleQuantization], prefix: str) -> dict[str, Any]:
    """Where a Cool-Chic's networks come from (the frame they are predicted from, if any) and
    how each is coded: own, delta (differences from the predicted network) or same."""
    codings = {**coolchic.frozen_quantization(), **{k[len(prefix):]: q for k, q in quantization.items()
                                                     if k.startswith(prefix)}}
    source = coolchic.network_source
    return {"from": None if source is None else source.frame,
            **{name: codings[name].coding for name in NETWORK_NAMES if name in codings}}


class VideoEncoder:
    def __init__(self, config: FitConfig, structure: list[CodedFrame], run_dir: Path, checkpointer: Checkpointer,
                 loggers: list[Logger], callbacks: list[pl.Callback], stream: TextIO, device: str):
        self.config, self.structure, self.run_dir, self.checkpointer = config, structure, run_dir, checkpointer
        self.loggers, self.user_callbacks, self.stream, self.device = loggers, callbacks, stream, device
        self.policy = config.frame_policy()
        first = read_frame(config.input, config.frame_index)
        self.sequence = SequenceHeader(first.height, first.width, first.color_space, first.bitdepth, config.n_frames)
        self.state = DecodedSequence()
        self.records: list[bytes] = []
        self.results: dict[int, dict[str, Any]] = {}

    def frame_dir(self, frame: CodedFrame) -> Path:
        return self.run_dir / f"frame_{frame.display:03d}"

    def run(self) -> None:
        for frame in self.structure:
            folder = self.frame_dir(frame)
            if (folder / RESULTS_FILE).exists():
                self._load_finished(frame, folder)
            else:
                folder.mkdir(exist_ok=True)
                self._encode(frame, folder)

    def _load_finished(self, frame: CodedFrame, folder: Path) -> None:
        """A frame coded before an interruption: its record (decoded again for the
        Cool-Chics and motion later frames may predict from), its decoded planes (the
        references of the later frames, as the first run had them) and its results."""
        record = (folder / "frame.bin").read_bytes()
        decode_frame(record, self.sequence, self.state)
        saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        load_callback_states(self.user_callbacks, saved.get("user_callbacks", {}))
        planes = torch.load(folder / "decoded.pt", map_location="cpu", weights_only=True)
        self.state.frames[frame.display] = FrameData(tuple(planes), self.sequence.bitdepth,
                                                     self.sequence.color_space).to_samples()
        self.records.append(record)
        self.results[frame.display] = json.loads((folder / RESULTS_FILE).read_text())

    # ------------------------------------------------------------------ one frame

    def _encode(self, frame: CodedFrame, folder: Path) -> None:
        config = self.config
        settings = resolve_settings(frame, self.policy)
        target = read_frame(config.input, config.frame_index + frame.display)
        lmbda = settings.lmbda(config.lmbda, frame.depth)
        preset = frame_preset(config, frame, settings)
        checkpointer = self.checkpointer.moved_to(folder / CHECKPOINT_FILE)
        started = time.perf_counter()
        name_prefix = f"frame{frame.display:03d}/"
        common = dict(seed=config.seed, accelerator=self.device, loggers=self.loggers,
                      user_callbacks=self.user_callbacks, report_stream=self.stream, checkpointer=checkpointer,
                      name_prefix=name_prefix)
        inter, runner = None, None
        if frame.frame_type == "I":
            runner = PhaseRunner(target, config.resolved_architectures(settings.arch), preset, lmbda,
                                 n_loops=config.n_loops, **common)
        else:
            inter = self._prepare_inter(frame, folder, settings, target, lmbda, preset)
            preset = with_candidates(preset, len(inter.starts))
            if inter.starts:  # none when the policy allows the prediction alone only
                runner = PhaseRunner(target, residue_architecture(inter.starts[0].residue or "lop"), preset, lmbda,
                                     module_factory=inter.factory, rank_with_network_bits=True, **common)
        print(f"frame {frame.display} ({frame.frame_type}, coding {frame.coding}, depth {frame.depth}, "
              f"lambda {lmbda:.4g})\n{preset.table()}", file=self.stream)
        if inter is not None:
            print("warm-up candidates: " + ("; ".join(f"c{i} {s.label()}" for i, s in enumerate(inter.starts))
                                            or "none") + f"; base motion {inter.base_name}", file=self.stream)
        chosen = None if inter is None else inter.direct.get(inter.best_direct)
        seconds = {"motion": 0.0 if inter is None else inter.seconds}
        iterations = 0 if inter is None else inter.iterations
        winner = None
        if runner is not None:
            checkpoint = checkpointer.load()
            if checkpoint is not None:
                print(f"resuming frame {frame.display} at {runner.describe(checkpoint)}", file=self.stream)
            module, metrics = runner.run(checkpoint)
            seconds.update(runner.seconds)
            iterations += runner.global_iteration
            coded = _CodedFrame.of(frame, module, metrics, self.sequence.bitdepth)
            if inter is not None:
                winner = inter.starts[runner.state["best"]["candidate_id"] % len(inter.starts)]
                coded.mode = f"{inter.base_name}+{winner.mode}"
                inter.costs.update(_warmup_costs(runner, inter))
                inter.costs[coded.mode + " (final)"] = coded.loss
            if chosen is None or coded.loss <= chosen.loss:
                chosen = coded
            else:
                winner = None
        self._finish(frame, folder, settings, target, chosen, inter, lmbda, winner, iterations, seconds,
                     time.perf_counter() - started)
        checkpointer.remove()

    def _prepare_inter(self, frame: CodedFrame, folder: Path, settings: FrameSettings, target: FrameData,
                       lmbda: float, preset: Preset) -> "InterFramePlan":
        """References, global translations, flows, motion models, the frame coded by each
        model alone (no Cool-Chic), motion pre-training and the warm-up candidates of a P or
        B frame."""
        started = time.perf_counter()
        target_444 = to_444(target)
        references = [reference_tensor(self.state.frames[r]) for r in frame.refs]
        use_flow = settings.motion_init == "flow" and preset.motion_pretrain is not None
        if use_flow or "affine" in settings.motion_models:
            translations, flows = (tuple(parts) for parts in zip(*(estimate_motion(target_444, r) for r in references)))
        else:
            translations, flows = tuple(global_translation(r, target_444) for r in references), None
        shifted = [shift(r, dx, dy) for r, (dx, dy) in zip(references, translations)]
        report = initial_report(frame.refs, target_444, references, translations, flows and list(flows),
                                settings.warp_filter_size)
        bases = self._motion_bases(frame, settings, translations, flows, target_444, shifted)
        for name, base in bases.items():
            if name != "translation":
                report.add(name, decoded_motion_psnrs(None, target_444, shifted, settings.warp_filter_size,
                                                      base.pixels))
        base_name = min(bases, key=lambda name: _prediction_mse(target_444, shifted, bases[name],
                                                                settings.warp_filter_size))
        size = (target.height, target.width)
        direct = {}
        if "prediction" in settings.modes:
            for name, base in bases.items():
                parameters = InterFrameParameters(translations, settings.warp_filter_size, base.model)
                decoder = InterCoolChic(size, references, parameters, None, None, base.flows)
                direct[name] = _CodedFrame.of(frame, CoolChicModule(target, decoder, lmbda), None,
                                              self.sequence.bitdepth, mode=name)
        base = bases[base_name]
        inter = InterFrameParameters(translations, settings.warp_filter_size, base.model)
        starts = self._candidate_starts(frame, settings, residue_names(settings), motion_names(settings), use_flow)
        n_outputs = MOTION_OUTPUTS[len(frame.refs)]
        motions: dict[str, CoolChic] = {}
        iterations = 0
        targets = None  # what the motion Cool-Chic is pre-trained to output: the flows' difference from the base
        if use_flow:
            targets = list(flows) if base.flows is None else [f - b for f, b in zip(flows, base.pixels.split(1))]
        for index, start in enumerate(starts):
            if start.motion is None or start.kind == "random" or start.motion_key in motions:
                continue
            with torch.random.fork_rng(devices=[]):  # its own stream: a resumed encode draws the same networks
                torch.manual_seed(derive_seed(self.config.seed, frame.display, index))
                motion = CoolChic(size, MOTION_ARCHITECTURES[start.motion], n_outputs)
            self._predict_networks(frame, motion, "motion", settings, start.kind)
            if targets is not None:
                iterations += self._pretrain_motion(frame, folder, flow_target(targets), motion, start.motion_key,
                                                    preset, lmbda)
                report.add(f"pretrained {start.motion_key}",
                           decoded_motion_psnrs(motion, target_444, shifted, inter.warp_filter_size, base.pixels))
            motions[start.motion_key] = motion

        def factory(candidate: int) -> CoolChicModule:
            start = starts[candidate % len(starts)]  # a preset with more candidates starts some twice
            decoder = InterCoolChic(size, references, inter, start.residue and residue_architecture(start.residue),
                                    start.motion and MOTION_ARCHITECTURES[start.motion], base.flows)
            for role, coolchic in decoder.coolchics.items():
                self._predict_networks(frame, coolchic, role, settings, start.kind)
            if start.motion is not None and start.kind != "random":
                decoder.motion.load_state_dict(motions[start.motion_key].state_dict())
            return CoolChicModule(target, decoder, lmbda)

        costs = {f"{name} (exact)": coded.loss for name, coded in direct.items()}
        return InterFramePlan(base_name, starts, factory, report, direct, costs, iterations,
                              time.perf_counter() - started)

    def _motion_bases(self, frame: CodedFrame, settings: FrameSettings, translations: tuple[tuple[int, int], ...],
                      flows: tuple[Tensor, ...] | None, target: Tensor,
                      shifted: list[Tensor]) -> dict[str, MotionBase]:
        """The motion models the policy allows: translation only, the affine model fitted to
        each reference's flow, and the motion derived from the earlier frame (and reference)
        whose decoded motion predicts this frame best."""
        def base(model: MotionModel) -> MotionBase:
            parameters = InterFrameParameters(translations, settings.warp_filter_size, model)
            size = (self.sequence.height, self.sequence.width)
            flows = base_flows(parameters, frame.display, frame.refs, size, self.state.motion)
            return MotionBase(model, None if flows is None else torch.from_numpy(flows))

        bases = {}
        if "translation" in settings.motion_models:
            bases["translation"] = base(MotionModel())
        if "affine" in settings.motion_models and flows is not None:
            bases["affine"] = base(MotionModel("affine", affine=tuple(fit_affine(f) for f in flows)))
        if "derived" in settings.motion_models and self.state.motion:
            derived = [base(MotionModel("derived", source=(source, slot)))
                       for source, motion in self.state.motion.items() for slot in range(len(motion.refs))]
            bases["derived"] = min(derived, key=lambda b: _prediction_mse(target, shifted, b,
                                                                          settings.warp_filter_size))
        if not bases:  # a model that cannot be built here (no flow, no earlier motion): translation
            bases["translation"] = base(MotionModel())
        return bases

    def _candidate_starts(self, frame: CodedFrame, settings: FrameSettings, residues: tuple[str, ...],
                          motions: tuple[str, ...], use_flow: bool) -> list[CandidateStart]:
        """For the motion+residue mode, each residue decoder with the first motion decoder and
        each motion decoder with the first residue one, from random networks and from the
        pre-trained motion, or, where the policy warm-starts and an earlier inter frame has
        networks, warm-started (the random and flow starts never won such a frame in 31
        measured B frames of BQSquare and cars); then the reuse of earlier networks (alone
        when the policy reuses them always and earlier frames have networks of both
        decoders). For the motion mode, each motion decoder from the pre-trained motion
        (random without a flow); for the residue mode, each residue decoder from random
        networks; both warm-started instead under the same condition."""
        modes = settings.modes
        reuse = CandidateStart(residues[0], motions[0], "reuse")
        reusable = settings.reuse_networks != "never" and self._reusable(frame, reuse)
        if settings.reuse_networks == "always" and reusable:
            return [reuse]
        starts = []
        warm = settings.warm_start and self._has_earlier_inter(frame)
        if "motion+residue" in modes:
            pairs = [(residues[0], m) for m in motions] + [(r, motions[0]) for r in residues[1:]]
            kinds = ("warm",) if warm else ("random", "flow") if use_flow else ("random",)
            starts += [CandidateStart(residue, motion, kind) for residue, motion in pairs for kind in kinds]
            if reusable:
                starts.append(reuse)
        if "motion" in modes:
            starts += [CandidateStart(None, m, "warm" if warm else "flow" if use_flow else "random") for m in motions]
        if "residue" in modes:
            starts += [CandidateStart(r, None, "warm" if warm else "random") for r in residues]
        return starts

    def _has_earlier_inter(self, frame: CodedFrame) -> bool:
        return any(f.coding < frame.coding and f.frame_type != "I" for f in self.structure)

    def _decoder_architectures(self, frame: CodedFrame, start: CandidateStart) -> dict[str, tuple]:
        """(architecture, outputs) of each Cool-Chic a start codes, by role."""
        size = (self.sequence.height, self.sequence.width)
        decoders = {"residue": start.residue and (residue_architecture(start.residue), RESIDUE_OUTPUTS),
                    "motion": start.motion and (MOTION_ARCHITECTURES[start.motion], MOTION_OUTPUTS[len(frame.refs)])}
        return {role: (arch.for_image(size), outputs) for role, (arch, outputs) in
                ((r, d) for r, d in decoders.items() if d)}

    def _reusable(self, frame: CodedFrame, start: CandidateStart) -> bool:
        """Whether earlier frames have every network of the start's decoders to reuse."""
        return all(self._network_source(frame, role, *decoder, exact=True) is not None
                   for role, decoder in self._decoder_architectures(frame, start).items())

    def _network_source(self, frame: CodedFrame, role: str, architecture: CoolChicArchitecture, n_outputs: int,
                        exact: bool = False) -> NetworkSource | None:
        """The Cool-Chic of the same role (an I frame's is a residue's) of the last coded frame
        with one of the same architecture and outputs (all its networks can be predicted),
        else, unless ``exact``, of the last coded frame (those of its networks of the same
        shapes can)."""
        earlier = sorted((f for f in self.structure if f.coding < frame.coding), key=lambda f: f.coding, reverse=True)
        candidates = [(f.display, self.state.coolchics[f.display][role]) for f in earlier
                      if role in self.state.coolchics.get(f.display, {})]
        bitdepth = self.sequence.bitdepth
        for display, part in candidates:
            if part.coolchic.architecture == architecture and part.coolchic.n_outputs == n_outputs:
                return NetworkSource(display, coolchic_module(part.coolchic, bitdepth), part.network_quantization)
        if candidates and not exact:
            display, part = candidates[0]
            return NetworkSource(display, coolchic_module(part.coolchic, bitdepth), part.network_quantization)
        return None

    def _predict_networks(self, frame: CodedFrame, coolchic: CoolChic, role: str, settings: FrameSettings,
                          kind: StartKind) -> None:
        """Give a candidate's Cool-Chic the earlier networks its own may be predicted from:
        started from them for a warm start, taken as they are for a reuse. Without network
        prediction, a warm start only starts from them (its networks are coded as its own)."""
        if not settings.network_prediction and kind not in ("warm", "reuse"):
            return
        source = self._network_source(frame, role, coolchic.architecture, coolchic.n_outputs, exact=kind == "reuse")
        if source is None:
            return
        if kind == "warm" and not settings.network_prediction:
            coolchic.start_networks_from(source)
        else:
            coolchic.predict_networks(source, frozen=kind == "reuse", warm=kind == "warm")

    def _pretrain_motion(self, frame: CodedFrame, folder: Path, flow: Tensor, motion: CoolChic, key: str,
                         preset: Preset, lmbda: float) -> int:
        """Fit ``motion`` (in place) to the estimated flows and a zero raw beta for a B frame,
        from the networks it has (random, or those of an earlier frame, frozen when shared);
        returns the iterations it took. Saved, so that a resumed encode does it once."""
        saved = folder / f"motion_pretrain_{key}.pt"
        if not saved.exists():
            pretrain_lambda = MOTION_PRETRAIN_LAMBDA_FACTOR * lmbda
            initial = {k: v.clone() for k, v in motion.state_dict().items()}
            runner = PhaseRunner(
                FrameData((flow,), 8, "yuv444"), motion.architecture,
                Preset("motion_pretrain", [preset.motion_pretrain], transmitted=False), pretrain_lambda,
                seed=self.config.seed, accelerator=self.device, report_stream=self.stream,
                user_callbacks=self.user_callbacks,
                checkpointer=self.checkpointer.moved_to(folder / f"motion_pretrain_{key}.ckpt"),
                module_factory=lambda _: FlowTargetModule(flow, _copy_of(motion, initial), pretrain_lambda),
                name_prefix=f"frame{frame.display:03d}/motion_pretrain_{key}/")
            module, _ = runner.run(runner.checkpointer.load())
            state = {"motion": {k: v.detach().cpu() for k, v in module.coolchic.state_dict().items()},
                     "iterations": runner.global_iteration, "user_callbacks": callback_states(self.user_callbacks)}
            with atomic_write(saved) as tmp:
                torch.save(state, tmp)
            runner.checkpointer.remove()
        state = torch.load(saved, map_location="cpu", weights_only=True)
        motion.load_state_dict(state["motion"])
        load_callback_states(self.user_callbacks, state.get("user_callbacks", {}))
        return state["iterations"]

    def _finish(self, frame: CodedFrame, folder: Path, settings: FrameSettings, target: FrameData,
                chosen: "_CodedFrame", plan: "InterFramePlan | None", lmbda: float, winner: CandidateStart | None,
                iterations: int, seconds: dict[str, float], total_seconds: float) -> None:
        """Save the chosen coding of the frame after decoding its record back (it must give the
        encoder's own reconstruction, which later frames reference)."""
        module = chosen.module
        bitstream_started = time.perf_counter()
        decoded = decode_frame(chosen.record, self.sequence, self.state)[1].to_frame_data()
        if not all(torch.equal(a, b) for a, b in zip(decoded.planes, chosen.planes)):
            raise RuntimeError(f"frame {frame.display}: decoding its record does not reproduce the encoder's "
                               "reconstruction")
        seconds["bitstream"] = chosen.seconds + time.perf_counter() - bitstream_started
        n_pixels = target.n_pixels
        decoder = module.coolchic
        inter = None if plan is None else decoder.frame_parameters
        coolchics = {"residue": decoder} if inter is None else decoder.coolchics
        network_bits = {role: sum(q.rate_bits for k, q in module.quantization.items()
                                  if inter is None or k.startswith(f"{role}.")) for role in coolchics}
        result = {
            "display": frame.display, "coding": frame.coding, "type": frame.frame_type, "depth": frame.depth,
            "refs": list(frame.refs), "lmbda": lmbda, **yuv_psnrs(decoded.planes, target.planes),
            "bpp": 8 * len(chosen.record) / n_pixels, "bits": 8 * len(chosen.record),
            **{f"bits_{name}": count for name, count in chosen.part_bits.items()},
            **{f"bits_network_{name}": bits for name, bits in network_bits.items()},
            "networks": {role: _network_coding(c, module.quantization, "" if inter is None else f"{role}.")
                         for role, c in coolchics.items()},
            "bpp_estimated": chosen.bpp_estimated, "loss": chosen.loss,
            "translations": [list(t) for t in inter.translations] if inter else [],
            "mac_per_pixel": round(decoder.mac_per_pixel(), 1),
            "n_iterations": iterations, "encoding_time_s": round(total_seconds, 2),
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "policy": settings_row(settings),
        }
        if plan is not None:
            plan.report.add("final", final_prediction_psnrs(decoder, to_444(target)))
            result.update(mode=chosen.mode, motion_model=decoder.frame_parameters.motion_model.kind,
                          modes={name: round(loss, 8) for name, loss in plan.costs.items()},
                          prediction_psnr_y=plan.report.as_dict())
            if winner is not None:
                result.update(residue_arch=winner.residue, motion_arch=winner.motion, start=winner.label())
            self._log_prediction(frame, plan.report)
        with atomic_write(folder / "frame.bin") as tmp:
            tmp.write_bytes(chosen.record)
        with atomic_write(folder / "decoded.pt") as tmp:
            torch.save(list(decoded.planes), tmp)
        with atomic_write(folder / "model.pt") as tmp:
            torch.save({"lmbda": lmbda, "inter": None if inter is None else inter.translations,
                        "user_callbacks": callback_states(self.user_callbacks), **module.codec_state()}, tmp)
        write_text(folder / RESULTS_FILE, json.dumps(result, indent=2) + "\n")
        self.records.append(chosen.record)
        self.results[frame.display] = result
        how = f", {chosen.mode}" if plan is not None else ""
        print(f"frame {frame.display} ({frame.frame_type}{how}): {result['psnr_yuv']:.3f} dB YUV at "
              f"{result['bpp']:.4f} bpp ({iterations} iterations, {total_seconds:.1f} s)", file=self.stream)

    def _log_prediction(self, frame: CodedFrame, report: PredictionReport) -> None:
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                for source, values in report.as_dict().items():
                    logger.experiment.add_scalars(f"prediction_psnr_y/frame{frame.display:03d}/{source}", values,
                                                  frame.display)

    # --------------------------------------------------------------- the sequence

    def write_outputs(self) -> dict[str, Any]:
        """The sequence file (decoded back and checked), the decoded .yuv and the results."""
        stem = Path(self.config.input).stem
        data = encode_video(self.sequence, self.records)
        path = self.run_dir / f"{stem}.cool"
        frames = [self.state.frames[i] for i in range(self.sequence.n_frames)]
        with atomic_write(path) as tmp:
            tmp.write_bytes(data)
            _, check = decode_video(data)
            if not all(np.array_equal(a, b) for x, y in zip(check, frames) for a, b in zip(x.planes, y.planes)):
                raise RuntimeError(f"{path}: decoding the sequence does not reproduce the encoder's frames")
        write_yuv(frames, self.run_dir / yuv_file_name("decoded", frames[0]))
        per_frame = [self.results[i] for i in range(self.sequence.n_frames)]
        n_frames = len(per_frame)
        results = {
            "input": str(self.config.input), "frame_index": self.config.frame_index, "n_frames": n_frames,
            "height": self.sequence.height, "width": self.sequence.width,
            "color_space": self.sequence.color_space, "bitdepth": self.sequence.bitdepth,
            "preset": self.config.preset_name, "inter_preset": self.config.inter_preset_name,
            "coding_policy": self.config.coding_policy, "lmbda": self.config.lmbda,
            "intra_pos": self.config.intra_pos, "p_pos": self.config.p_pos, "bitstream": path.name,
            "bitstream_bytes": len(data),
            "bpp": 8 * len(data) / (self.sequence.height * self.sequence.width * n_frames),
            **{key: sum(f[key] for f in per_frame) / n_frames
               for key in ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv")},
            "n_iterations": sum(f["n_iterations"] for f in per_frame),
            "encoding_time_s": round(sum(f["encoding_time_s"] for f in per_frame), 2),
            "frames": per_frame,
        }
        columns = [k for k in per_frame[0] if not isinstance(per_frame[0][k], (list, dict))]
        write_text(self.run_dir / "results.tsv", "\t".join(columns) + "\n" +
                   "".join("\t".join(str(f.get(k, "")) for k in columns) + "\n" for f in per_frame))
        write_text(self.run_dir / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
        return results


def encode_video_sequence(config: FitConfig, stream: TextIO | None = None,
                          signal_reason: Callable[[], StopReason | None] = lambda: None) -> dict[str, Any]:
    """Run (or resume) the encode of ``config.n_frames`` frames; returns the sequence's
    results. Stops as :func:`coolchic_pl.encode.encode` does."""
    stream = sys.stderr if stream is None else stream
    check_video_input(config)
    device = resolve_device(config)
    structure = build_coding_structure(config.n_frames, config.intra_pos, config.p_pos)
    table = frame_table(structure, config)  # an impossible policy or preset fails here, before any work
    for frame in structure:
        settings = resolve_settings(frame, config.frame_policy())
        if frame.frame_type == "I":
            config.resolved_architectures(settings.arch)
        else:
            residue_names(settings), motion_names(settings)
    callbacks, loggers = user_callbacks(config), run_loggers(config, run_folder(config))  # so does a bad class_path
    run_dir = prepare_run_folder(config)
    if (run_dir / RESULTS_FILE).exists():
        print(f"{run_dir}: already encoded", file=stream)
        return json.loads((run_dir / RESULTS_FILE).read_text())
    checkpointer = run_checkpointer(config, run_dir, signal_reason)
    write_text(run_dir / "config.yaml", dump_config(config))
    write_text(run_dir / "structure.txt", table + "\n")
    print(table, file=stream)
    encoder = VideoEncoder(config, structure, run_dir, checkpointer, loggers, callbacks, stream, device)
    try:
        encoder.run()
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                for display, frame in encoder.state.frames.items():
                    logger.experiment.add_image("decoded/luma", frame.to_frame_data().planes[0][0], display)
    finally:
        close_loggers(loggers)
    results = encoder.write_outputs()
    print(f"{run_dir}: {results['n_frames']} frames, {results['psnr_yuv']:.3f} dB YUV at {results['bpp']:.4f} bpp "
          f"in {results['bitstream']} ({results['n_iterations']} iterations, {results['encoding_time_s']:.1f} s)",
          file=stream)
    return results
