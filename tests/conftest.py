"""Shared fixtures: the real test data lives in ../shared/data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers already fill the cores; torch's default of one thread per core in
    # each worker and in every encode it starts would oversubscribe them and spin.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

DATA_DIR = Path(os.environ.get("COOLCHIC_TEST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        raise RuntimeError(f"test data not found at {DATA_DIR}; set COOLCHIC_TEST_DATA to the shared/data folder")
    return DATA_DIR


@pytest.fixture(scope="session")
def kodim15(data_dir: Path) -> Path:
    return data_dir / "images" / "kodim15_192x128.png"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
