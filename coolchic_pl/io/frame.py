"""The in-memory frames: :class:`FrameData` (float32 tensors in [0, 1], what readers return
and the encoder trains on) and :class:`SampleFrame` (integer samples, what the decoder
computes). Writers accept both; torch is imported only to make a tensor, so that decoding
and writing a file never loads it."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

ColorSpace = Literal["rgb", "yuv420", "yuv444"]
COLOR_SPACES: tuple[ColorSpace, ...] = ("rgb", "yuv420", "yuv444")


class FrameFormatError(ValueError):
    """A file cannot be read or written as a frame; the message names the file and why."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class _PlaneGeometry:
    """The size and sample range of a frame, from its first plane [..., H, W] and bit depth."""

    planes: tuple
    bitdepth: int

    @property
    def height(self) -> int:
        return self.planes[0].shape[-2]

    @property
    def width(self) -> int:
        return self.planes[0].shape[-1]

    @property
    def n_pixels(self) -> int:
        return self.height * self.width

    @property
    def max_value(self) -> int:
        return 2**self.bitdepth - 1


@dataclass(frozen=True)
class FrameData(_PlaneGeometry):
    """One decoded frame with samples normalised to [0, 1] by 2^bitdepth - 1.

    ``rgb`` and ``yuv444`` frames hold one [1, 3, H, W] tensor in ``planes[0]``; ``yuv420``
    frames hold the luma [1, 1, H, W] and the two chroma planes [1, 1, ceil(H/2), ceil(W/2)]
    separately, because the codec computes its distortion on the subsampled planes.
    """

    planes: tuple[Tensor, ...]
    bitdepth: int
    color_space: ColorSpace

    def __post_init__(self) -> None:
        expected = 3 if self.color_space == "yuv420" else 1
        if len(self.planes) != expected:
            raise ValueError(f"{self.color_space} frame needs {expected} plane tensor(s), got {len(self.planes)}")

    def to_samples(self) -> SampleFrame:
        """The frame's samples as a writer stores them (see :func:`tensor_to_samples`)."""
        planes = tuple(tensor_to_samples(plane, self.bitdepth).transpose(2, 0, 1) for plane in self.planes)
        return SampleFrame(planes, self.bitdepth, self.color_space)


@dataclass(frozen=True)
class SampleFrame(_PlaneGeometry):
    """One frame as integer samples, planes laid out as :class:`FrameData`'s but [C, H, W]
    without the batch dimension, in the smallest unsigned type that holds the bit depth."""

    planes: tuple[np.ndarray, ...]
    bitdepth: int
    color_space: ColorSpace

    @classmethod
    def of(cls, planes: tuple[np.ndarray, ...], bitdepth: int, color_space: ColorSpace) -> SampleFrame:
        """From integer-valued planes of any numeric type."""
        return cls(tuple(plane.astype(sample_type(bitdepth)) for plane in planes), bitdepth, color_space)

    def to_444(self) -> np.ndarray:
        """[3, H, W] samples, 4:2:0 chroma repeated 2x2: how a decoded frame serves as a reference."""
        if self.color_space != "yuv420":
            return self.planes[0]
        luma, *chroma = self.planes
        height, width = luma.shape[-2:]
        full = [c.repeat(2, axis=-2).repeat(2, axis=-1)[..., :height, :width] for c in chroma]
        return np.concatenate([luma, *full])

    def to_frame_data(self) -> FrameData:
        """The frame as the encoder and the metrics take it: sample / (2^bitdepth - 1) in float32."""
        import torch

        return FrameData(tuple(torch.from_numpy((plane / self.max_value).astype(np.float32)).unsqueeze(0)
                               for plane in self.planes), self.bitdepth, self.color_space)

    def with_bitdepth(self, bitdepth: int) -> SampleFrame:
        """Rescaled to another bit depth as writing the frame's [0, 1] values at that depth
        does: the float32 value sample / (2^bitdepth - 1), times the new maximum, rounded."""
        if bitdepth == self.bitdepth:
            return self
        scale = 2**bitdepth - 1
        planes = tuple(np.floor((plane / self.max_value).astype(np.float32).astype(np.float64) * scale + 0.5)
                       for plane in self.planes)
        return SampleFrame.of(planes, bitdepth, self.color_space)


def sample_type(bitdepth: int) -> type:
    """The smallest unsigned type that holds samples of ``bitdepth`` bits."""
    return np.uint8 if bitdepth <= 8 else np.uint16


def samples_to_tensor(samples: np.ndarray, bitdepth: int) -> Tensor:
    """[H, W, C] integer samples -> [1, C, H, W] float32 in [0, 1]."""
    import torch

    scale = 1.0 / (2**bitdepth - 1)
    chw = np.ascontiguousarray(samples.transpose(2, 0, 1), dtype=np.float32)
    return torch.from_numpy(chw).mul_(scale).unsqueeze(0)


def tensor_to_samples(plane: Tensor, bitdepth: int) -> np.ndarray:
    """[1, C, H, W] float in [0, 1] -> [H, W, C] integers on the 2^bitdepth - 1 grid.

    Rounds half away from zero after clamping, which is what a decoder writing its
    output file does; the dtype is the smallest unsigned type that holds the bit depth.
    """
    max_value = 2**bitdepth - 1
    values = plane.detach().cpu().double()[0].clamp(0.0, 1.0).mul(max_value).add(0.5).floor()
    return values.permute(1, 2, 0).numpy().astype(sample_type(bitdepth))


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and move it into place only on success.

    An interrupted or failed writer therefore never leaves a truncated file that looks
    like a valid output.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise FrameFormatError(target, f"cannot write: folder {directory} does not exist")
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=directory)
    except OSError as error:
        raise FrameFormatError(target, f"cannot write: {error.strerror}") from error
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as error:
        raise FrameFormatError(target, f"cannot write: {error.strerror}") from error
    finally:
        tmp.unlink(missing_ok=True)


def read_bytes(path: str | os.PathLike) -> bytes:
    """Whole file contents, with missing, unreadable and empty files reported by name."""
    file = Path(path)
    if not file.exists():
        raise FrameFormatError(file, "no such file")
    if file.is_dir():
        raise FrameFormatError(file, "is a folder, not a file")
    try:
        data = file.read_bytes()
    except OSError as error:
        raise FrameFormatError(file, f"cannot read: {error.strerror}") from error
    if not data:
        raise FrameFormatError(file, "file is empty")
    return data
