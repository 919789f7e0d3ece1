"""The video encode job: every frame of a sequence in coding order, one .cool file.

Each frame is an encode of its own, run by the same :class:`PhaseRunner` as an image:
an I frame trains a CoolChic, a P or B frame an :class:`InterCoolChic` over references
that are the encoder's own decoded frames, i.e. exactly what the decoder will rebuild.
Each frame works in ``<run>/frame_<display>/`` (its checkpoint while it trains, then its
coded record, decoded planes and results), so an interrupted sequence resumes at the
frame and stage where it stopped: finished frames are read back, the current one resumes
from its checkpoint.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import torch
from lightning.pytorch.loggers import CSVLogger, Logger
from torch import Tensor

from coolchic_pl.config import FitConfig, Preset, dump_config
from coolchic_pl.encode import (
    CHECKPOINT_FILE, RESULTS_FILE, RunTensorBoardLogger, prepare_run_folder, resolve_device, run_checkpointer,
    write_text,
)
from coolchic_pl.io import FrameData, FrameFormatError, count_yuv_frames, read_frame, write_yuv, yuv_file_name
from coolchic_pl.io.frame import atomic_write
from coolchic_pl.metrics import yuv_psnrs
from coolchic_pl.model.architecture import ARCHITECTURES, MOTION_ARCHITECTURES, CoolChicArchitecture
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.model.interframe import MOTION_OUTPUTS, InterCoolChic, InterFrameParameters
from coolchic_pl.model.warp import global_translation, shift
from coolchic_pl.training.checkpoint import Checkpointer, StopReason
from coolchic_pl.training.module import CoolChicModule, FlowTargetModule
from coolchic_pl.training.runner import PhaseRunner
from coolchic_pl.video.bitstream import (
    FrameHeader, SequenceHeader, decode_frame, decode_video, encode_frame, encode_video, to_444,
)
from coolchic_pl.video.flow import estimate_flow
from coolchic_pl.video.structure import CodedFrame, build_coding_structure, frame_lambda, structure_table

# The motion pre-training fits flows, not pixels: its rate matters 20 times more.
MOTION_PRETRAIN_LAMBDA_FACTOR = 20.0


def check_video_input(config: FitConfig) -> int:
    """Frames the input holds; one-line errors for what cannot be a video encode."""
    if Path(config.input).suffix.lower() != ".yuv":
        raise FrameFormatError(config.input, f"coding {config.n_frames} frames needs a raw .yuv sequence")
    available = count_yuv_frames(config.input)
    if config.frame_index + config.n_frames > available:
        raise FrameFormatError(config.input, f"{config.n_frames} frames from frame {config.frame_index} asked but "
                                             f"the file holds {available}")
    return available


class VideoEncoder:
    def __init__(self, config: FitConfig, structure: list[CodedFrame], run_dir: Path, checkpointer: Checkpointer,
                 loggers: list[Logger], stream: TextIO, device: str):
        self.config, self.structure, self.run_dir, self.checkpointer = config, structure, run_dir, checkpointer
        self.loggers, self.stream, self.device = loggers, stream, device
        first = read_frame(config.input, config.frame_index)
        self.sequence = SequenceHeader(first.height, first.width, first.color_space, first.bitdepth, config.n_frames)
        self.decoded: dict[int, FrameData] = {}
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
        planes = torch.load(folder / "decoded.pt", map_location="cpu", weights_only=True)
        self.decoded[frame.display] = FrameData(tuple(planes), self.sequence.bitdepth, self.sequence.color_space)
        self.records.append((folder / "frame.bin").read_bytes())
        self.results[frame.display] = json.loads((folder / RESULTS_FILE).read_text())

    # ------------------------------------------------------------------ one frame

    def _encode(self, frame: CodedFrame, folder: Path) -> None:
        config = self.config
        target = read_frame(config.input, config.frame_index + frame.display)
        lmbda = frame_lambda(config.lmbda, frame.depth)
        checkpointer = self.checkpointer.moved_to(folder / CHECKPOINT_FILE)
        started = time.perf_counter()
        pretrain_iterations = 0
        if frame.frame_type == "I":
            preset, architecture, inter = config.preset_object(), config.resolved_architecture(), None
            factory = None
        else:
            preset = config.inter_preset_object(frame.depth, frame.frame_type == "B")
            arch_name = config.inter_arch or ("mop" if frame.depth <= 1 else "lop")
            architecture, motion_architecture = ARCHITECTURES[arch_name], MOTION_ARCHITECTURES[arch_name]
            references = [to_444(self.decoded[r]) for r in frame.refs]
            target_444 = to_444(target)
            inter = InterFrameParameters(tuple(global_translation(r, target_444) for r in references),
                                         config.warp_filter_size)
            pretrained = None
            if config.motion_init == "flow" and preset.motion_pretrain is not None:
                pretrained, pretrain_iterations = self._pretrain_motion(
                    frame, folder, target_444, references, inter, motion_architecture, preset, lmbda)

            def factory(candidate: int) -> CoolChicModule:
                decoder = InterCoolChic((target.height, target.width), references, inter, architecture,
                                        motion_architecture)
                if pretrained is not None and candidate % 2 == 1:
                    decoder.motion.load_state_dict(pretrained)
                return CoolChicModule(target, decoder, lmbda)

        print(f"frame {frame.display} ({frame.frame_type}, coding {frame.coding}, depth {frame.depth}, "
              f"lambda {lmbda:.4g})\n{preset.table()}", file=self.stream)
        runner = PhaseRunner(target, architecture, preset, lmbda, seed=config.seed, n_loops=config.n_loops,
                             accelerator=self.device, loggers=self.loggers, report_stream=self.stream,
                             checkpointer=checkpointer, module_factory=factory,
                             name_prefix=f"frame{frame.display:03d}/")
        checkpoint = checkpointer.load()
        if checkpoint is not None:
            print(f"resuming frame {frame.display} at {runner.describe(checkpoint)}", file=self.stream)
        module, metrics = runner.run(checkpoint)
        self._finish(frame, folder, target, module, metrics, inter, lmbda,
                     runner.global_iteration + pretrain_iterations, time.perf_counter() - started)
        checkpointer.remove()

    def _pretrain_motion(self, frame: CodedFrame, folder: Path, target: Tensor, references: list[Tensor],
                         inter: InterFrameParameters, architecture: CoolChicArchitecture, preset: Preset,
                         lmbda: float) -> tuple[dict[str, Tensor], int]:
        """Fit a motion Cool-Chic to the optical flow from the frame to each (shifted)
        reference, plus a zero beta map for B frames (beta starts at 0.5)."""
        saved = folder / "motion_pretrain.pt"
        if saved.exists():
            state = torch.load(saved, map_location="cpu", weights_only=True)
            return state["motion"], state["iterations"]
        flows = [estimate_flow(target, shift(reference, dx, dy))
                 for reference, (dx, dy) in zip(references, inter.translations)]
        if len(references) == 2:
            flows.append(torch.zeros_like(flows[0][:, :1]))
        flow = torch.cat(flows, dim=1)
        n_outputs = MOTION_OUTPUTS[len(references)]
        size = tuple(flow.shape[-2:])
        pretrain_lambda = MOTION_PRETRAIN_LAMBDA_FACTOR * lmbda
        runner = PhaseRunner(
            FrameData((flow,), 8, "yuv444"), architecture,
            Preset("motion_pretrain", [preset.motion_pretrain], transmitted=False), pretrain_lambda,
            seed=self.config.seed, accelerator=self.device, report_stream=self.stream,
            checkpointer=self.checkpointer.moved_to(folder / "motion_pretrain.ckpt"),
            module_factory=lambda _: FlowTargetModule(flow, CoolChic(size, architecture, n_outputs), pretrain_lambda),
            name_prefix=f"frame{frame.display:03d}/motion_pretrain/")
        module, _ = runner.run(runner.checkpointer.load())
        state = {"motion": {k: v.detach().cpu() for k, v in module.coolchic.state_dict().items()},
                 "iterations": runner.global_iteration}
        with atomic_write(saved) as tmp:
            torch.save(state, tmp)
        runner.checkpointer.remove()
        return state["motion"], state["iterations"]

    def _finish(self, frame: CodedFrame, folder: Path, target: FrameData, module: CoolChicModule,
                metrics: dict[str, float], inter: InterFrameParameters | None, lmbda: float, iterations: int,
                seconds: float) -> None:
        """Code the frame, decode the record back (it must give the encoder's own
        reconstruction, which later frames reference), save what a resume needs."""
        module.cpu()
        record, part_bytes = encode_frame(FrameHeader(frame.display, frame.refs, inter), module.coolchic,
                                          module.quantization)
        _, decoded = decode_frame(record, self.sequence, self.decoded)
        if not all(torch.equal(a, b) for a, b in zip(decoded.planes, module.decode())):
            raise RuntimeError(f"frame {frame.display}: decoding its record does not reproduce the encoder's "
                               "reconstruction")
        n_pixels = target.n_pixels
        result = {
            "display": frame.display, "coding": frame.coding, "type": frame.frame_type, "depth": frame.depth,
            "refs": list(frame.refs), "lmbda": lmbda, **yuv_psnrs(decoded.planes, target.planes),
            "bpp": 8 * len(record) / n_pixels, "bits": 8 * len(record),
            **{f"bits_{name}": 8 * count for name, count in part_bytes.items()},
            "bpp_estimated": metrics["bpp"], "loss": metrics["loss"],
            "translations": [list(t) for t in inter.translations] if inter else [],
            "mac_per_pixel": round(module.coolchic.mac_per_pixel(), 1),
            "n_iterations": iterations, "encoding_time_s": round(seconds, 2),
        }
        with atomic_write(folder / "frame.bin") as tmp:
            tmp.write_bytes(record)
        with atomic_write(folder / "decoded.pt") as tmp:
            torch.save(list(decoded.planes), tmp)
        with atomic_write(folder / "model.pt") as tmp:
            torch.save({"lmbda": lmbda, "inter": None if inter is None else inter.translations,
                        **module.codec_state()}, tmp)
        write_text(folder / RESULTS_FILE, json.dumps(result, indent=2) + "\n")
        self.decoded[frame.display] = decoded
        self.records.append(record)
        self.results[frame.display] = result
        print(f"frame {frame.display} ({frame.frame_type}): {result['psnr_yuv']:.3f} dB YUV at {result['bpp']:.4f} bpp "
              f"({iterations} iterations, {seconds:.1f} s)", file=self.stream)

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
            "preset": self.config.preset, "inter_preset": self.config.inter_preset, "lmbda": self.config.lmbda,
            "intra_pos": self.config.intra_pos, "p_pos": self.config.p_pos, "bitstream": path.name,
            "bitstream_bytes": len(data),
            "bpp": 8 * len(data) / (self.sequence.height * self.sequence.width * n_frames),
            **{key: sum(f[key] for f in per_frame) / n_frames
               for key in ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv")},
            "n_iterations": sum(f["n_iterations"] for f in per_frame),
            "encoding_time_s": round(sum(f["encoding_time_s"] for f in per_frame), 2),
            "frames": per_frame,
        }
        columns = [k for k in per_frame[0] if not isinstance(per_frame[0][k], list)]
        write_text(self.run_dir / "results.tsv", "\t".join(columns) + "\n" +
                   "".join("\t".join(str(f[k]) for k in columns) + "\n" for f in per_frame))
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
    config.inter_preset_object(1, False)  # an impossible inter preset fails before any work
    run_dir = prepare_run_folder(config)
    if (run_dir / RESULTS_FILE).exists():
        print(f"{run_dir}: already encoded", file=stream)
        return json.loads((run_dir / RESULTS_FILE).read_text())
    checkpointer = run_checkpointer(config, run_dir, signal_reason)
    table = structure_table(structure, config.lmbda)
    write_text(run_dir / "config.yaml", dump_config(config))
    write_text(run_dir / "structure.txt", table + "\n")
    print(table, file=stream)
    tensorboard = RunTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    csv = CSVLogger(save_dir=str(run_dir), name="csv")
    encoder = VideoEncoder(config, structure, run_dir, checkpointer, [tensorboard, csv], stream, device)
    try:
        encoder.run()
        for display, frame in encoder.decoded.items():
            tensorboard.experiment.add_image("decoded/luma", frame.planes[0][0], display)
    finally:
        tensorboard.close()
        csv.finalize("success")
    results = encoder.write_outputs()
    print(f"{run_dir}: {results['n_frames']} frames, {results['psnr_yuv']:.3f} dB YUV at {results['bpp']:.4f} bpp "
          f"in {results['bitstream']} ({results['n_iterations']} iterations, {results['encoding_time_s']:.1f} s)",
          file=stream)
    return results
