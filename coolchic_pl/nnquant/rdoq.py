"""Rate-distortion optimised quantisation of the network parameters (Cool-Chic 5's RDOQ).

After the q-step search every parameter is the integer nearest to value / step. Nearest
is not best: moving one integer by a few steps can lower the rate (a shorter exp-Golomb
code) more than it raises the distortion, or even lower both, since the networks were
trained before they were quantised. RDOQ visits the parameters of each network in a
random order and tries integer offsets -1, -2, ... then +1, +2, ... (up to
``max_offset``), going further in a direction only while the RD loss keeps falling, and
keeps the best. A change is kept only when it lowers the loss, and the exp-Golomb orders
are chosen again at the end of each network, which can only lower the rate, so RDOQ never
raises the loss.

Each try is one evaluation of the RD loss. Inside :func:`reusing_unchanged_results` an
ARM try recomputes only the latent rate, a synthesis try only the synthesis (its input,
the upsampled latents, is reused) and an upsampling try the image. The network rate of a
try is updated from the lengths of the one code that changed. A network coded as
differences from a predicted one moves its differences; one sent as the predicted network
itself has nothing to move.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import torch
from torch import Tensor

from coolchic_pl.model.evalcache import reusing_unchanged_results
from coolchic_pl.nnquant.expgolomb import best_expgolomb_order, expgolomb_length
from coolchic_pl.nnquant.quantize import (
    MAX_QUANTIZED_MAGNITUDE, ModuleQuantization, NetworkPrediction, QuantizableDecoder, network_rate_bits,
    quantized_integers, split_weights_and_biases,
)

MAX_OFFSET = 15


@dataclass
class RdoqPosition:
    """The next parameter to visit: network (in sorted name order), weights (0) or biases
    (1), and the index in that group's visiting order."""

    module_index: int = 0
    group: int = 0
    index: int = 0


