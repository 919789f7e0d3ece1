import pytest
import torch

from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.model.arm import Arm, context_index, gather_contexts
from coolchic_pl.model.contexts import CONTEXT_PATTERNS, context_offsets
from coolchic_pl.model.coolchic import CoolChic


def test_patterns_follow_reference_order() -> None:
    assert CONTEXT_PATTERNS[8] == ((-3, 0), (-2, 0), (-1, -1), (-1, 0), (-1, 1), (0, -3), (0, -2), (0, -1))
    # Reference 9x9-window indices (row-major, centre = 40) of the 16- and 32-context patterns.
    as_window = {n: [(dy + 4) * 9 + dx + 4 for dy, dx in p] for n, p in CONTEXT_PATTERNS.items()}
    assert as_window[16] == [13, 14, 20, 21, 22, 23, 24, 28, 29, 30, 31, 32, 33, 37, 38, 39]
    assert as_window[24] == [4, 11, 12, 13, 14, 15, 19, 20, 21, 22, 23, 24, 25, 28, 29, 30, 31, 32, 33, 34,
                             36, 37, 38, 39]
    assert as_window[32] == [2, 3, 4, 5, *range(10, 17), *range(19, 27), *range(27, 36), 36, 37, 38, 39]
    for n, pattern in CONTEXT_PATTERNS.items():
        assert len(pattern) == len(set(pattern)) == n
        assert all(dy < 0 or (dy == 0 and dx < 0) for dy, dx in pattern), "context must be causal"


