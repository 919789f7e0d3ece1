"""RDOQ of the quantised networks: it never raises the RD loss, its rate is the real
exp-Golomb rate of the new integers, and an interrupted run resumes exactly."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from PIL import Image

from coolchic_pl.config import make_preset
from coolchic_pl.io import read_frame
from coolchic_pl.model.architecture import V5_ARCHITECTURES
from coolchic_pl.model.evalcache import reusing_unchanged_results
from coolchic_pl.nnquant.expgolomb import expgolomb_bits
from coolchic_pl.nnquant.quantize import network_rate_bits, quantize_networks, split_weights_and_biases
from coolchic_pl.nnquant.rdoq import Rdoq
from coolchic_pl.training.module import CoolChicModule


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def quantised(kodim15: Path, tmp_path_factory) -> CoolChicModule:
    """lop5 on a 48x40 crop after 60 training steps and the q-step search."""
    crop = tmp_path_factory.mktemp("rdoq") / "crop.png"
    with Image.open(kodim15) as image:
        image.crop((64, 40, 112, 80)).save(crop)
    torch.manual_seed(0)
    module = CoolChicModule(read_frame(str(crop)), V5_ARCHITECTURES["lop5"], lmbda=2e-3)
    module.phase = make_preset("intra5", 1000).all_phases[0]
    optimizer = module.configure_optimizers()
    for _ in range(60):
        optimizer.zero_grad(set_to_none=True)
        module.training_loss().backward()
        optimizer.step()
    module.eval()
    module.quantization = quantize_networks(module.coolchic, module.evaluate_loss)
    return module


def _integer_rate(module: CoolChicModule, quantization) -> int:
    total = 0
    for name, network in module.coolchic.quantizable_modules().items():
        q = quantization[name]
        for params, step, order in zip(split_weights_and_biases(network), (q.weight_step, q.bias_step),
                                       (q.weight_order, q.bias_order)):
            if params:
                total += int(expgolomb_bits(torch.cat([torch.round(p.reshape(-1) / step) for p in params]), order))
    return total


def test_rdoq_never_raises_the_rd_loss_and_counts_the_real_rate(quantised: CoolChicModule) -> None:
    module = copy.deepcopy(quantised)
    before = module.evaluate_loss(network_rate_bits(module.quantization))
    losses = []
    rdoq = Rdoq(module.coolchic, module.quantization, module.evaluate_loss)
    result = rdoq.run(after_each=lambda: losses.append(module.evaluate_loss(network_rate_bits(rdoq.quantization))))
    after = module.evaluate_loss(network_rate_bits(result))
    assert after < before, "RDOQ found nothing to improve on a freshly quantised decoder"
    assert all(later <= earlier + 1e-12 for earlier, later in zip([before, *losses], [*losses, after]))
    assert network_rate_bits(result) == _integer_rate(module, result)
    assert rdoq.tries > sum(p.numel() for n in module.coolchic.quantizable_modules().values() for p in n.parameters())


def test_interrupted_rdoq_resumes_to_the_same_decoder(quantised: CoolChicModule) -> None:
    whole = copy.deepcopy(quantised)
    expected = Rdoq(whole.coolchic, whole.quantization, whole.evaluate_loss).run()

    interrupted = copy.deepcopy(quantised)
    rdoq = Rdoq(interrupted.coolchic, interrupted.quantization, interrupted.evaluate_loss)
    calls = []

    def stop_at_the_third() -> None:
        calls.append(rdoq.state_dict())
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        rdoq.run(after_each=stop_at_the_third, every=16)
    resumed = copy.deepcopy(quantised)  # a fresh process: the decoder as the q-step search left it
    again = Rdoq(resumed.coolchic, resumed.quantization, resumed.evaluate_loss)
    again.load_state_dict(calls[-1])
    assert again.run() == expected
    for mine, theirs in zip(resumed.coolchic.parameters(), whole.coolchic.parameters()):
        assert torch.equal(mine, theirs)


def test_reused_layer_outputs_give_the_loss_of_a_fresh_evaluation(quantised: CoolChicModule) -> None:
    """RDOQ's tries change one parameter at a time and recompute only the layers after it;
    each try's loss must be bit-identical to evaluating the whole decoder from scratch."""
    module = copy.deepcopy(quantised)
    bits = network_rate_bits(module.quantization)
    changed = 0
    with torch.no_grad():
        for name, network in module.coolchic.quantizable_modules().items():
            for parameter_name, parameter in network.named_parameters():
                flat = parameter.view(-1)
                with reusing_unchanged_results():
                    unchanged = module.evaluate_loss(bits)
                    flat[0] += 0.25
                    reused = module.evaluate_loss(bits)
                fresh = module.evaluate_loss(bits)
                flat[0] -= 0.25
                assert reused == fresh, f"{name}.{parameter_name}"
                changed += reused != unchanged
    assert changed >= 10, "too few parameter changes moved the loss for this check to mean anything"


def test_one_integer_is_priced_as_the_tensor_pricing_does() -> None:
    """RDOQ prices one parameter at a time in integer arithmetic; every order, both signs,
    zero and the powers of two where the code length steps up agree with the tensor count."""
    from coolchic_pl.nnquant.expgolomb import EXPGOLOMB_ORDERS, expgolomb_bits, expgolomb_length

    values = sorted({0, *(s * (2**k + d) for k in range(14) for d in (-1, 0, 1) for s in (-1, 1))})
    for order in EXPGOLOMB_ORDERS:
        assert [expgolomb_length(v, order) for v in values] == [
            int(expgolomb_bits(torch.tensor([v]), order)) for v in values]
