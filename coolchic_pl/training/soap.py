"""SOAP (Adam in the eigenbasis of Shampoo's preconditioner), as Cool-Chic 5 trains with it.

The arithmetic is that of ``pytorch_optimizer.SOAP`` (version 4.1) with its defaults
(no dimension merging, no preconditioning of 1-D tensors, bias correction, decoupled weight
decay): the first step only gathers statistics, each later one rotates the gradient into the
preconditioner's eigenbasis, takes an Adam step there and rotates it back, and every
``precondition_frequency`` steps one power iteration and a QR refresh the eigenbases. What
differs is the cost, which matters because a Cool-Chic's networks are a few dozen tiny
tensors stepped thousands of times:

- dimensions of size 1 are not preconditioned: their eigenbasis is the 1x1 identity, which
  the QR refresh keeps, so rotating along them changes no value;
- a tensor is rotated by the Kronecker product of its eigenbases, one matrix-vector product,
  not by a tensor contraction per dimension with its permutes and copies (up to
  ``KRONECKER_MAX_NUMEL`` elements; larger ones keep the contractions);
- the tensors with no preconditioned dimension (biases, and the latents, whose largest
  preconditioned size is 0) take their Adam step together, in a handful of ``_foreach``
  kernels.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import Tensor


# Tensors up to this many elements are rotated by one [numel, numel] matrix (4 MB at most);
# Cool-Chic's largest network tensor holds 576.
KRONECKER_MAX_NUMEL = 1024


class Soap(torch.optim.Optimizer):
    """``betas`` are Adam's (the second also weighs the preconditioner statistics);
    ``max_precondition_dim`` is the largest dimension given an eigenbasis (0: plain Adam)."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 3e-3,
                 betas: tuple[float, float] = (0.95, 0.95), weight_decay: float = 1e-2,
                 precondition_frequency: int = 10, max_precondition_dim: int = 10000, eps: float = 1e-8):
        if not lr > 0 or not all(0 <= b < 1 for b in betas) or weight_decay < 0 or precondition_frequency < 1:
            raise ValueError(f"invalid SOAP settings: lr {lr}, betas {betas}, weight decay {weight_decay}, "
                             f"precondition frequency {precondition_frequency}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, eps=eps,
                                      precondition_frequency=precondition_frequency,
                                      max_precondition_dim=max_precondition_dim))

    @staticmethod
    def _rotated_dims(shape: torch.Size, max_dim: int) -> list[int]:
        """Dimensions of the squeezed tensor that get an eigenbasis (none for a 1-D tensor)."""
        if len(shape) < 2:
            return []
        return [d for d, size in enumerate(s for s in shape if s > 1) if size <= max_dim]

    def _squeezed(self, tensor: Tensor) -> Tensor:
        return tensor.view([s for s in tensor.shape if s > 1])

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
        grad = self._squeezed(p.grad)
        dims = self._rotated_dims(p.shape, group["max_precondition_dim"])
        state["GG"] = [grad.new_zeros(grad.shape[d], grad.shape[d]) for d in dims]
        state["Q"] = None
        self._update_preconditioner(p, group, step=group.get("step", 0))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if not self.state[p]:
                    self._init_state(p, group)
            group["step"] = group.get("step", 0) + 1
            if group["step"] == 1:
                continue
            step = group["step"] - 1
            beta1, beta2 = group["betas"]
            step_size = group["lr"] * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
            plain = [p for p in params if not self.state[p]["GG"]]
            if plain:
                self._adam_step(plain, group, step_size)
            rotated = [p for p in params if self.state[p]["GG"]]
            if rotated:
                self._rotated_step(rotated, group, step_size)
                self._update_preconditioners(rotated, group, step)
        return loss

    def _adam_step(self, params: list[Tensor], group: dict[str, Any], step_size: float) -> None:
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in params]
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1.0 - beta2)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denominators, group["eps"])
        torch._foreach_add_(params, torch._foreach_div(exp_avgs, denominators), alpha=-step_size)
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1.0 - group["weight_decay"] * group["lr"])

    def _rotated_step(self, params: list[Tensor], group: dict[str, Any], step_size: float) -> None:
        """Adam in the eigenbases: each tensor is rotated, flattened, by the Kronecker
        product of its bases, one matrix-vector product where a contraction per dimension
        would take a few operations each; the moments of every tensor are updated together."""
        beta1, beta2 = group["betas"]
        rotations = [self._rotation(p, group) for p in params]
        grads = [p.grad.view(-1) for p in params]
        exp_avgs = [self.state[p]["exp_avg"].view(-1) for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"].view(-1) for p in params]
        projected = [rotate(grad, into=True) for rotate, grad in zip(rotations, grads)]
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(projected, projected), 1.0 - beta2)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denominators, group["eps"])
        ratios = torch._foreach_div([rotate(m, into=True) for rotate, m in zip(rotations, exp_avgs)], denominators)
        directions = [rotate(ratio, into=False) for rotate, ratio in zip(rotations, ratios)]
        torch._foreach_add_([p.view(-1) for p in params], directions, alpha=-step_size)
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1.0 - group["weight_decay"] * group["lr"])

    def _rotation(self, p: Tensor, group: dict[str, Any]) -> Callable[..., Tensor]:
        """The flattened tensor into its eigenbases (``into``) or back: one matrix-vector
        product by the Kronecker product of the bases, or, for a tensor too large for that
        matrix, one contraction per dimension."""
        state = self.state[p]
        kronecker = state["rotation"]
        if kronecker is not None:
            return lambda x, into: torch.mv(kronecker.t() if into else kronecker, x)
        shape = self._squeezed(p).shape
        dims = self._rotated_dims(p.shape, group["max_precondition_dim"])

        def contract(x: Tensor, into: bool) -> Tensor:
            x = x.view(shape)
            for basis, d in zip(state["Q"], dims):
                x = torch.movedim(torch.tensordot(x, basis, dims=([d], [0 if into else 1])), -1, d)
            return x.reshape(-1)
        return contract

    def _update_preconditioners(self, params: list[Tensor], group: dict[str, Any], step: int) -> None:
        _, beta2 = group["betas"]
        statistics, covariances = [], []
        for p in params:
            grad = self._squeezed(p.grad)
            dims = self._rotated_dims(p.shape, group["max_precondition_dim"])
            statistics += self.state[p]["GG"]
            covariances += [_covariance(grad, d) for d in dims]
        torch._foreach_lerp_(statistics, covariances, 1.0 - beta2)
        if step > 0 and step % group["precondition_frequency"] == 0:
            for p in params:
                self._refresh_eigenbases(p, self._rotated_dims(p.shape, group["max_precondition_dim"]))

    def _update_preconditioner(self, p: Tensor, group: dict[str, Any], step: int) -> None:
        """At a tensor's first gradient: its statistics and eigenbases."""
        state = self.state[p]
        if not state["GG"]:
            return
        _, beta2 = group["betas"]
        grad = self._squeezed(p.grad)
        dims = self._rotated_dims(p.shape, group["max_precondition_dim"])
        for d, statistics in zip(dims, state["GG"]):
            statistics.lerp_(_covariance(grad, d), 1.0 - beta2)
        state["Q"] = [_eigenbasis(statistics) for statistics in state["GG"]]
        state["rotation"] = _kronecker(self._squeezed(p).shape, dims, state["Q"])
        if step > 0 and step % group["precondition_frequency"] == 0:
            self._refresh_eigenbases(p, dims)

    def _refresh_eigenbases(self, p: Tensor, dims: list[int]) -> None:
        """One power iteration from the current bases, orthonormalised by QR, with the
        second moments permuted to follow the eigenvalue order."""
        state = self.state[p]
        exp_avg_sq = self._squeezed(state["exp_avg_sq"])
        bases = []
        for d, statistics, basis in zip(dims, state["GG"], state["Q"]):
            product = statistics @ basis
            order = torch.argsort((basis * product).sum(dim=0), descending=True)
            exp_avg_sq = exp_avg_sq.index_select(d, order)
            bases.append(torch.linalg.qr(product.index_select(1, order))[0])
        state["Q"] = bases
        state["rotation"] = _kronecker(exp_avg_sq.shape, dims, bases)
        state["exp_avg_sq"] = exp_avg_sq.reshape(p.shape)


