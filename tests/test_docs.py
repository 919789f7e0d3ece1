"""The documentation: the site builds without a warning, and the tutorial runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("compress") > 3


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    """Its python blocks in order; a block starting ``# file: NAME`` is saved as that file."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "tutorial.md").read_text(), re.S)
    script = []
    for block in blocks:
        saved = re.match(r"# file: (\S+)\n", block)
        if saved:
            (tmp_path / saved[1]).write_text(block)
        else:
            script.append(block)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    result = subprocess.run([sys.executable, "-c", "\n".join(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("preset my_schedule: warm-up 50 iterations")
    assert re.search(r"\d+\.\d\d dB at \d\.\d{3} bpp", result.stdout)
