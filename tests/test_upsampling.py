import pytest
import torch
import torch.nn.functional as F

from coolchic_pl.model.layout import grid_sizes
from coolchic_pl.model.upsampling import Upsampling, mirror_half_kernels


def _shapes(height: int, width: int, channels=(1,) * 7):
    return [(c, h, w) for c, (h, w) in zip(channels, grid_sizes((height, width), len(channels)))]


@pytest.mark.parametrize("size", [(127, 191), (128, 192), (1, 1), (33, 2)])
def test_output_size_for_odd_sizes(size) -> None:
    shapes = _shapes(*size)
    upsampling = Upsampling(shapes, 8, 7)
    grids = [torch.randn(1, c, h, w) for c, h, w in shapes]
    assert upsampling(grids).shape == (1, 7, *size)


def test_constant_latent_upsamples_to_constant_at_init() -> None:
    shapes = _shapes(127, 191)
    upsampling = Upsampling(shapes, 8, 7)
    grids = [torch.full((1, c, h, w), 2.5) for c, h, w in shapes]
    dense = upsampling(grids)
    # Refine filters start as 2x (Dirac + residual); the coarsest grid has none.
    expected = torch.tensor([5.0] * 6 + [2.5]).view(1, 7, 1, 1).expand_as(dense)
    assert torch.allclose(dense, expected, atol=1e-4)


@pytest.mark.parametrize("kernel_size", [4, 6, 8, 10, 12])
def test_polyphase_equals_reference_transposed_convolution(kernel_size: int) -> None:
    shapes = [(1, 13, 17), (1, 7, 9)]
    upsampling = Upsampling(shapes, kernel_size, 7)
    with torch.no_grad():
        upsampling.upsampling_half_kernels.normal_()
        upsampling.refine_half_kernels.normal_()
    coarse, fine = torch.randn(1, 1, 7, 9), torch.randn(1, 1, 13, 17)
    kernel = mirror_half_kernels(upsampling.upsampling_half_kernels[0], kernel_size)
    pad, crop = kernel_size // 2, 3 * kernel_size // 2 - 1
    reference = F.conv_transpose2d(F.pad(coarse, (pad,) * 4, mode="replicate"),
                                   torch.outer(kernel, kernel).view(1, 1, kernel_size, kernel_size), stride=2)
    reference = reference[..., crop:-crop, crop:-crop][..., :13, :17]
    refine = mirror_half_kernels(upsampling.refine_half_kernels[0], 7)
    refined = F.conv2d(fine, torch.outer(refine, refine).view(1, 1, 7, 7), padding=3) + fine
    dense = upsampling([fine, coarse])
    assert torch.allclose(dense[:, 1:], reference, atol=1e-4)
    assert torch.allclose(dense[:, :1], refined, atol=1e-4)


def test_bilinear_and_bicubic_initialisation() -> None:
    bicubic = Upsampling(_shapes(16, 16, (1, 1)), 8, 7)
    assert torch.allclose(bicubic.upsampling_half_kernels[0],
                          torch.tensor([0.0351562, 0.1054687, -0.2617187, -0.8789063]))
    bilinear = Upsampling(_shapes(16, 16, (1, 1)), 6, 5)
    assert torch.allclose(bilinear.upsampling_half_kernels[0], torch.tensor([0.0, 0.25, 0.75]))
    assert torch.equal(bilinear.refine_half_kernels[0], torch.tensor([0.0, 0.0, 1.0]))


def test_rejects_bad_kernel_sizes_and_layouts() -> None:
    with pytest.raises(ValueError, match="even and >= 4"):
        Upsampling(_shapes(8, 8, (1, 1)), 7, 7)
    with pytest.raises(ValueError, match="must be odd"):
        Upsampling(_shapes(8, 8, (1, 1)), 8, 6)
    with pytest.raises(ValueError, match="only the finest"):
        Upsampling(_shapes(8, 8, (1, 0, 1)), 8, 7)