def _predict(arm: Arm, latents: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    mu, log_scale = arm(gather_contexts(latents, index.t().contiguous()))
    return torch.stack([mu, log_scale], dim=1)


@pytest.mark.parametrize("dim_arm", [8, 16, 24, 32])
def test_arm_is_causal(dim_arm: int) -> None:
    shapes = [(1, 9, 11), (0, 5, 6), (1, 3, 3)]
    index = context_index(shapes, dim_arm)
    arm = Arm(dim_arm, 2)
    with torch.no_grad():
        for p in arm.parameters():
            p.normal_(0, 0.5)
    latents = torch.randn(9 * 11 + 9).round()
    base = _predict(arm, latents, index)
    p_row, p_col, width = 5, 6, 11
    position = p_row * width + p_col
    context_positions = {(p_row + dy) * width + p_col + dx for dy, dx in CONTEXT_PATTERNS[dim_arm]}
    for q in range(9 * 11):
        changed = latents.clone()
        changed[q] += 3.0
        moved = not torch.equal(_predict(arm, changed, index)[position], base[position])
        assert moved == (q in context_positions), f"latent {q} {'should' if not moved else 'should not'} matter"
    # Another grid never feeds this one.
    changed = latents.clone()
    changed[9 * 11:] += 5.0
    assert torch.equal(_predict(arm, changed, index)[:9 * 11], base[:9 * 11])


def test_contexts_outside_the_grid_are_zero() -> None:
    index = context_index([(1, 4, 5)], 16)
    latents = torch.arange(1.0, 21.0)
    contexts = gather_contexts(latents, index)
    assert torch.equal(contexts[0], torch.zeros(16))  # top-left latent: nothing decoded yet
    # Latent (1, 0): only (-1, 0), (-1, 1) and (-1, 2), the row above, are inside the grid.
    expected = torch.zeros(16)
    pattern = CONTEXT_PATTERNS[16]
    for dx in (0, 1, 2):
        expected[pattern.index((-1, dx))] = latents[dx]
    assert torch.equal(contexts[5], expected)


def test_arm_initialisation_and_output_scale() -> None:
    arm = Arm(16, 2)
    for layer in arm.hidden:
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0
    assert torch.count_nonzero(arm.output.bias) == 0
    x = torch.randn(16, 64)  # channels-first contexts
    mu, log_scale = arm(x)
    expected = torch.relu(x).T @ arm.output.weight.T  # hidden layers start as relu(identity)
    assert torch.allclose(torch.stack([mu, log_scale], 1), expected, atol=1e-6)
    with pytest.raises(ValueError, match="ARM context size"):
        context_offsets(12, "v4")
    with pytest.raises(ValueError, match="ARM context size"):
        context_offsets(41, "v5")


def test_v5_context_order_is_nearest_first_and_causal() -> None:
    offsets = context_offsets(40, "v5")
    assert offsets[:6] == ((0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0))
    assert len(set(offsets)) == 40
    assert all(dy < 0 or (dy == 0 and dx < 0) for dy, dx in offsets)
    assert context_offsets(14, "v5") == offsets[:14]


def test_ifce_and_stabiliser_keep_the_entropy_model_causal() -> None:
    """Each latent's (mu, scale) may only depend on what the decoder has when it decodes it:
    its own grid's context positions and, through the IFCE, the coarser grids (decoded first)."""
    architecture = CoolChicArchitecture(
        n_ft_per_res=(1, 1, 1, 1), dim_arm=14, n_hidden_layers_arm=2, layers_synthesis="X-1-linear-none",
        context_order="v5", arm_stabiliser=True, n_ifce_features=3, n_ifce_grids=2, hyper_per_res=(0, 0, 1, 1))
    model = CoolChic((12, 20), architecture)
    with torch.no_grad():
        for p in model.arm.parameters():
            p.normal_(0, 0.5)
    latent = model.latent
    coded = latent.coded_grids()
    owner = [(g, i // latent.sizes[g][1], i % latent.sizes[g][1]) for g in coded for i in range(latent.numels[g])]

    def predict(flat: torch.Tensor) -> torch.Tensor:
        return torch.stack(model.arm(model.arm.contexts(flat, model.context_index)), dim=1)

    latents = torch.randn(latent.n_latents).mul(3).round()
    base = predict(latents)
    offsets = set(context_offsets(14, "v5"))
    seen_ifce = set()
    for q, (grid_q, row_q, col_q) in enumerate(owner):
        changed = latents.clone()
        changed[q] += 3.0
        moved = (predict(changed) != base).any(dim=1)
        for i, (grid_i, row_i, col_i) in enumerate(owner):
            if grid_i == grid_q:
                expected = (row_q - row_i, col_q - col_i) in offsets
                assert bool(moved[i]) == expected, f"grid {grid_i}: latent {q} -> {i}"
            elif moved[i]:
                assert latent.resolutions[grid_q] > latent.resolutions[grid_i], f"grid {grid_q} feeds {grid_i}"
                assert latent.resolutions[grid_i] < 2, "only the IFCE grids read other grids"
                seen_ifce.add(grid_i)
    assert seen_ifce == {0, 1}


def test_ifce_matches_cool_chic_5_formulation() -> None:
    """Cool-Chic 5 applies each IFCE at the next-coarser resolution to the nearest-upsampled
    coarser grids, then upsamples its output by 2 and crops: the gather must give the same."""
    architecture = CoolChicArchitecture(
        n_ft_per_res=(1, 1, 1, 1, 1), dim_arm=6, layers_synthesis="X-1-linear-none", context_order="v5",
        n_ifce_features=2, n_ifce_grids=3, hyper_per_res=(0, 0, 0, 1, 1))
    model = CoolChic((21, 35), architecture)
    ifce = model.arm.ifce
    with torch.no_grad():
        for p in ifce.parameters():
            p.normal_()
    flat = torch.randn(model.latent.n_latents).round()
    grids = model.latent.unflatten(flat)
    resolutions = model.latent.resolutions
    features = ifce(flat).T.split(model.latent.numels)
    for position, grid in enumerate(ifce.grids):
        height, width = model.latent.sizes[grid]
        coarser = sorted((g for g, r in enumerate(resolutions) if r > resolutions[grid]), key=lambda g: resolutions[g])
        target_h, target_w = model.latent.sizes[resolutions.index(resolutions[grid] + 1)]
        stack = []
        for g in coarser:
            factor = 2 ** (resolutions[g] - resolutions[grid] - 1)
            upsampled = torch.nn.functional.interpolate(grids[g], scale_factor=factor, mode="nearest")
            stack.append(upsampled[..., :target_h, :target_w])
        x = torch.cat(stack, dim=1)[0].permute(1, 2, 0)  # [h, w, n_inputs]
        layer = ifce.layers[position]
        out = (x @ layer.weight.T + layer.bias).permute(2, 0, 1)[None]
        expected = torch.nn.functional.interpolate(out, scale_factor=2, mode="nearest")[..., :height, :width]
        assert torch.allclose(features[grid], expected[0].permute(1, 2, 0).reshape(-1, 2), atol=1e-5)


@pytest.mark.parametrize("arch, chunk, compiled", [("lop5", 8192, True), ("hop5", 1000, True), ("hop", 777, True),
                                                     ("lop5", 8192, False), ("hop5", 1000, False), ("hop", 777, False)])
def test_fused_training_rate_matches_the_layer_by_layer_rate(arch: str, chunk: int, compiled: bool,
                                                              monkeypatch) -> None:
    """The training path's one-node rate gives the evaluation path's bits and the gradients
    autograd takes through it, for decoders with and without IFCE and stabiliser: compiled
    (the CPU's, csrc/armtrain.c) and in tensor operations (other devices', chunks splitting
    grids anywhere)."""
    from coolchic_pl.model import armrate
    from coolchic_pl.model.architecture import architecture_from_name
    from coolchic_pl.model.armrate import ArmPlan, arm_rate_bits

    if not compiled:
        monkeypatch.setattr(armrate, "_CompiledArmRate", armrate._ArmRate)

    torch.manual_seed(0)
    model = CoolChic((40, 56), architecture_from_name(arch))
    with torch.no_grad():
        for p in model.arm.parameters():
            p.normal_().mul_(0.3)
    latents = (torch.randn(model.latent.n_latents) * 3).round().requires_grad_()
    weights = torch.rand(model.latent.n_latents)
    results = []
    for rate in (lambda: model._rate(latents),
                 lambda: arm_rate_bits(ArmPlan.build(model.context_index, model.arm.ifce, chunk), model.arm, latents)):
        tensors = [latents, *model.arm.parameters()]
        for t in tensors:
            t.grad = None
        bits = rate()
        bits.backward(weights)
        results.append([bits.detach(), *(t.grad for t in tensors)])
    for ours, reference in zip(results[1], results[0]):
        assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
    assert results[0][1].abs().sum() > 0


def test_the_compiled_training_arm_refuses_contexts_outside_the_latents() -> None:
    """A context index past the latents is a ValueError, not a read out of bounds."""
    from coolchic_pl import _native
    from coolchic_pl.model.architecture import architecture_from_name
    from coolchic_pl.model.armrate import ArmPlan, _native_arm

    model = CoolChic((24, 32), architecture_from_name("lop5"))
    plan = ArmPlan.build(model.context_index, model.arm.ifce)
    arm = model.arm
    weights = [t for layer in arm.hidden for t in (layer.weight, layer.bias)] + [arm.output.weight, arm.output.bias,
                                                                                 arm.stabiliser.weight, arm.stabiliser.bias]
    weights += [t for layer in arm.ifce.layers for t in (layer.weight, layer.bias)]
    native = _native_arm(plan, len(arm.hidden), True, weights)
    padded = torch.zeros(plan.n_latents + 1)
    raw = torch.empty(2, plan.n_latents)
    _native.arm_train_forward(padded.numpy(), plan.spatial.numpy(), native, raw.numpy())
    spatial = plan.spatial.clone()
    spatial[0, -1] = plan.n_latents + 1
    with pytest.raises(ValueError, match="outside the latents"):
        _native.arm_train_forward(padded.numpy(), spatial.numpy(), native, raw.numpy())
