"""Write the golden files of tests/test_fixedpoint.py: ``python tests/make_golden.py``.

One debug encode per image decoder family (the Cool-Chic 4.2 ones on the bundled RGB crop,
the Cool-Chic 5 ones on its 10-bit 4:2:0 version, whose output range is not [0, 1023]) and a
three-frame I/B/P BQSquare video, copied to tests/data/golden/, with the SHA-256 of their
decoded samples in golden.json. Rerun only when the format changes on purpose (minutes).
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
        jobs["bqsquare_3frames.cool"] = ["--input", str(VIDEO), "--n_frames", "3", "--intra_pos", "0",
                                         "--p_pos", "-1"]
        for name, arguments in jobs.items():
            target = GOLDEN / name
            shutil.copy(_encode(arguments, Path(scratch) / name), target)
            hashes[name] = samples_sha256(decode_sequence(target))
            print(f"{name}: {target.stat().st_size} bytes, {hashes[name]}")
    (GOLDEN / "golden.json").write_text(json.dumps(hashes, indent=2) + "\n")


if __name__ == "__main__":
    main()
