"""``coolchic-fit --config configs/fast.yaml --input photo.png --lmbda 0.001``

The command line of the encoder: parses the config, runs the encode job with the stop
signals watched, and turns the outcome into one line and an exit code. Running the same
command again resumes an interrupted encode from its checkpoint.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, TextIO

from coolchic_pl.config import FitConfig, dump_config, parse_config, read_config
from coolchic_pl.preset_file import preset_to_yaml, with_preset_written_out
from coolchic_pl.encode import CHECKPOINT_FILE, RunFolderError, encode, run_folder
from coolchic_pl.io import FrameFormatError
from coolchic_pl.runtime import configure_cpu_allocator
from coolchic_pl.training.checkpoint import CheckpointError, EncodeStopped, StopReason
from coolchic_pl.training.signals import StopSignals
from coolchic_pl.video.encoder import encode_video_sequence

EXIT_BAD_INPUT = 2
EXIT_REQUEUE = 42  # the reference encoder's TrainingExitCode.REQUEUE
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_CODES = {StopReason.INTERRUPT: EXIT_INTERRUPTED, StopReason.ABORT: EXIT_INTERRUPTED,
              StopReason.TERMINATE: EXIT_TERMINATED, StopReason.REQUEUE: EXIT_REQUEUE}
# What a bad input, config or run folder raises: reported in one line, exit code 2.
BAD_INPUT_ERRORS = (FrameFormatError, RunFolderError, CheckpointError, ValueError)
STOP_MESSAGES = {
    StopReason.INTERRUPT: "interrupted: the encode is checkpointed in {checkpoint}",
    StopReason.TERMINATE: "terminated (SIGTERM): the encode is checkpointed in {checkpoint}",
    StopReason.REQUEUE: "time is up (exit code 42, requeue): the encode is checkpointed in {checkpoint}",
    StopReason.ABORT: "aborted: {checkpoint} holds the encode as of its last checkpoint",
}


def run_encode(config: FitConfig, stream: TextIO | None = None,
               signal_reason: Callable[[], StopReason | None] = lambda: None) -> dict[str, Any]:
    """The encode job a config asks for: an image, or a video when it has several frames."""
    job = encode_video_sequence if config.is_video else encode
    return job(config, stream=stream, signal_reason=signal_reason)


def main(argv: list[str] | None = None) -> int:
    """``--print_config`` prints the config the rest of the command line resolves to, its
    preset written out, as the YAML ``--config`` reads; ``--print_preset`` prints the preset
    alone, as ``--preset_file`` reads it. Either encodes nothing."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if "--print_config" in argv:
            argv.remove("--print_config")
            print(dump_config(with_preset_written_out(read_config(argv))), end="")
            return 0
        if "--print_preset" in argv:
            argv.remove("--print_preset")
            print(preset_to_yaml(read_config(argv).preset_object()), end="")
            return 0
        config = parse_config(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    configure_cpu_allocator()
    with StopSignals() as signals:
        try:
            run_encode(config, signal_reason=signals.reason)
        except BAD_INPUT_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except EncodeStopped as stop:
            # A video keeps one checkpoint per frame in its run folder.
            checkpoint = run_folder(config) / ("" if config.is_video else CHECKPOINT_FILE)
            print(STOP_MESSAGES[stop.reason].format(checkpoint=checkpoint)
                  + "; run the same command again to resume", file=sys.stderr)
            return EXIT_CODES[stop.reason]
    return 0


if __name__ == "__main__":
    sys.exit(main())
