"""Learned upsampling of the latent pyramid to one dense [1, sum(C_i), H, W] tensor.

Every filter is single-channel, separable (2D kernel = w outer w) and symmetric, so it
is stored as half a 1D kernel. All channels of the working tensor are filtered
independently by folding them into the batch dimension.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Right half of the negated bicubic (a = -0.75) kernel used by the reference to
# initialise 8-tap (and longer) upsampling filters; the sign cancels in w outer w.
BICUBIC_HALF_KERNEL = (0.0351562, 0.1054687, -0.2617187, -0.8789063)
BILINEAR_HALF_KERNEL = (0.25, 0.75)


def _mirror(half: Tensor, kernel_size: int) -> Tensor:
    """(a b c) -> (a b c c b a) for even sizes, (a b c b a) for odd ones."""
    return torch.cat([half, half.flip(0)[kernel_size % 2:]])


class SymmetricTransposedUpsampler(nn.Module):
    """x2 upsampling by a separable, symmetric, even transposed-convolution kernel.

    The input is replicate-padded by k/2 and the transposed convolution output is
    cropped by 3k/2 - 1 on each side (done by the ``padding`` argument of
    conv_transpose2d), which yields exactly 2h x 2w samples with output 2i at input
    position i - 1/4 and 2i + 1 at i + 1/4.
    """

    def __init__(self, kernel_size: int):
        super().__init__()
        if kernel_size < 4 or kernel_size % 2:
            raise ValueError(f"upsampling kernel size must be even and >= 4, got {kernel_size}")
        self.kernel_size = kernel_size
        self.half_kernel = nn.Parameter(torch.zeros(kernel_size // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        core = BICUBIC_HALF_KERNEL if self.kernel_size >= 8 else BILINEAR_HALF_KERNEL
        with torch.no_grad():
            self.half_kernel.zero_()
            self.half_kernel[-len(core):] = torch.tensor(core)

    def forward(self, x: Tensor) -> Tensor:
        """[B, 1, h, w] -> [B, 1, 2h, 2w]."""
        k = self.kernel_size
        kernel = _mirror(self.half_kernel, k)
        padded = F.pad(x, (k // 2,) * 4, mode="replicate")
        crop = 3 * k // 2 - 1
        rows = F.conv_transpose2d(padded, kernel.view(1, 1, k, 1), stride=(2, 1), padding=(crop, 0))
        return F.conv_transpose2d(rows, kernel.view(1, 1, 1, k), stride=(1, 2), padding=(0, crop))


class SymmetricRefineFilter(nn.Module):
    """Separable, symmetric, odd convolution with a residual connection: x + conv(x).

    Initialised to a Dirac, so at initialisation it returns 2x (as the reference does).
    Zero padding keeps separable and 2D forms identical.
    """

    def __init__(self, kernel_size: int):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"refine (pre-concatenation) kernel size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.half_kernel = nn.Parameter(torch.zeros((kernel_size + 1) // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.half_kernel.zero_()
            self.half_kernel[-1] = 1.0

    def forward(self, x: Tensor) -> Tensor:
        k = self.kernel_size
        kernel = _mirror(self.half_kernel, k)
        rows = F.conv2d(x, kernel.view(1, 1, k, 1), padding=(k // 2, 0))
        return F.conv2d(rows, kernel.view(1, 1, 1, k), padding=(0, k // 2)) + x


class Upsampling(nn.Module):
    """Coarse-to-fine pyramid traversal with one upsampling and one refine filter per level.

    Level j upsamples the running tensor (all grids coarser than L-2-j) and concatenates it
    after the refined grid L-2-j, so the output channels come in grid order, finest first.
    Traversal stops at the first empty grid: a run of empty finest grids makes the output
    smaller than the image (the caller then resizes the synthesis output).
    """

    def __init__(self, grid_shapes: Sequence[tuple[int, int, int]], ups_k_size: int, refine_k_size: int):
        super().__init__()
        channels = [c for c, _, _ in grid_shapes]
        if channels[-1] == 0:
            raise ValueError("the coarsest latent grid must have a channel")
        first_used = next(i for i, c in enumerate(channels) if c)
        if not all(channels[first_used:]):
            raise ValueError(f"only the finest latent grids may be empty, got channels {channels}")
        self.grid_shapes = [tuple(s) for s in grid_shapes]
        self.first_used = first_used
        n_levels = len(grid_shapes) - 1
        self.upsamplers = nn.ModuleList(SymmetricTransposedUpsampler(ups_k_size) for _ in range(n_levels))
        self.refiners = nn.ModuleList(SymmetricRefineFilter(refine_k_size) for _ in range(n_levels))

    @property
    def output_size(self) -> tuple[int, int]:
        _, height, width = self.grid_shapes[self.first_used]
        return height, width

    def forward(self, grids: Sequence[Tensor]) -> Tensor:
        """Grids [1, C_i, h_i, w_i], finest first -> [1, sum(C_i), h, w] at the finest used size."""
        dense = grids[-1]
        for level, target_index in enumerate(range(len(grids) - 2, self.first_used - 1, -1)):
            target = grids[target_index]
            _, height, width = self.grid_shapes[target_index]
            n_channels = dense.shape[1]
            upsampled = self.upsamplers[level](dense.view(n_channels, 1, *dense.shape[-2:]))
            upsampled = upsampled[..., :height, :width].reshape(1, n_channels, height, width)
            dense = torch.cat([self.refiners[level](target), upsampled], dim=1)
        return dense