class Rdoq:
    """Resumable RDOQ of a quantised decoder; ``quantization`` is updated as orders change.

    ``evaluate_loss(network_bits)`` is the test loss of the decoder as it is, counting
    ``network_bits`` for the networks. ``state_dict`` holds the position and every
    network parameter, so loading it restores the decoder exactly as it was.
    """

    def __init__(self, model: QuantizableDecoder, quantization: dict[str, ModuleQuantization],
                 evaluate_loss: Callable[[float], float], seed: int = 0, max_offset: int = MAX_OFFSET):
        self.modules = {name: split_weights_and_biases(module)
                        for name, module in sorted(model.quantizable_modules().items())
                        if quantization[name].coding != "same"}
        predictions = model.network_predictions()
        self.predicted: dict[str, NetworkPrediction | None] = {
            name: predictions[name] if quantization[name].coding == "delta" else None for name in self.modules}
        self.quantization = dict(quantization)
        self.evaluate_loss = evaluate_loss
        self.seed, self.max_offset = seed, max_offset
        self.position = RdoqPosition()
        self.tries = 0

    @property
    def finished(self) -> bool:
        return self.position.module_index >= len(self.modules)

    def _visiting_order(self, n: int) -> Tensor:
        """A permutation that depends only on the seed and the position's network and group,
        so a resumed run visits the same parameters in the same order."""
        generator = torch.Generator().manual_seed(self.seed * 1000 + 2 * self.position.module_index
                                                  + self.position.group)
        return torch.randperm(n, generator=generator, device="cpu")

    @torch.no_grad()
    def run(self, after_each: Callable[[], None] = lambda: None, every: int = 64) -> dict[str, ModuleQuantization]:
        """Visit every parameter left; ``after_each`` is called every ``every`` parameters
        and at each group's end, with the decoder in the state :meth:`state_dict` describes."""
        with reusing_unchanged_results():
            while not self.finished:
                name = list(self.modules)[self.position.module_index]
                self._visit_group(name, after_each, every)
                self._next_group(name)
                after_each()
        return dict(self.quantization)

    def _predicted(self, name: str, group: int) -> list[Tensor] | None:
        prediction = self.predicted[name]
        return None if prediction is None else (prediction.weights, prediction.biases)[group]

    def _visit_group(self, name: str, after_each: Callable[[], None], every: int) -> None:
        params = self.modules[name][self.position.group]
        if not params:
            return
        q = self.quantization[name]
        step = q.weight_step if self.position.group == 0 else q.bias_step
        order = q.weight_order if self.position.group == 0 else q.bias_order
        flat_views = [p.view(-1) for p in params]
        predicted = self._predicted(name, self.position.group)
        base_views = [p.reshape(-1) for p in predicted] if predicted is not None else None
        # Bookkeeping read one element at a time by Python: on the CPU, whatever the model's device.
        owners = [i for i, p in enumerate(params) for _ in range(p.numel())]
        offsets = [offset for p in params for offset in range(p.numel())]
        visiting = self._visiting_order(len(owners)).tolist()
        bits = network_rate_bits(self.quantization)
        best_loss = self.evaluate_loss(bits)
        while self.position.index < len(visiting):
            element = visiting[self.position.index]
            owner, offset = owners[element], offsets[element]
            base = 0.0 if base_views is None else float(base_views[owner][offset])
            best_loss, bits = self._visit(flat_views[owner], offset, base, step, order, best_loss, bits)
            self.position.index += 1
            if self.position.index % every == 0:
                self._set_group_bits(name, bits)
                after_each()
        self._set_group_bits(name, bits)

    def _visit(self, view: Tensor, offset: int, base: float, step: float, order: int, best_loss: float,
               bits: int) -> tuple[float, int]:
        """Move the integer of one parameter, whose value is ``base`` + integer x step."""
        start = round((float(view[offset]) - base) / step)
        best_value, best_bits = start, bits
        start_code = expgolomb_length(start, order)
        for sign in (-1, 1):
            for shift in range(1, self.max_offset + 1):
                value = start + sign * shift
                exact = base + value * step
                if abs(value) > MAX_QUANTIZED_MAGNITUDE or float(torch.tensor(exact, dtype=view.dtype, device="cpu")) != exact:
                    break
                candidate_bits = bits - start_code + expgolomb_length(value, order)
                view[offset] = exact
                self.tries += 1
                loss = self.evaluate_loss(candidate_bits)
                if loss >= best_loss:
                    break
                best_loss, best_value, best_bits = loss, value, candidate_bits
        view[offset] = base + best_value * step
        return best_loss, best_bits

    def _set_group_bits(self, name: str, bits: int) -> None:
        """Record the network rate after changes: the group's share is what changed."""
        q = self.quantization[name]
        self.quantization[name] = replace(q, rate_bits=q.rate_bits + bits - network_rate_bits(self.quantization))

    def _next_group(self, name: str) -> None:
        """After a network's biases, choose its exp-Golomb orders again for its new integers."""
        if self.position.group == 0:
            self.position = RdoqPosition(self.position.module_index, 1)
            return
        q = self.quantization[name]
        weights, biases = self.modules[name]
        # RDOQ keeps every integer within MAX_QUANTIZED_MAGNITUDE, so neither is None.
        weight_order, weight_bits = best_expgolomb_order(quantized_integers(weights, q.weight_step,
                                                                            self._predicted(name, 0)))
        bias_order, bias_bits = best_expgolomb_order(quantized_integers(biases, q.bias_step, self._predicted(name, 1)))
        self.quantization[name] = replace(q, weight_order=weight_order, bias_order=bias_order,
                                          rate_bits=weight_bits + bias_bits)
        self.position = RdoqPosition(self.position.module_index + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"position": asdict(self.position), "tries": self.tries,
                "quantization": {k: asdict(v) for k, v in self.quantization.items()},
                "values": {name: [p.detach().clone() for p in w + b] for name, (w, b) in self.modules.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = RdoqPosition(**state["position"])
        self.tries = state["tries"]
        self.quantization = {k: ModuleQuantization(**v) for k, v in state["quantization"].items()}
        for name, (weights, biases) in self.modules.items():
            for parameter, saved in zip(weights + biases, state["values"][name]):
                parameter.copy_(saved)

