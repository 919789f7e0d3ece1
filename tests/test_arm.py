import pytest
import torch

from coolchic_pl.model.arm import CONTEXT_PATTERNS, Arm, context_index, gather_contexts


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
    mu, log_scale = arm(gather_contexts(latents, index))
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
    x = torch.randn(64, 16)
    mu, log_scale = arm(x)
    expected = torch.relu(x) @ arm.output.weight.T  # hidden layers start as relu(identity)
    assert torch.allclose(torch.stack([mu, log_scale], 1), expected, atol=1e-6)
    with pytest.raises(ValueError, match="ARM context size"):
        Arm(12, 2)
