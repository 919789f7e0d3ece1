"""The ffmpeg binary of the imageio-ffmpeg wheel, shared by the image and video baselines."""

from __future__ import annotations

import functools
import subprocess


def ffmpeg_exe() -> str:
    """The binary's path; imageio-ffmpeg is imported lazily because only the baselines need it."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RuntimeError("the ffmpeg baselines need the ffmpeg binary of imageio-ffmpeg: "
                           "pip install imageio-ffmpeg") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def ffmpeg_encoders() -> frozenset[str]:
    """Names of the encoders the binary was built with; empty without imageio-ffmpeg. Cached: listing them
    starts ffmpeg, and the binary does not change within a run."""
    try:
        exe = ffmpeg_exe()
    except RuntimeError:
        return frozenset()
    listing = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False).stdout
    return frozenset(line.split()[1] for line in listing.splitlines() if len(line.split()) > 1)


def run_ffmpeg(command: list[str], stage: str) -> str:
    """Run ffmpeg and return its stderr; a failure is one line with the first and last lines ffmpeg wrote,
    since the first usually names the cause and the last what ffmpeg gave up on."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()] or ["(no message)"]
        detail = lines[-1] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        raise RuntimeError(f"ffmpeg {stage} failed (exit {result.returncode}): {detail}")
    return result.stderr