@pytest.mark.parametrize("ups_k, refine_k", [(8, 7), (4, 1), (12, 3)])
def test_banded_matrix_levels_match_the_convolution_levels(ups_k: int, refine_k: int, monkeypatch) -> None:
    """Large levels run as banded matrix products, small ones as convolutions: forced on
    every level, the banded passes give the convolutions' output and gradients, at odd sizes
    that leave partial blocks."""
    from coolchic_pl.model import upsampling

    monkeypatch.setattr(upsampling, "compiled_path", lambda x: False)
    shapes = [(1, h, w) for h, w in grid_sizes((75, 101), 6)]
    grids = [torch.randn(1, *shape, requires_grad=True) for shape in shapes]
    results = []
    for banded_above in (10_000, 0):
        monkeypatch.setattr(upsampling, "BANDED_ABOVE", banded_above)
        torch.manual_seed(0)
        module = Upsampling(shapes, ups_k, refine_k)
        with torch.no_grad():
            module.upsampling_half_kernels.add_(torch.randn_like(module.upsampling_half_kernels) * 0.1)
            module.refine_half_kernels.add_(torch.randn_like(module.refine_half_kernels) * 0.1)
        assert len(module.banded_levels) == (0 if banded_above else 5)
        tensors = [*grids, *module.parameters()]
        for t in tensors:
            t.grad = None
        out = module(grids)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        results.append([out.detach(), *(t.grad.clone() for t in tensors)])
    for banded, convolution in zip(results[1], results[0]):
        assert torch.allclose(banded, convolution, atol=1e-5 * convolution.abs().max().item())


@pytest.mark.parametrize("ups_k, refine_k, channels", [(8, 7, (1,) * 7), (4, 1, (1, 1, 1, 1)), (12, 3, (0, 0, 1, 1, 1)),
                                                      (8, 7, (0, 0, 0, 0, 0, 0, 1))])
def test_the_compiled_upsampling_matches_the_tensor_operations(ups_k: int, refine_k: int, channels: tuple,
                                                               monkeypatch) -> None:
    """On the CPU in float32 the upsampling runs compiled (csrc/upsampling.c): its output and
    the gradients of the grids and the filters are those of the tensor path (no gradient
    there meaning zeros), with empty finest grids and odd sizes."""
    from coolchic_pl.model import upsampling

    shapes = [(c, h, w) for c, (h, w) in zip(channels, grid_sizes((75, 101), len(channels)))]
    torch.manual_seed(0)
    module = Upsampling(shapes, ups_k, refine_k)
    with torch.no_grad():
        module.upsampling_half_kernels.add_(torch.randn_like(module.upsampling_half_kernels) * 0.1)
        module.refine_half_kernels.add_(torch.randn_like(module.refine_half_kernels) * 0.1)
    grids = [torch.randn(1, *shape, requires_grad=True) for shape in shapes]
    results = []
    for compiled in (True, False):
        monkeypatch.setattr(upsampling, "compiled_path", lambda x: compiled)
        tensors = [*grids, *module.parameters()]
        for t in tensors:
            t.grad = None
        out = module(grids)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        results.append([out.detach(), *(torch.zeros_like(t) if t.grad is None else t.grad.clone() for t in tensors)])
    assert results[1][-1].abs().sum() > 0 or channels[-2] == 0
    for ours, reference in zip(*results):
        assert ours.shape == reference.shape
        assert torch.allclose(ours, reference, atol=1e-5 * float(reference.abs().sum() and reference.abs().max()))


@pytest.mark.parametrize("dim", [-1, -2])
def test_banded_pass_gradients(dim: int) -> None:
    from coolchic_pl.model.upsampling import BLOCK, banded_pass, block_selection

    x = torch.randn(2, 1, 23, 37, dtype=torch.double, requires_grad=True)
    kernels = torch.randn(2, 5, dtype=torch.double, requires_grad=True)
    selection = block_selection(2, 5).double()
    length = x.shape[dim] - 4

    def apply(x, kernels):
        return banded_pass(x, (selection @ kernels.reshape(-1)).view(2 * BLOCK, -1), dim, length)

    assert apply(x, kernels).shape[dim] == 2 * length
    assert torch.autograd.gradcheck(apply, (x, kernels))
