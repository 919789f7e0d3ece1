"""The encode job: one frame in, one run folder out.

``encode(config)`` runs the phase runner in ``<output_dir>/<image>_l<lmbda>/`` and writes
the bitstream, the decoded frame, the final model and the results there. Calling it again
with the same config resumes an interrupted encode from its checkpoint, or reports a
finished one. ``fit`` (the command line) and the benchmarks call it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, TextIO

import torch
import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from coolchic_pl.bitstream.codec import encode_coolchic
from coolchic_pl.fixedpoint.coolchic import IntegerCoolChic
from coolchic_pl.config import FitConfig, arch_label, dump_config
from coolchic_pl.decode import decode_file
from coolchic_pl.extensions import instantiate
from coolchic_pl.io import FrameData, read_frame, write_frame, yuv_file_name
from coolchic_pl.io.frame import atomic_write
from coolchic_pl.metrics import ms_ssim, psnr_db
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.preset_file import preset_to_yaml
from coolchic_pl.training.checkpoint import Checkpointer, EncodeStopped, StopReason
from coolchic_pl.training.loss import mse
from coolchic_pl.training.module import CoolChicModule
from coolchic_pl.training.runner import PhaseRunner

RESULT_KEYS = ("image", "height", "width", "color_space", "bitdepth", "preset", "arch", "lmbda", "psnr_db", "ms_ssim",
               "bpp_file", "bpp", "bpp_latent", "bpp_nn", "loss", "mse", "n_iterations", "encoding_time_s",
               "mac_per_pixel", "seed")
CHECKPOINT_FILE = "checkpoint.ckpt"
RESULTS_FILE = "results.json"  # written last: its presence marks a finished encode
# Options that change how an encode runs, not what it produces: a run folder may be
# resumed with other values (another device, another time limit).
RUN_OPTIONS = ("output_dir", "device", "checkpoint_interval_s", "job_duration_min", "loggers")


class RunFolderError(Exception):
    pass


class RunTensorBoardLogger(TensorBoardLogger):
    """Keeps one event file for the whole encode: Lightning finalises the logger after
    every stage's ``fit``, which would otherwise close the writer and start a new file."""

    def finalize(self, status: str) -> None:
        self.experiment.flush()

    def close(self) -> None:
        super().finalize("success")


def run_folder(config: FitConfig) -> Path:
    suffix = f"_f{config.frame_index}" if config.frame_index else ""
    return Path(config.output_dir) / f"{Path(config.input).stem}{suffix}_l{config.lmbda:g}"


def fingerprint(config: FitConfig) -> dict[str, Any]:
    """What makes two encodes the same: the image bytes and every option that shapes the result."""
    options = {k: v for k, v in config.as_dict().items() if k not in RUN_OPTIONS and k != "input"}
    digest = hashlib.sha256(Path(config.input).read_bytes()).hexdigest()
    if config.preset_file:  # the file's contents, not its name, shape the result
        options["preset_file"] = hashlib.sha256(preset_to_yaml(config.preset_object()).encode()).hexdigest()
    return {"image_sha256": digest, "options": options}


def prepare_run_folder(config: FitConfig) -> Path:
    run_dir = run_folder(config)
    wanted = fingerprint(config)
    marker = run_dir / "fingerprint.json"
    if marker.exists():
        if json.loads(marker.read_text()) != wanted:
            raise RunFolderError(f"{run_dir} holds an encode of a different image or config: "
                                 "choose another --output_dir or remove that folder")
        for unfinished in run_dir.glob(".*.part"):  # a write cut short by a kill
            unfinished.unlink()
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunFolderError(f"{run_dir} exists and is not a coolchic_pl run folder: choose another --output_dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"cannot create {run_dir}: {error.strerror}") from None
    write_text(marker, json.dumps(wanted, indent=2) + "\n")
    return run_dir


def run_loggers(config: FitConfig, run_dir: Path) -> list[Logger]:
    """The config's loggers, or by default TensorBoard (one event file for the whole encode)
    and CSV (a version_<n> per attempt, so resuming keeps the rows) in the run folder."""
    if config.loggers is not None:
        return [instantiate(spec, Logger, f"loggers[{i}]") for i, spec in enumerate(config.loggers)]
    return [RunTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False),
            CSVLogger(save_dir=str(run_dir), name="csv")]


