import pytest
import torch

from coolchic_pl.model.architecture import ARCHITECTURES
from coolchic_pl.model.layers import parse_synthesis_layers, synthesis_parameter_counts
from coolchic_pl.model.synthesis import Synthesis


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_reference_strings_parse(name: str) -> None:
    specs = parse_synthesis_layers(ARCHITECTURES[name].layers_synthesis, 7, 3)
    assert specs[-1].out_channels == 3
    assert specs[0].kernel_size == 1 and not specs[0].residual and specs[0].relu


def test_x_is_replaced_by_the_output_count() -> None:
    specs = parse_synthesis_layers("9-1-linear-relu,X-1-linear-none,X-3-residual-none", 5, 2)
    assert [s.out_channels for s in specs] == [9, 2, 2]
    assert [s.kernel_size for s in specs] == [1, 1, 3]


@pytest.mark.parametrize("layers, message", [
    ("", "empty"),
    ("48-1-linear", "layer 1 '48-1-linear' is malformed"),
    ("48-1-linear-relu,X-1-conv-none", "layer 2 'X-1-conv-none' is malformed"),
    ("48-1-linear-gelu", "malformed"),
    ("48-2-linear-relu,X-1-linear-none", "even kernel"),
    ("X-1-residual-none", "residual but maps 7 to 3"),
    ("0-1-linear-none,X-1-linear-none", "at least one output"),
    ("48-1-linear-relu", "ends with 48 channels"),
    ("48-1-linear-relu,,X-1-linear-none", "layer 2 '' is malformed"),
])
def test_malformed_strings_are_rejected_clearly(layers: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_synthesis_layers(layers, 7, 3)


def test_initialisation_and_replicate_padding() -> None:
    synthesis = Synthesis(7, "48-1-linear-relu,X-1-linear-none,X-3-residual-relu,X-3-residual-none", 3)
    first, second, third, fourth = synthesis.layers
    assert torch.count_nonzero(third.weight) == 0 and torch.count_nonzero(fourth.weight) == 0
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in synthesis.layers)
    bound = 1 / (48**2 * 7**0.5)
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > bound / 2
    # Replicate padding: a constant input gives a constant output, borders included.
    with torch.no_grad():
        for layer in synthesis.layers:
            layer.weight.normal_()
            layer.bias.normal_()
    out = synthesis(torch.ones(1, 7, 9, 13))
    assert out.shape == (1, 3, 9, 13)
    assert torch.allclose(out, out[..., :1, :1].expand_as(out), atol=1e-4)


def test_matrix_product_path_equals_convolution() -> None:
    synthesis = Synthesis(7, "16-1-linear-relu,16-1-residual-relu,X-3-linear-none", 3)
    with torch.no_grad():
        for layer in synthesis.layers:
            layer.weight.normal_(0, 0.3)
            layer.bias.normal_()
    x = torch.randn(1, 7, 10, 12)
    expected = x
    for layer in synthesis.layers:
        pad = layer.spec.kernel_size // 2
        y = torch.nn.functional.conv2d(torch.nn.functional.pad(expected, (pad,) * 4, mode="replicate"),
                                       layer.weight, layer.bias)
        y = y + expected if layer.spec.residual else y
        expected = torch.relu(y) if layer.spec.relu else y
    assert torch.allclose(synthesis(x), expected, atol=1e-4)


@pytest.mark.parametrize("channels, out_channels, kernel, height, width",
                         [(3, 3, 3, 37, 53), (4, 2, 5, 16, 9), (3, 3, 3, 2, 1), (2, 3, 1, 5, 7)])
def test_the_compiled_k_by_k_layer_matches_the_padded_convolution(channels: int, out_channels: int, kernel: int,
                                                                   height: int, width: int) -> None:
    """On the CPU in float32 a k x k layer runs compiled (csrc/convtrain.c): its output and the
    gradients of its input, weight and bias are those of replicate padding and conv2d, at
    sizes narrower than the kernel too."""
    from coolchic_pl.model.synthesis import _CompiledConvolution

    torch.manual_seed(0)
    x = torch.randn(1, channels, height, width, requires_grad=True)
    weight = torch.randn(out_channels, channels, kernel, kernel, requires_grad=True)
    bias = torch.randn(out_channels, requires_grad=True)
    gradient = torch.randn(1, out_channels, height, width)
    results = []
    for compiled in (True, False):
        for t in (x, weight, bias):
            t.grad = None
        padded = torch.nn.functional.pad(x, (kernel // 2,) * 4, mode="replicate")
        y = _CompiledConvolution.apply(x, weight, bias) if compiled else torch.nn.functional.conv2d(padded, weight,
                                                                                                     bias)
        y.backward(gradient)
        results.append([y.detach(), x.grad.clone(), weight.grad.clone(), bias.grad.clone()])
    for ours, reference in zip(*results):
        assert torch.allclose(ours, reference, atol=1e-5 * reference.abs().max().item())


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_parameter_counts_from_the_layer_string_match_the_built_synthesis(name: str) -> None:
    """What a decoder checks against a file before building the synthesis is what it builds."""
    arch = ARCHITECTURES[name]
    n_inputs = sum(arch.n_ft_per_res)
    synthesis = Synthesis(n_inputs, arch.layers_synthesis, 3, arch.synthesis_stabiliser)
    layers = [*synthesis.layers, *filter(None, [synthesis.stabiliser])]
    weights, biases = (sum(getattr(layer, name).numel() for layer in layers) for name in ("weight", "bias"))
    counts = synthesis_parameter_counts(n_inputs, arch.layers_synthesis, 3, arch.synthesis_stabiliser)
    assert counts == (weights, biases)


@pytest.mark.parametrize("arch", ["lop5", "hop5", "hop"])
def test_training_runs_the_leading_1x1_layers_as_the_evaluation_does(arch: str, monkeypatch) -> None:
    """The chunked one-node 1x1 layers of training (:mod:`coolchic_pl.model.pointwise`) give
    the layer-by-layer output and the gradients autograd takes through it."""
    from coolchic_pl.model import pointwise
    from coolchic_pl.model import synthesis as synthesis_module
    from coolchic_pl.model.architecture import architecture_from_name

    monkeypatch.setattr(pointwise, "CHUNK_PIXELS", 1000)  # chunks that split rows
    monkeypatch.setattr(synthesis_module, "MIN_HIDDEN_FLOATS", 0)  # a frame this small runs layer by layer
    architecture = architecture_from_name(arch)
    torch.manual_seed(0)
    synthesis = Synthesis(7, architecture.layers_synthesis, 3, architecture.synthesis_stabiliser)
    with torch.no_grad():
        for p in synthesis.parameters():
            p.normal_().mul_(0.3)
    latents = torch.randn(1, 7, 40, 56, requires_grad=True)
    weights = torch.randn(1, 3, 40, 56)
    assert synthesis.n_pointwise == 2
    results = []
    for fused in (2, 0):
        monkeypatch.setattr(synthesis, "n_pointwise", fused)
        tensors = [latents, *synthesis.parameters()]
        for t in tensors:
            t.grad = None
        out = synthesis(latents)
        out.backward(weights)
        results.append([out.detach(), *(t.grad for t in tensors)])
    for ours, reference in zip(*results):
        assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-5 * reference.abs().max().item())
