"""Learned upsampling of the latent pyramid to one dense [1, sum(C_i), H, W] tensor.

Every filter is single-channel, separable (2D kernel = w outer w) and symmetric, so it
is stored as half a 1D kernel. There is one x2 upsampling filter and one refine
(pre-concatenation) filter per pyramid level; the half kernels of all levels are held in
one [levels, half] parameter per family, so that building every kernel costs a couple of
tensor operations per step instead of a few per level.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coolchic_pl import _native
from coolchic_pl.model.layout import check_upsampling, polyphase_index

# Right half of the negated bicubic (a = -0.75) kernel used by the reference to
# initialise 8-tap (and longer) upsampling filters; the sign cancels in w outer w.
BICUBIC_HALF_KERNEL = (0.0351562, 0.1054687, -0.2617187, -0.8789063)
BILINEAR_HALF_KERNEL = (0.25, 0.75)


def mirror_half_kernels(half: Tensor, kernel_size: int) -> Tensor:
    """[..., n] halves -> [..., kernel_size] kernels: (a b c) -> (a b c c b a) or (a b c b a)."""
    return torch.cat([half, half.flip(-1)[..., kernel_size % 2:]], dim=-1)


def compiled_path(x: Tensor) -> bool:
    """Whether the upsampling of ``x``'s grids runs compiled (:class:`_CompiledUpsampling`):
    on the CPU in float32; other devices and types keep the tensor operations."""
    return x.device.type == "cpu" and x.dtype == torch.float32


def single_channel_conv(x: Tensor, weight: Tensor, padding: tuple[int, int]) -> Tensor:
    """conv2d for one input channel, on CPU through ATen's im2col kernel.

    For single-channel inputs oneDNN (what F.conv2d picks on CPU) is 2 to 4 times
    slower than the plain im2col + GEMM kernel, forward and backward, measured on
    2 cores at 192x128 and 768x512; other devices keep the default backend.
    """
    if x.device.type != "cpu":
        return F.conv2d(x, weight, padding=padding)
    return torch.ops.aten.thnn_conv2d(x, weight, list(weight.shape[-2:]), None, [1, 1], list(padding))


# Levels whose input has more than this many samples on a side filter by banded matrix
# products (768x512: 58 -> 37 ms a step, forward and backward); smaller ones by single-channel
# convolutions, which take fewer operations (192x128: banded levels measured slower).
BANDED_ABOVE = 128
# Input samples per block of the banded matrix products below: a product does B + taps - 1
# multiplications per output where the filter needs taps, and in exchange a pass is one matrix
# product with neither im2col copies nor per-tap passes.
BLOCK = 16


def block_selection(stride: int, taps: int, block: int = BLOCK) -> Tensor:
    """[stride * block * (block + taps - 1), stride * taps] 0/1 matrix S such that S @ kernels.view(-1),
    viewed [stride * block, block + taps - 1], is the block matrix A of a filter with ``stride``
    phases: output stride * i + r of a block = sum_t kernels[r, t] * input[i + t]."""
    width = block + taps - 1
    selection = torch.zeros(stride * block * width, stride * taps)
    for output in range(stride * block):
        for tap in range(taps):
            selection[output * width + output // stride + tap, (output % stride) * taps + tap] = 1.0
    return selection


def banded_pass(x: Tensor, matrix: Tensor, dim: int, length: int) -> Tensor:
    """Filter ``x`` along ``dim`` (-2 or -1) with a block matrix [stride * B, B + taps - 1]: ``x``
    holds ``length`` + taps - 1 samples along ``dim`` (the filter's padding included) and the
    output stride * ``length``."""
    return _BandedPass.apply(x, matrix, dim, length)


class _BandedPass(torch.autograd.Function):
    """The input is cut into windows of B + taps - 1 samples, B apart, copied side by side
    (a matrix product reads overlapping strided windows many times slower), and each window
    times the block matrix gives stride * B outputs. The backward folds the windows'
    gradients back by hand: two slice additions, where autograd's unfold backward scatters."""

    @staticmethod
    def forward(ctx, x: Tensor, matrix: Tensor, dim: int, length: int) -> Tensor:
        outputs, window = matrix.shape
        blocks = -(-length // BLOCK)
        missing = blocks * BLOCK + window - BLOCK - x.shape[dim]
        padded = F.pad(x, (0, missing) if dim == -1 else (0, 0, 0, missing))
        if dim == -1:  # windows [..., rows, blocks, window]
            windows = padded.unfold(-1, window, BLOCK).contiguous()
            y = torch.matmul(windows, matrix.t())
            y = y.reshape(*y.shape[:-2], -1)[..., :length * outputs // BLOCK]
        else:  # windows [..., blocks, window, columns]
            windows = padded.unfold(-2, window, BLOCK).transpose(-1, -2).contiguous()
            y = torch.matmul(matrix, windows)
            y = y.reshape(*y.shape[:-3], -1, y.shape[-1])[..., :length * outputs // BLOCK, :]
        ctx.save_for_backward(windows, matrix)
        ctx.dim, ctx.input_length = dim, x.shape[dim]
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        windows, matrix = ctx.saved_tensors
        outputs, window = matrix.shape
        dim, halo = ctx.dim, window - BLOCK
        if dim == -1:
            *batch, blocks, _ = windows.shape
            grad_blocks = F.pad(grad, (0, blocks * outputs - grad.shape[-1])).view(*batch, blocks, outputs)
            grad_matrix = grad_blocks.reshape(-1, outputs).t() @ windows.view(-1, window)
            grad_windows = grad_blocks @ matrix
            grad_x = grad.new_empty(*batch, blocks + 1, BLOCK)
            grad_x[..., -1, :].zero_()
            grad_x[..., :-1, :] = grad_windows[..., :BLOCK]
            grad_x[..., 1:, :halo] += grad_windows[..., BLOCK:]
            return grad_x.view(*batch, -1)[..., :ctx.input_length], grad_matrix, None, None
        *batch, blocks, _, columns = windows.shape
        grad_blocks = F.pad(grad, (0, 0, 0, blocks * outputs - grad.shape[-2])).view(*batch, blocks, outputs, columns)
        grad_matrix = torch.einsum("...ow,...kw->ok", grad_blocks, windows)
        grad_windows = matrix.t() @ grad_blocks
        grad_x = grad.new_empty(*batch, blocks + 1, BLOCK, columns)
        grad_x[..., -1, :, :].zero_()
        grad_x[..., :-1, :, :] = grad_windows[..., :BLOCK, :]
        grad_x[..., 1:, :halo, :] += grad_windows[..., BLOCK:, :]
        return grad_x.view(*batch, -1, columns)[..., :ctx.input_length, :], grad_matrix, None, None


class Upsampling(nn.Module):
    """Coarse-to-fine traversal: level j upsamples the running tensor (grids coarser than
    L-2-j) by 2, crops it to grid L-2-j's size and concatenates it after the refined grid
    L-2-j. Output channels therefore come in grid order, finest first.

    The x2 filter is even (``ups_k_size``, bicubic init for k >= 8, bilinear below),
    replicate-padded and half-pixel centred; the refine filter is odd
    (``ups_preconcat_k_size``), zero-padded, Dirac-initialised and residual, so it
    returns 2x at initialisation as in the reference. Traversal stops at the first empty
    grid: a run of empty finest grids makes the output smaller than the image.
    """

    def __init__(self, grid_shapes: Sequence[tuple[int, int, int]], ups_k_size: int, refine_k_size: int):
        super().__init__()
        first_used = check_upsampling(grid_shapes, ups_k_size, refine_k_size)
        self.grid_shapes = [tuple(s) for s in grid_shapes]
        self.first_used = first_used
        self.ups_k_size = ups_k_size
        self.refine_k_size = refine_k_size
        n_levels = len(grid_shapes) - 1
        self.upsampling_half_kernels = nn.Parameter(torch.zeros(n_levels, ups_k_size // 2))
        self.refine_half_kernels = nn.Parameter(torch.zeros(n_levels, (refine_k_size + 1) // 2))
        taps, first, last = polyphase_index(ups_k_size)
        index = torch.tensor(taps)
        self.register_buffer("polyphase_index", index, persistent=False)
        self.replicate_padding = (-first, last)
        self.register_buffer("upsampling_selection", block_selection(2, index.shape[1]), persistent=False)
        self.register_buffer("refine_selection", block_selection(1, refine_k_size), persistent=False)
        # A block's halo (taps - 1 samples) must fit in the next block: longer filters keep the convolutions.
        fits_blocks = max(index.shape[1], refine_k_size) - 1 <= BLOCK
        self.banded_levels = {level for level, target in enumerate(range(len(grid_shapes) - 2, first_used - 1, -1))
                              if fits_blocks and max(grid_shapes[target + 1][1:]) > BANDED_ABOVE}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        core = BICUBIC_HALF_KERNEL if self.ups_k_size >= 8 else BILINEAR_HALF_KERNEL
        with torch.no_grad():
            self.upsampling_half_kernels.zero_()
            self.upsampling_half_kernels[:, -len(core):] = torch.tensor(core)
            self.refine_half_kernels.zero_()
            self.refine_half_kernels[:, -1] = 1.0

    @property
    def output_size(self) -> tuple[int, int]:
        _, height, width = self.grid_shapes[self.first_used]
        return height, width

    def kernels(self) -> tuple[Tensor, Tensor, Tensor]:
        """The filters the learned half kernels make: the upsampling ones [levels, taps], their
        two polyphase halves [levels, 2, taps] and the refine ones (shared with the integer
        decoder and its bound check)."""
        full = mirror_half_kernels(self.upsampling_half_kernels, self.ups_k_size)
        phases = F.pad(full, (0, 1))[:, self.polyphase_index]
        return full, phases, mirror_half_kernels(self.refine_half_kernels, self.refine_k_size)

    def forward(self, grids: Sequence[Tensor]) -> Tensor:
        """Grids [1, C_i, h_i, w_i], finest first -> [1, sum(C_i), h, w] at the finest used size."""
        _, phases, refine = self.kernels()
        if compiled_path(grids[-1]):
            flat = torch.cat([grid.reshape(-1) for grid in grids])
            return _CompiledUpsampling.apply(self._native_geometry(), flat, phases, refine)
        if self.banded_levels:
            n_levels = phases.shape[0]
            up_matrices = (self.upsampling_selection @ phases.reshape(n_levels, -1).t()).t().reshape(
                n_levels, 2 * BLOCK, -1)
            refine_matrices = (self.refine_selection @ refine.t()).t().reshape(n_levels, BLOCK, -1)
        dense = grids[-1]
        for level, target_index in enumerate(range(len(grids) - 2, self.first_used - 1, -1)):
            _, height, width = self.grid_shapes[target_index]
            if level in self.banded_levels:
                upsampled = self._banded_upsample(dense, up_matrices[level])[..., :height, :width]
                refined = self._banded_refine(grids[target_index], refine_matrices[level])
            else:
                upsampled = self._upsample(dense, phases[level])[..., :height, :width]
                upsampled = upsampled.reshape(1, -1, height, width)
                refined = self._refine(grids[target_index], refine[level])
            dense = torch.cat([refined, upsampled], dim=1)
        return dense

    def _native_geometry(self) -> tuple:
        """The grids and filter shapes as :func:`coolchic_pl._native.upsampling_train_forward` takes them."""
        _, first, _ = polyphase_index(self.ups_k_size)
        return (tuple(self.grid_shapes), self.first_used, self.polyphase_index.shape[1], first, self.refine_k_size)

    def _banded_upsample(self, x: Tensor, matrix: Tensor) -> Tensor:
        """[1, C, h, w] -> [1, C, 2h, 2w]: replicate-padded, rows then columns."""
        height, width = x.shape[-2:]
        before, after = self.replicate_padding
        padded = F.pad(x, (before, after, before, after), mode="replicate")
        return banded_pass(banded_pass(padded, matrix, -2, height), matrix, -1, width)

    def _banded_refine(self, x: Tensor, matrix: Tensor) -> Tensor:
        """Zero-padded odd filter, rows then columns, plus the input (the residual)."""
        height, width = x.shape[-2:]
        half = self.refine_k_size // 2
        padded = F.pad(x, (half, half, half, half))
        return banded_pass(banded_pass(padded, matrix, -2, height), matrix, -1, width) + x

    def _upsample(self, x: Tensor, phases: Tensor) -> Tensor:
        """[1, C, h, w] -> [C, 1, 2h, 2w]: rows then columns, each as two interleaved phases."""
        channels, height, width = x.shape[1:]
        taps = phases.shape[-1]
        before, after = self.replicate_padding
        padded = F.pad(x.view(channels, 1, height, width), (before, after, before, after), mode="replicate")
        rows = single_channel_conv(padded, phases.view(2, 1, taps, 1), (0, 0))
        rows = rows.transpose(1, 2).reshape(channels, 1, 2 * height, width + before + after)
        cols = single_channel_conv(rows, phases.view(2, 1, 1, taps), (0, 0))
        return cols.permute(0, 2, 3, 1).reshape(channels, 1, 2 * height, 2 * width)

    def _refine(self, x: Tensor, kernel: Tensor) -> Tensor:
        k = self.refine_k_size
        rows = single_channel_conv(x, kernel.view(1, 1, k, 1), (k // 2, 0))
        return single_channel_conv(rows, kernel.view(1, 1, 1, k), (0, k // 2)) + x


class _CompiledUpsampling(torch.autograd.Function):
    """:meth:`Upsampling.forward` of a training step on the CPU in float32, compiled
    (``csrc/upsampling.c``): every level of every channel in one call each way, in place of
    a hundred tensor operations a level."""

    @staticmethod
    def forward(ctx, geometry: tuple, flat: Tensor, phases: Tensor, refine: Tensor) -> Tensor:
        grids, first_used, phase_taps, phase_offset, refine_taps = geometry
        spec = (grids, first_used, phases.detach().contiguous().numpy(), phase_taps, phase_offset,
                refine.detach().contiguous().numpy(), refine_taps)
        _, height, width = grids[first_used]
        out = flat.new_empty(1, sum(c for c, _, _ in grids), height, width)
        _native.upsampling_train_forward(flat.detach().numpy(), spec, out.numpy())
        ctx.spec = spec
        ctx.save_for_backward(flat, phases, refine)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        flat, phases, refine = ctx.saved_tensors
        grad_flat, grad_phases, grad_refine = torch.empty_like(flat), torch.empty_like(phases), torch.empty_like(refine)
        _native.upsampling_train_backward(flat.detach().numpy(), ctx.spec, grad.contiguous().numpy(), grad_flat.numpy(),
                                          grad_phases.numpy(), grad_refine.numpy())
        return None, grad_flat, grad_phases, grad_refine