def close_loggers(loggers: list[Logger]) -> None:
    for logger in loggers:
        if isinstance(logger, RunTensorBoardLogger):
            logger.close()
        else:
            logger.finalize("success")


def user_callbacks(config: FitConfig) -> list[pl.Callback]:
    """The config's own callbacks: one instance each for the whole encode."""
    return [instantiate(spec, pl.Callback, f"callbacks[{i}]") for i, spec in enumerate(config.callbacks)]


def run_checkpointer(config: FitConfig, run_dir: Path,
                     signal_reason: Callable[[], StopReason | None]) -> Checkpointer:
    """The checkpoint policy the config asks for, on the run folder's checkpoint file."""
    job_duration_s = None if config.job_duration_min is None else 60.0 * config.job_duration_min
    return Checkpointer(run_dir / CHECKPOINT_FILE, config.checkpoint_interval_s, job_duration_s, signal_reason)


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def decoded_file_name(frame: FrameData) -> str:
    return "decoded.png" if frame.color_space == "rgb" else yuv_file_name("decoded", frame)


def resolve_device(config: FitConfig) -> str:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no CUDA device")
    device = "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu"
    if config.compile and device == "cpu":
        raise ValueError("compile: torch.compile of the decoder fails on CPU with torch 2.13 (a stride assertion in "
                         "replication_pad2d_backward; worked around, the compiled code corrupts the heap): "
                         "leave compile off on CPU")
    return device


def write_bitstream(run_dir: Path, config: FitConfig, frame: FrameData, module: CoolChicModule,
                    reconstruction: FrameData) -> Path:
    """Write ``<image>.cool`` and decode it back: the decoder must reproduce the encoder's
    ``reconstruction`` exactly, or the encode fails rather than ship a bad file. Entropy
    coding runs on the CPU, where the fixed-point ARM is defined."""
    module.cpu()
    data = encode_coolchic(IntegerCoolChic.from_module(module.coolchic, frame.bitdepth), module.quantization,
                           frame.color_space, frame.bitdepth)
    path = run_dir / f"{Path(config.input).stem}.cool"
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
        decoded = decode_file(tmp)
        if not all(torch.equal(a, b) for a, b in zip(decoded.planes, reconstruction.planes)):
            raise RuntimeError(f"{path}: decoding the bitstream does not reproduce the encoder's reconstruction")
    return path


def write_outputs(run_dir: Path, config: FitConfig, frame: FrameData, module: CoolChicModule, decoded: FrameData,
                  results: dict[str, Any]) -> None:
    """Decoded frame, final model and results; results.json last, as the mark of a finished run."""
    write_frame(decoded, run_dir / decoded_file_name(frame))
    with atomic_write(run_dir / "model.pt") as tmp:
        torch.save({"architecture": asdict(module.coolchic.architecture),
                    "image_size": (frame.height, frame.width), "color_space": frame.color_space,
                    "bitdepth": frame.bitdepth, "lmbda": config.lmbda, **module.codec_state()}, tmp)
    write_text(run_dir / "results.tsv", "\t".join(RESULT_KEYS) + "\n" +
               "\t".join(str(results[k]) for k in RESULT_KEYS) + "\n")
    write_text(run_dir / RESULTS_FILE, json.dumps(results, indent=2) + "\n")


