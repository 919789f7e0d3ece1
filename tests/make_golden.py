"""Write the golden files of tests/test_fixedpoint.py: ``python tests/make_golden.py``.

One debug encode per image decoder family (the Cool-Chic 4.2 ones on the bundled RGB crop,
the Cool-Chic 5 ones on its 10-bit 4:2:0 version, whose output range is not [0, 1023]) and
three-frame I/B/P BQSquare videos (I0, P2, B1 in coding order): one as the default policy
codes it, and one per set of inter-frame modes and motion models, so that every mode of
the format has a file (the prediction alone with translation, affine and derived motion;
motion, residue and both; networks sent as differences from an earlier frame's, or reused as
they are).
They are copied to tests/data/golden/ with the SHA-256 of their decoded samples in
golden.json, where the hashes of files of earlier formats (written by earlier encoders,
not by this script) are kept. Rerun only when the format changes on purpose (minutes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from golden import GOLDEN, samples_sha256  # noqa: E402

from coolchic_pl.decode import decode_sequence  # noqa: E402

DATA = REPO.parent / "shared" / "data"
RGB = REPO / "coolchic_pl" / "data" / "kodim15_192x128.png"
YUV = DATA / "images" / "kodim15_192x128_01p_yuv420_10b.yuv"
VIDEO = DATA / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"
IMAGES = {"vlop": RGB, "lop": RGB, "mop": RGB, "hop": RGB, "lop5": YUV, "mop5": YUV, "hop5": YUV, "vhop5": YUV}
# Frames and rules of each mode file: three frames I0 P2 B1 (coding order), the modes and
# motion models of P and B; four frames I0 P3 B1 B2, B2 reusing B1's networks as they are.
VIDEO_MODES = {
    "bqsquare_motion_derived.cool": (3, [{"frames": "P", "modes": ["motion"], "motion_models": ["translation"]},
                                         {"frames": "B", "modes": ["prediction"], "motion_models": ["derived"]}]),
    "bqsquare_residue_affine.cool": (3, [{"frames": "inter", "modes": ["residue"], "motion_models": ["affine"]}]),
    "bqsquare_prediction_both.cool": (3, [{"frames": "P", "modes": ["prediction"], "motion_models": ["translation"]},
                                          {"frames": "B", "modes": ["motion+residue"], "motion_models": ["affine"]}]),
    "bqsquare_reuse.cool": (4, [{"frames": "B", "modes": ["motion+residue"]},
                                {"frames": "B", "depth": 3, "reuse_networks": "always"}]),
}
# Files of earlier formats, kept with their hashes: video format 3 (the layout of versions 1 to 3).
LEGACY = ("bqsquare_3frames_v3.cool",)


def _encode(arguments: list[str], output: Path) -> Path:
    command = [sys.executable, "-m", "coolchic_pl.fit", "--config", str(REPO / "configs" / "debug.yaml"),
               "--output_dir", str(output), "--checkpoint_interval_s", "0", *arguments]
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return next(output.glob("*/*.cool"))


def main() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    hashes = {}
    with tempfile.TemporaryDirectory() as scratch:
        jobs = {f"{arch}.cool": ["--input", str(image), "--arch", arch] for arch, image in IMAGES.items()}
        video = ["--input", str(VIDEO), "--intra_pos", "0", "--p_pos", "-1"]
        jobs["bqsquare_3frames.cool"] = [*video, "--n_frames", "3"]
        for name, (n_frames, rules) in VIDEO_MODES.items():
            jobs[name] = [*video, "--n_frames", str(n_frames), "--frame_rules", json.dumps(rules)]
        for name, arguments in jobs.items():
            target = GOLDEN / name
            shutil.copy(_encode(arguments, Path(scratch) / name), target)
            hashes[name] = samples_sha256(decode_sequence(target))
            print(f"{name}: {target.stat().st_size} bytes, {hashes[name]}")
    legacy = {name: digest for name, digest in json.loads((GOLDEN / "golden.json").read_text()).items()
              if name in LEGACY}
    (GOLDEN / "golden.json").write_text(json.dumps({**hashes, **legacy}, indent=2) + "\n")


if __name__ == "__main__":
    main()
