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
from coolchic_pl.io import FrameData, FrameFormatError, count_yuv_frames, read_frame, write_yuv, yuv_file_name
from coolchic_pl.io.frame import atomic_write
from coolchic_pl.metrics import yuv_psnrs
from coolchic_pl.model.architecture import (
    ARCHITECTURES, AUTO_MOTION_ARCHITECTURES, AUTO_RESIDUE_ARCHITECTURES, MOTION_ARCHITECTURES, CoolChicArchitecture,
)
from coolchic_pl.model.coolchic import NETWORK_NAMES, CoolChic, SharedNetworks
from coolchic_pl.model.interframe import MOTION_OUTPUTS, InterCoolChic, InterFrameParameters
from coolchic_pl.model.warp import global_translation, shift
from coolchic_pl.training.checkpoint import Checkpointer, StopReason
from coolchic_pl.training.module import CoolChicModule
from coolchic_pl.training.rng import derive_seed
from coolchic_pl.training.runner import PhaseRunner
from coolchic_pl.video.bitstream import (
    CoolChicStore, FrameHeader, SequenceHeader, decode_frame, decode_video, encode_frame, encode_video, to_444,
)
from coolchic_pl.video.motion import (
    FlowTargetModule, PredictionReport, decoded_motion_psnrs, estimate_motion, final_prediction_psnrs, flow_target,
    initial_report,
)
from coolchic_pl.video.policy import FrameSettings, resolve_settings, settings_row
from coolchic_pl.video.structure import CodedFrame, build_coding_structure

# The motion pre-training fits flows in pixels: its lambda is the frame's times this.
MOTION_PRETRAIN_LAMBDA_FACTOR = 20.0

StartKind = Literal["random", "flow", "warm", "reuse"]


@dataclass(frozen=True)
class CandidateStart:
    """How one warm-up candidate of an inter frame starts: its decoders, and random
    networks, the pre-trained motion, or the networks of frame ``source``."""

    residue: str
    motion: str
    kind: StartKind
    source: int | None = None

    def label(self) -> str:
        origin = f" of frame {self.source}" if self.source is not None else ""
        return f"{self.residue}/{self.motion} {self.kind}{origin}"

    @property
    def motion_key(self) -> str:
        """What its motion starts from: candidates with the same key share one pre-training."""
        return f"{self.kind}_{self.motion}" if self.source is None else f"{self.kind}_{self.source}"


def _copy_of(coolchic: CoolChic, state: dict[str, Tensor]) -> CoolChic:
    """A fresh Cool-Chic like ``coolchic`` (networks shared the same way) holding ``state``."""
    copy = CoolChic(coolchic.image_size, coolchic.architecture, coolchic.n_outputs)
    if coolchic.shared_networks is not None:
        copy.share_networks(coolchic, coolchic.shared_networks)
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
              "warp", "tools")
    rows = []
    policy = config.frame_policy()
    for frame in structure:
        settings = resolve_settings(frame, policy)
        preset = frame_preset(config, frame, settings)
        if frame.frame_type == "I":
            decoders = settings.arch or config.arch or "hop"
            warp = tools = "-"
        else:
            decoders = f"{settings.arch or 'lop'}/{settings.motion_arch or 'lop'}"
            warp = str(settings.warp_filter_size)
            tools = ",".join(name for name, on in (("flow", settings.motion_init == "flow"),
                                                   ("warm", settings.warm_start),
                                                   ("reuse", settings.reuse_networks != "never")) if on) or "-"
        pretrain = preset.motion_pretrain.max_itr if preset.motion_pretrain is not None else 0
        warm = preset.warmup.phases[0].training_phase.max_itr if preset.warmup.phases else 0
        rows.append((str(frame.coding), str(frame.display), frame.frame_type, str(frame.depth),
                     ",".join(map(str, frame.refs)) or "-", f"{settings.lmbda(config.lmbda, frame.depth):.4g}",
                     decoders, f"{preset.all_phases[0].max_itr}/{warm}/{pretrain}",
                     f"{settings.lr or config.start_lr:g}", warp, tools))
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