def encode(config: FitConfig, stream: TextIO | None = None,
           signal_reason: Callable[[], StopReason | None] = lambda: None) -> dict[str, Any]:
    """Run (or resume) one encode; returns its results dictionary. Progress goes to
    ``stream`` (standard error by default). ``signal_reason`` reports a stop asked for by
    a signal; the encode then checkpoints and raises :class:`EncodeStopped`, as it does
    when ``config.job_duration_min`` has passed."""
    stream = sys.stderr if stream is None else stream
    frame = read_frame(config.input, config.frame_index)
    architectures = config.resolved_architectures()
    for architecture in architectures:  # an impossible decoder fails before any output
        CoolChic((frame.height, frame.width), architecture)
    callbacks, loggers = user_callbacks(config), run_loggers(config, run_folder(config))  # so does a bad class_path
    preset = config.preset_object()
    device = resolve_device(config)
    run_dir = prepare_run_folder(config)
    checkpointer = run_checkpointer(config, run_dir, signal_reason)
    if (run_dir / RESULTS_FILE).exists():
        checkpointer.remove()
        print(f"{run_dir}: already encoded", file=stream)
        return json.loads((run_dir / RESULTS_FILE).read_text())
    checkpoint = checkpointer.load()
    write_text(run_dir / "config.yaml", dump_config(config))
    write_text(run_dir / "preset.txt", preset.table() + "\n")
    print(preset.table(), file=stream)

    tensorboard = next((logger for logger in loggers if isinstance(logger, TensorBoardLogger)), None)
    if checkpoint is None and tensorboard is not None:
        tensorboard.experiment.add_text("preset", "    " + preset.table().replace("\n", "\n    "), 0)

    def log_phase_image(stage: str, module: CoolChicModule, global_iteration: int) -> None:
        if tensorboard is not None:
            tensorboard.experiment.add_image(f"{stage}/decoded", module.decode()[0][0].cpu(), global_iteration)

    runner = PhaseRunner(frame, architectures, preset, config.lmbda, seed=config.seed, n_loops=config.n_loops,
                         accelerator=device, compile_decoder=config.compile, loggers=loggers,
                         user_callbacks=callbacks, report_stream=stream, checkpointer=checkpointer,
                         on_phase_end=log_phase_image)
    if checkpoint is not None:
        print(f"resuming {run_dir} at {runner.describe(checkpoint)}", file=stream)
    try:
        module, metrics = runner.run(checkpoint)
        architecture = runner.winner_architecture
        decoded = module.decode()  # what the file decodes to (integers after the latents), once
        results = {
            "image": str(config.input), "height": frame.height, "width": frame.width,
            "color_space": frame.color_space, "bitdepth": frame.bitdepth, "preset": preset.name,
            "arch": arch_label(architecture), "lmbda": config.lmbda,
            "psnr_db": psnr_db(decoded, module.target), "mse": mse(decoded, module.target).item(),
            **{k: metrics[k] for k in ("bpp", "bpp_latent", "bpp_nn", "loss")},
            "ms_ssim": ms_ssim(decoded[0], module.target[0]),
            "n_iterations": runner.global_iteration, "encoding_time_s": round(runner.elapsed_s, 2),
            "mac_per_pixel": round(module.coolchic.mac_per_pixel(), 1), "seed": config.seed,
            "bpp_per_grid": [metrics[k] for k in sorted(metrics) if k.startswith("bpp_grid_")],
        }
        hparams = {k: v for k, v in config.as_dict().items() if k != "architecture"}
        if tensorboard is not None:
            tensorboard.log_hyperparams(hparams, {f"final/{k}": results[k] for k in ("psnr_db", "bpp", "loss")})
    finally:
        close_loggers(loggers)
    # Only a signal stops the encode now: the last few seconds of writing always fit in
    # the job's time, and a requeue here could repeat forever.
    reason = signal_reason()
    if reason is not None:
        raise EncodeStopped(reason)
    reconstruction = FrameData(tuple(p.detach().cpu() for p in decoded), frame.bitdepth, frame.color_space)
    bitstream = write_bitstream(run_dir, config, frame, module, reconstruction)
    results["bitstream"] = bitstream.name
    results["bitstream_bytes"] = bitstream.stat().st_size
    results["bpp_file"] = 8 * results["bitstream_bytes"] / frame.n_pixels
    write_outputs(run_dir, config, frame, module, reconstruction, results)
    checkpointer.remove()
    print(f"{run_dir}: {results['psnr_db']:.3f} dB at {results['bpp_file']:.4f} bpp in {bitstream.name} "
          f"(estimated {results['bpp']:.4f}) "
          f"({results['n_iterations']} iterations, {results['encoding_time_s']:.1f} s)", file=stream)
    return results
