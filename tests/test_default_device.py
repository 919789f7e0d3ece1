"""CUDA readiness on a CPU: a debug image encode and a debug 3-frame video encode with
torch's default device set to ``meta`` around every training step, validation, quantisation
search (with RDOQ) and motion estimation. A tensor any of them creates without the model's
device is a meta tensor there, and the first operation mixing it with the model's fails."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import pytest
import torch

from coolchic_pl import compress
from coolchic_pl.callbacks.quantize import PostPhaseQuantization
from coolchic_pl.video import encoder as video_encoder

from default_device_guard import MetaDefaultDevice
from test_interrupts import REPO

GUARD = [{"class_path": "default_device_guard.MetaDefaultDevice"}]


def under_meta(function: Callable) -> Callable:
    @functools.wraps(function)
    def guarded(*args, **kwargs):
        with torch.device("meta"):
            return function(*args, **kwargs)
    return guarded


@pytest.fixture
def guarded(monkeypatch) -> list[str]:
    """Quantisation and motion estimation run under the meta default device; the names of
    those that ran are collected, so the test knows it exercised them."""
    ran: list[str] = []
    monkeypatch.setattr(MetaDefaultDevice, "guarded_batches", 0)

    def watch(owner, name: str) -> None:
        original = getattr(owner, name)

        def call(*args, **kwargs):
            ran.append(name)
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, under_meta(call))
    watch(PostPhaseQuantization, "quantize")
    for name in ("estimate_motion", "fit_affine", "global_translation"):
        watch(video_encoder, name)
    return ran


def test_meta_default_device_in_the_step_creates_meta_tensors() -> None:
    """The guard's premise: a tensor made without a device inside it is not on the CPU."""
    with torch.device("meta"):
        assert torch.tensor(0.5).device.type == "meta"
        with pytest.raises((RuntimeError, NotImplementedError)):
            torch.ones(2) + torch.ones(2, device="cpu")


def test_image_encode_creates_no_tensor_off_the_model_device(guarded: list[str], tmp_path: Path) -> None:
    result = compress(REPO / "coolchic_pl" / "data" / "kodim15_192x128.png", REPO / "configs" / "debug.yaml",
                      output_dir=str(tmp_path), preset="intra5", n_itr=1000, arch="lop5",
                      callbacks=GUARD)
    assert "quantize" in guarded and MetaDefaultDevice.guarded_batches > 1000  # steps and validations
    assert result.results["n_iterations"] == 1000 and 20 < result.psnr_db < 50


@pytest.mark.slow
def test_video_encode_creates_no_tensor_off_the_model_device(guarded: list[str], data_dir: Path,
                                                             tmp_path: Path) -> None:
    """I, B and P frames with every mode and motion model of the default policy: flows,
    affine fits, motion pre-training, warm-up candidates, network prediction."""
    clip = data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"
    result = compress(clip, REPO / "configs" / "debug.yaml", output_dir=str(tmp_path), n_frames=3, intra_pos=0,
                      p_pos=-1, callbacks=GUARD)
    assert {"quantize", "estimate_motion", "fit_affine"} <= set(guarded) and MetaDefaultDevice.guarded_batches > 100
    assert [frame["type"] for frame in result.results["frames"]] == ["I", "B", "P"]