class VideoEncoder:
    def __init__(self, config: FitConfig, structure: list[CodedFrame], run_dir: Path, checkpointer: Checkpointer,
                 loggers: list[Logger], callbacks: list[pl.Callback], stream: TextIO, device: str):
        self.config, self.structure, self.run_dir, self.checkpointer = config, structure, run_dir, checkpointer
        self.loggers, self.user_callbacks, self.stream, self.device = loggers, callbacks, stream, device
        self.policy = config.frame_policy()
        first = read_frame(config.input, config.frame_index)
        self.sequence = SequenceHeader(first.height, first.width, first.color_space, first.bitdepth, config.n_frames)
        self.decoded: dict[int, FrameData] = {}
        self.store: CoolChicStore = {}
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
        Cool-Chics later frames may share), its decoded planes (the references of the later
        frames, as the first run had them) and its results."""
        record = (folder / "frame.bin").read_bytes()
        decode_frame(record, self.sequence, self.decoded, self.store)
        saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        load_callback_states(self.user_callbacks, saved.get("user_callbacks", {}))
        planes = torch.load(folder / "decoded.pt", map_location="cpu", weights_only=True)
        self.decoded[frame.display] = FrameData(tuple(planes), self.sequence.bitdepth, self.sequence.color_space)
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
        if frame.frame_type == "I":
            inter, motion, starts, report = None, {"seconds": 0.0, "iterations": 0}, None, None
            runner = PhaseRunner(target, config.resolved_architectures(settings.arch), preset, lmbda,
                                 n_loops=config.n_loops, **common)
        else:
            inter, motion, starts, report, factory = self._prepare_inter(frame, folder, settings, target, lmbda, preset)
            preset = with_candidates(preset, len(starts))
            runner = PhaseRunner(target, residue_architecture(starts[0].residue), preset, lmbda, module_factory=factory,
                                 rank_with_network_bits=True, **common)
        print(f"frame {frame.display} ({frame.frame_type}, coding {frame.coding}, depth {frame.depth}, "
              f"lambda {lmbda:.4g})\n{preset.table()}", file=self.stream)
        if starts is not None:
            print("warm-up candidates: " + "; ".join(f"c{i} {s.label()}" for i, s in enumerate(starts)),
                  file=self.stream)
        checkpoint = checkpointer.load()
        if checkpoint is not None:
            print(f"resuming frame {frame.display} at {runner.describe(checkpoint)}", file=self.stream)
        module, metrics = runner.run(checkpoint)
        winner = starts[runner.state["best"]["candidate_id"] % len(starts)] if starts is not None else None
        seconds = {"motion": motion["seconds"], **runner.seconds}
        self._finish(frame, folder, settings, target, module, metrics, inter, lmbda, winner, report,
                     runner.global_iteration + motion["iterations"], seconds, time.perf_counter() - started)
        checkpointer.remove()

    def _prepare_inter(self, frame: CodedFrame, folder: Path, settings: FrameSettings, target: FrameData,
                       lmbda: float, preset: Preset
                       ) -> tuple[InterFrameParameters, dict, list[CandidateStart], PredictionReport, Callable]:
        """References, global translations, flows, motion pre-training and the warm-up
        candidates of a P or B frame; the last item builds candidate ``c``'s module."""
        started = time.perf_counter()
        target_444 = to_444(target)
        references = [to_444(self.decoded[r]) for r in frame.refs]
        use_flow = settings.motion_init == "flow" and preset.motion_pretrain is not None
        if use_flow:
            translations, flows = (tuple(parts) for parts in zip(*(estimate_motion(target_444, r) for r in references)))
        else:
            translations, flows = tuple(global_translation(r, target_444) for r in references), None
        inter = InterFrameParameters(translations, settings.warp_filter_size)
        shifted = [shift(r, dx, dy) for r, (dx, dy) in zip(references, translations)]
        report = initial_report(frame.refs, target_444, references, translations, flows and list(flows),
                                inter.warp_filter_size)
        starts = self._candidate_starts(frame, settings, residue_names(settings), motion_names(settings), use_flow)
        size = (target.height, target.width)
        n_outputs = MOTION_OUTPUTS[len(frame.refs)]
        motions: dict[str, CoolChic] = {}
        iterations = 0
        for index, start in enumerate(starts):
            if start.kind == "random" or start.motion_key in motions:
                continue
            with torch.random.fork_rng(devices=[]):  # its own stream: a resumed encode draws the same networks
                torch.manual_seed(derive_seed(self.config.seed, frame.display, index))
                motion = CoolChic(size, MOTION_ARCHITECTURES[start.motion], n_outputs)
            if start.kind in ("warm", "reuse"):
                self._take_networks(motion, "motion", start)
            if flows is not None:
                iterations += self._pretrain_motion(frame, folder, flow_target(flows), motion, start.motion_key,
                                                    preset, lmbda)
                report.add(f"pretrained {start.motion_key}",
                           decoded_motion_psnrs(motion, target_444, shifted, inter.warp_filter_size))
            motions[start.motion_key] = motion

        def factory(candidate: int) -> CoolChicModule:
            start = starts[candidate % len(starts)]  # a preset with more candidates starts some twice
            decoder = InterCoolChic(size, references, inter, residue_architecture(start.residue),
                                    MOTION_ARCHITECTURES[start.motion])
            if start.kind in ("warm", "reuse"):
                self._take_networks(decoder.residue, "residue", start)
                self._take_networks(decoder.motion, "motion", start)
            if start.kind != "random":
                decoder.motion.load_state_dict(motions[start.motion_key].state_dict())
            return CoolChicModule(target, decoder, lmbda)

        motion = {"seconds": time.perf_counter() - started, "iterations": iterations}
        return inter, motion, starts, report, factory

    def _candidate_starts(self, frame: CodedFrame, settings: FrameSettings, residues: tuple[str, ...],
                          motions: tuple[str, ...], use_flow: bool) -> list[CandidateStart]:
        """Each residue decoder with the first motion decoder and each motion decoder with
        the first residue one, from random networks and from the pre-trained motion; then
        the warm start and the reuse of the previous inter frame of the same type (alone
        when the policy reuses its networks always)."""
        pairs = [(residues[0], m) for m in motions] + [(r, motions[0]) for r in residues[1:]]
        starts = []
        for residue, motion in pairs:
            starts.append(CandidateStart(residue, motion, "random"))
            if use_flow:
                starts.append(CandidateStart(residue, motion, "flow"))
        source = self._previous_inter(frame)
        if source is None:
            return starts
        reuse = CandidateStart(source["residue_arch"], source["motion_arch"], "reuse", source["display"])
        if settings.reuse_networks == "always":
            return [reuse]
        if settings.warm_start:
            starts.append(CandidateStart(source["residue_arch"], source["motion_arch"], "warm", source["display"]))
        if settings.reuse_networks == "compete":
            starts.append(reuse)
        return starts

    def _previous_inter(self, frame: CodedFrame) -> dict[str, Any] | None:
        """Results of the last frame coded before ``frame`` with the same type (P or B)."""
        earlier = [self.results[f.display] for f in self.structure
                   if f.coding < frame.coding and f.frame_type == frame.frame_type]
        return earlier[-1] if earlier else None

    def _take_networks(self, coolchic: CoolChic, role: str, start: CandidateStart) -> None:
        """A warm start loads the trained (quantised) networks of frame ``start.source``;
        a reuse shares them, frozen, as the decoder will."""
        source = self.store[start.source][role]
        if start.kind == "reuse":
            coolchic.share_networks(source.model, SharedNetworks(start.source, source.network_quantization))
            return
        with torch.no_grad():
            for name in NETWORK_NAMES:
                getattr(coolchic, name).load_state_dict(getattr(source.model, name).state_dict())

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
                module: CoolChicModule, metrics: dict[str, float], inter: InterFrameParameters | None, lmbda: float,
                winner: CandidateStart | None, report: PredictionReport | None, iterations: int,
                seconds: dict[str, float], total_seconds: float) -> None:
        """Code the frame, decode the record back (it must give the encoder's own
        reconstruction, which later frames reference), save what a resume needs."""
        module.cpu()
        bitstream_started = time.perf_counter()
        record, part_bytes = encode_frame(FrameHeader(frame.display, frame.refs, inter), module.coolchic,
                                          module.quantization, self.sequence.bitdepth)
        _, decoded = decode_frame(record, self.sequence, self.decoded, self.store)
        if not all(torch.equal(a, b) for a, b in zip(decoded.planes, module.decode())):
            raise RuntimeError(f"frame {frame.display}: decoding its record does not reproduce the encoder's "
                               "reconstruction")
        seconds["bitstream"] = time.perf_counter() - bitstream_started
        n_pixels = target.n_pixels
        coolchics = {"residue": module.coolchic} if inter is None else module.coolchic.coolchics
        network_bits = {role: sum(q.rate_bits for k, q in module.quantization.items()
                                  if inter is None or k.startswith(f"{role}.")) for role in coolchics}
        result = {
            "display": frame.display, "coding": frame.coding, "type": frame.frame_type, "depth": frame.depth,
            "refs": list(frame.refs), "lmbda": lmbda, **yuv_psnrs(decoded.planes, target.planes),
            "bpp": 8 * len(record) / n_pixels, "bits": 8 * len(record),
            **{f"bits_{name}": 8 * count for name, count in part_bytes.items()},
            **{f"bits_network_{name}": bits for name, bits in network_bits.items()},
            "networks": {role: ("own" if c.shared_networks is None else f"frame {c.shared_networks.frame}")
                         for role, c in coolchics.items()},
            "bpp_estimated": metrics["bpp"], "loss": metrics["loss"],
            "translations": [list(t) for t in inter.translations] if inter else [],
            "mac_per_pixel": round(module.coolchic.mac_per_pixel(), 1),
            "n_iterations": iterations, "encoding_time_s": round(total_seconds, 2),
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "policy": settings_row(settings),
        }
        if winner is not None:
            report.add("final", final_prediction_psnrs(module.coolchic, to_444(target)))
            result.update(residue_arch=winner.residue, motion_arch=winner.motion, start=winner.label(),
                          prediction_psnr_y=report.as_dict())
            self._log_prediction(frame, report)
        with atomic_write(folder / "frame.bin") as tmp:
            tmp.write_bytes(record)
        with atomic_write(folder / "decoded.pt") as tmp:
            torch.save(list(decoded.planes), tmp)
        with atomic_write(folder / "model.pt") as tmp:
            torch.save({"lmbda": lmbda, "inter": None if inter is None else inter.translations,
                        "user_callbacks": callback_states(self.user_callbacks), **module.codec_state()}, tmp)
        write_text(folder / RESULTS_FILE, json.dumps(result, indent=2) + "\n")
        self.decoded[frame.display] = decoded
        self.records.append(record)
        self.results[frame.display] = result
        start = f", {winner.label()}" if winner is not None else ""
        print(f"frame {frame.display} ({frame.frame_type}{start}): {result['psnr_yuv']:.3f} dB YUV at "
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
        frames = [self.decoded[i] for i in range(self.sequence.n_frames)]
        with atomic_write(path) as tmp:
            tmp.write_bytes(data)
            _, check = decode_video(data)
            if not all(torch.equal(a, b) for x, y in zip(check, frames) for a, b in zip(x.planes, y.planes)):
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
                for display, frame in encoder.decoded.items():
                    logger.experiment.add_image("decoded/luma", frame.planes[0][0], display)
    finally:
        close_loggers(loggers)
    results = encoder.write_outputs()
    print(f"{run_dir}: {results['n_frames']} frames, {results['psnr_yuv']:.3f} dB YUV at {results['bpp']:.4f} bpp "
          f"in {results['bitstream']} ({results['n_iterations']} iterations, {results['encoding_time_s']:.1f} s)",
          file=stream)
    return results
