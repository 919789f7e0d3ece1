"""The commands of the README and the docs: those that take up to about 20 s run here as
written, in a folder laid out like the repository; every other one names the time it takes.

A command is a line of a ``bash`` block (continuations joined) or an inline code span that
starts with one of the package's commands, ``python``, ``srun`` or ``py-spy``. In a block, its
time is in a comment on its line or on the comment lines just above it; inline, in its
paragraph.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml
from PIL import Image

from coolchic_pl.data import DEFAULT_IMAGE

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND = re.compile(r"(coolchic-(fit|decode|sweep|bench)|python3? |srun |py-spy )")
NOT_TIMED = re.compile(r"(pip install|tensorboard|mkdocs) ")  # installs and servers
TIME = re.compile(r"\b\d+(\.\d+)?\s*(s|min|h)\b|\b(seconds?|minutes?|hours?|instant)\b")
VIDEO = "../shared/data/video/BQSquare_224x128_60p_5frames_yuv420_8b.yuv"
VIDEO_RUN = "runs/BQSquare_224x128_60p_5frames_yuv420_8b_l0.001/BQSquare_224x128_60p_5frames_yuv420_8b.cool"


@dataclass(frozen=True)
class Command:
    page: str
    text: str
    timed: bool


def _block_commands(page: str, block: str) -> list[Command]:
    commands, comments = [], []
    for line in block.replace("\\\n", " ").splitlines():
        line = " ".join(line.split())
        if line.startswith("#"):
            comments.append(line)
            continue
        text, _, comment = line.partition(" # ")
        if COMMAND.match(text):
            commands.append(Command(page, text, bool(TIME.search(" ".join([*comments, comment])))))
        comments = []
    return commands


def documented_commands() -> list[Command]:
    commands = []
    for path in PAGES:
        page, text = path.relative_to(REPO).as_posix(), path.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            commands += _block_commands(page, block)
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for paragraph in prose.split("\n\n"):
            for span in re.findall(r"`([^`]+)`", paragraph.replace("\n", " ")):
                if COMMAND.match(span) and _has_arguments(span):
                    commands.append(Command(page, " ".join(span.split()), bool(TIME.search(paragraph))))
    return commands


def _has_arguments(span: str) -> bool:
    """Whether an inline span runs something rather than names a command (``coolchic-bench
    decode``, ``python -m coolchic_pl.sweep``): it has arguments after the program, its
    module and its subcommand."""
    words = span.split()
    program = 3 if words[:2] == ["python", "-m"] else 2 if words[0] in ("coolchic-bench", "srun") else 1
    return len(words) > program


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


# The commands that take seconds, and whether what they printed and left behind (in the
# sandbox) is what they are for.
RUN_HERE: dict[str, Callable[[Path, str], bool]] = {
    "coolchic-fit --config configs/debug.yaml --print_config":
        lambda cwd, out: yaml.safe_load(out)["preset"]["all_phases"][0]["max_itr"] == 50,
    "coolchic-fit --config configs/debug.yaml --input photo.png --lmbda 0.001":
        lambda cwd, out: (cwd / "runs/photo_l0.001/photo.cool").exists(),
    "coolchic-decode runs/photo_l0.001/photo.cool -o photo_decoded.png":
        lambda cwd, out: _image_size(cwd / "photo_decoded.png") == (192, 128),
    f"coolchic-fit --config configs/debug.yaml --input {VIDEO} --n_frames 3 --intra_pos 0 --p_pos -1":
        lambda cwd, out: (cwd / VIDEO_RUN).exists(),
    f"coolchic-decode {VIDEO_RUN} -o out_224x128_yuv420_8b.yuv":
        lambda cwd, out: (cwd / "out_224x128_yuv420_8b.yuv").stat().st_size == 3 * 224 * 128 * 3 // 2,
    f"coolchic-decode {VIDEO_RUN} -o out_224x128_yuv444_10b.yuv --output_chroma_format 444 --output_bitdepth 10":
        lambda cwd, out: (cwd / "out_224x128_yuv444_10b.yuv").stat().st_size == 3 * 224 * 128 * 3 * 2,
    "python -m coolchic_pl.sweep --images ../shared/data/images/kodim15_192x128.png --lmbdas 0.02,0.004,0.001,0.0004 "
    "--config configs/debug.yaml --out runs/sw --launcher local --workers 2":
        lambda cwd, out: len(list((cwd / "runs/sw/jobs").glob("*/*/*.cool"))) == 4,
    "python -m coolchic_pl.summary --input photo.png --arch lop":
        lambda cwd, out: "MAC" in out,
    "coolchic-fit --preset intra5 --arch lop5 --n_itr 1000 --input photo.png":
        lambda cwd, out: json.loads((cwd / "runs/photo_l0.001/results.json").read_text())["arch"] == "lop5",
    "python -m coolchic_pl.bench speed --copies 1 2 5 --steps 30 --repeats 6":
        lambda cwd, out: out.count("ms/step") == 3,
    "python -m coolchic_pl.bench speed --images ../shared/data/kodak/kodim15.png --copies 1 2 --steps 4 --repeats 3":
        lambda cwd, out: "512x1536" in out,
    "python -m coolchic_pl.bench speed --archs lop5 mop5 hop5 lop hop --steps 30 --repeats 3 --threads 1":
        lambda cwd, out: out.count("ms/step") == 5,
    "coolchic-fit --config configs/debug.yaml --print_preset":
        lambda cwd, out: yaml.safe_load(out)["name"] == "debug",
    "coolchic-fit --config configs/fast5.yaml --print_config > my.yaml":
        lambda cwd, out: yaml.safe_load((cwd / "my.yaml").read_text())["preset"]["name"] == "intra5",
}


def test_every_documented_command_runs_here_or_names_its_time() -> None:
    commands = documented_commands()
    untimed = [f"{c.page}: {c.text}" for c in commands
               if c.text not in RUN_HERE and not c.timed and not NOT_TIMED.match(c.text)]
    assert not untimed, "commands that neither run here nor name their time:\n" + "\n".join(untimed)
    documented = {c.text for c in commands}
    assert not set(RUN_HERE) - documented, "RUN_HERE names commands the docs no longer hold"


def test_the_readme_commands_are_found() -> None:
    readme = [c.text for c in documented_commands() if c.page == "README.md"]
    assert any(text.endswith("python -m pytest -n auto --dist loadfile") for text in readme)
    assert any(text.startswith("python -m coolchic_pl.bench rd") for text in readme)


@pytest.fixture
def sandbox(tmp_path: Path, data_dir: Path) -> Path:
    """A folder laid out like the repository (configs, the package, the shared data beside
    it) with ``photo.png``, the bundled image, for the commands that name a photo."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("configs", "coolchic_pl"):
        (root / name).symlink_to(REPO / name)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data_dir.resolve())
    shutil.copy(DEFAULT_IMAGE, root / "photo.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted({c.page for c in documented_commands() if c.text in RUN_HERE}))
def test_the_quick_commands_of_a_page_run_as_written(sandbox: Path, page: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in [c.text for c in documented_commands() if c.page == page and c.text in RUN_HERE]:
        result = subprocess.run(["bash", "-c", command], cwd=sandbox, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
        assert RUN_HERE[command](sandbox, result.stdout), f"{command}\n{result.stdout[-2000:]}"