def _kronecker(shape: torch.Size, dims: list[int], bases: list[Tensor]) -> Tensor | None:
    """[numel, numel] rotation of a flattened tensor of ``shape`` by ``bases`` along ``dims``
    (identity along the others): rotated = R^T x, back = R x. None above
    ``KRONECKER_MAX_NUMEL`` elements, where the matrix would cost more than it saves."""
    if math.prod(shape) > KRONECKER_MAX_NUMEL:
        return None
    factors = dict(zip(dims, bases))
    rotation = None
    for d, size in enumerate(shape):
        factor = factors.get(d)
        if factor is None:
            factor = torch.eye(size, dtype=bases[0].dtype, device=bases[0].device)
        rotation = factor if rotation is None else torch.kron(rotation, factor)
    return rotation


def _covariance(grad: Tensor, dim: int) -> Tensor:
    """[n, n] sum over every other dimension of grad_i * grad_j along ``dim``."""
    if grad.dim() == 2:
        return grad @ grad.t() if dim == 0 else grad.t() @ grad
    others = [d for d in range(grad.dim()) if d != dim]
    return torch.tensordot(grad, grad, dims=(others, others))


def _eigenbasis(statistics: Tensor) -> Tensor:
    """Eigenvectors, largest eigenvalue first."""
    eye = torch.eye(statistics.shape[0], device=statistics.device, dtype=statistics.dtype)
    return torch.linalg.eigh(statistics + 1e-30 * eye)[1].flip(1)
