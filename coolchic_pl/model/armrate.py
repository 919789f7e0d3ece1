"""The training-time rate of the latents: contexts, ARM and Laplace rate as one autograd node.

Autograd records twenty-odd nodes for this (gathers, concatenations, each layer, the
identity added to residual weights, the clamp, the rate formula) and walks each backward
with its own allocations. On the CPU, in float32, the contexts, IFCE, layers and all their
gradients are compiled (``csrc/armtrain.c``, :class:`_CompiledArmRate`): chunks of 256
latents whose rows stay in the L1 and L2 caches, the backward recomputing its chunk's
forward; a step of hop5 at 768x512 went from 343 to 303 ms, of mop5 at 192x128 from 19.9
to 18.8 ms (``bench speed --against``). Elsewhere (a GPU) the forward pass walks the latents
in chunks of tensors and keeps each chunk's activations, and the backward differentiates
them by hand, chunk by chunk (:class:`_ArmRate`). The Laplace rate and its gradient are
tensor functions on both paths.

The evaluation path (quantisation search, RDOQ, bitstream) keeps :class:`~coolchic_pl.model.arm.Arm`'s
layer-by-layer forward with its caches; both compute the same function, which the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from coolchic_pl import _native
from coolchic_pl.model.arm import Arm, clamped_log_scale
from coolchic_pl.model.contexts import LOG_SCALE_MAX, LOG_SCALE_MIN, LOG_SCALE_SHIFT
from coolchic_pl.model.ifce import InterFeatureContext
from coolchic_pl.model.laplace import laplace_rate_backward, laplace_rate_forward

# Latents per chunk: a chunk's contexts and hidden layers (width <= 46 rows of 4-byte
# floats) stay within a 2 MB L2 cache; measured best of 4096 to 1M at 192x128 and 768x512.
CHUNK_LATENTS = 8192
RATE_TERMS = 6  # tensors laplace_rate_forward keeps for the backward
# The compiled ARM's limits (csrc/native.h): MAX_ARM_WIDTH, MAX_TRAIN_HIDDEN, MAX_TRAIN_SEGMENTS
# and MAX_IFCE_INPUTS.
MAX_WIDTH, MAX_HIDDEN, MAX_SEGMENTS, MAX_IFCE_INPUTS = 128, 16, 64, 64


@dataclass(frozen=True)
class Chunk:
    """Latents [start, end) of one grid segment, the flat positions of their spatial contexts
    then (in a grid with an IFCE) of their IFCE inputs, [(dim_arm + inputs) * n], and that
    IFCE's layer (None elsewhere, where the inter-feature contexts are zero)."""

    start: int
    end: int
    index: Tensor
    ifce_layer: int | None


@dataclass(frozen=True)
class Segment:
    """Latents [start, end) whose IFCE features come from IFCE layer ``layer`` (None: zeros),
    with their inputs' flat positions [n_inputs, end - start] (the compiled path's unit)."""

    start: int
    end: int
    layer: int | None
    inputs: Tensor | None


@dataclass(frozen=True)
class ArmPlan:
    """The fixed part of the computation: the chunks, which never straddle an IFCE grid,
    and for the compiled path the segments and the [n_spatial, N] context positions."""

    n_latents: int
    n_spatial: int
    n_features: int
    chunks: tuple[Chunk, ...]
    segments: tuple[Segment, ...]
    spatial: Tensor

    @property
    def device(self) -> torch.device:
        return self.chunks[0].index.device

    @staticmethod
    def build(context_index: Tensor, ifce: InterFeatureContext | None, chunk: int = CHUNK_LATENTS) -> "ArmPlan":
        """``context_index`` [dim_arm, N] as :attr:`~coolchic_pl.model.coolchic.CoolChic.context_index` holds it."""
        n_spatial, n_latents = context_index.shape
        segments: list[tuple[int, int, int | None]] = [(0, n_latents, None)]
        if ifce is not None:
            starts = [sum(ifce.numels[:g]) for g in range(len(ifce.numels) + 1)]
            segments = [(starts[g], starts[g + 1], position) for position, g in enumerate(ifce.grids)]
            segments.append((starts[len(ifce.grids)], n_latents, None))
        chunks = []
        plan_segments = tuple(Segment(first, last, layer, None if layer is None else
                                      ifce.gather_index(layer).t()[:, :last - first].contiguous())
                              for first, last, layer in segments if last > first)
        for first, last, layer in segments:
            for start in range(first, last, chunk):
                end = min(start + chunk, last)
                index = context_index[:, start:end]
                if layer is not None:
                    inputs = ifce.gather_index(layer).t()[:, start - first:end - first]
                    index = torch.cat([index, inputs])
                chunks.append(Chunk(start, end, index.reshape(-1), layer))
        return ArmPlan(n_latents, n_spatial, ifce.n_features if ifce is not None else 0, tuple(chunks), plan_segments,
                       context_index.contiguous())


def arm_rate_bits(plan: ArmPlan, arm: Arm, latents: Tensor) -> Tensor:
    """-log2 P of every latent under the ARM's Laplace, as ``laplace_rate_bits(latents, mu,
    clamped_log_scale(raw))`` of ``arm(arm.contexts(latents, ...))`` computes it."""
    stabiliser, ifce = arm.stabiliser, arm.ifce
    weights = [t for layer in arm.hidden for t in (layer.weight, layer.bias)] + [arm.output.weight, arm.output.bias]
    if stabiliser is not None:
        weights += [stabiliser.weight, stabiliser.bias]
    if ifce is not None:
        weights += [t for layer in ifce.layers for t in (layer.weight, layer.bias)]
    compiled = latents.device.type == "cpu" and latents.dtype == torch.float32 and _within_compiled_limits(plan, arm)
    return (_CompiledArmRate if compiled else _ArmRate).apply(plan, len(arm.hidden), stabiliser is not None, latents,
                                                                *weights)


def _within_compiled_limits(plan: ArmPlan, arm: Arm) -> bool:
    """Whether the compiled ARM's fixed sizes (csrc/native.h) hold this one."""
    inputs = [layer.weight.shape[1] for layer in arm.ifce.layers] if arm.ifce is not None else []
    return (arm.width <= MAX_WIDTH and len(arm.hidden) <= MAX_HIDDEN and len(plan.segments) <= MAX_SEGMENTS
            and max(inputs, default=0) <= MAX_IFCE_INPUTS)


def _rate_gradients(rate_terms: tuple[Tensor, ...], raw: Tensor, grad_bits: Tensor) -> tuple[Tensor, Tensor]:
    """The rate's gradients with respect to the latents as coded values and to the ARM's raw
    outputs [2, N]; the log-scale clamp's in one vectorised kernel (it differs from the clamp's
    own only where the log-scale lands exactly on a bound)."""
    grad_y, grad_mu, grad_log_scale = laplace_rate_backward(rate_terms, grad_bits)
    grad_raw = torch.ops.aten.hardtanh_backward(grad_log_scale, raw[1] - LOG_SCALE_SHIFT, LOG_SCALE_MIN, LOG_SCALE_MAX)
    return grad_y, torch.stack([grad_mu, grad_raw])


class _Layers:
    """The matrices as a chunk multiplies them: residual ones with the identity added,
    biases as columns."""

    def __init__(self, n_hidden: int, has_stabiliser: bool, weights: tuple[Tensor, ...]):
        columns = [w.unsqueeze(1) if w.dim() == 1 else w for w in weights]
        width = columns[2 * n_hidden].shape[1]
        eye = torch.eye(width, dtype=weights[0].dtype, device=weights[0].device)
        self.hidden = [(columns[2 * k] + eye, columns[2 * k + 1]) for k in range(n_hidden)]
        self.output = (columns[2 * n_hidden], columns[2 * n_hidden + 1])
        rest = columns[2 * n_hidden + 2:]
        self.stabiliser = (rest[0], rest[1]) if has_stabiliser else None
        rest = rest[2:] if has_stabiliser else rest
        self.ifce = [(rest[2 * k], rest[2 * k + 1]) for k in range(len(rest) // 2)]


def _chunk_forward(plan: ArmPlan, layers: _Layers, padded: Tensor, chunk: Chunk) -> tuple[list[Tensor], Tensor]:
    """Hidden activations (contexts first, then the IFCE inputs when the chunk has them) and
    the [2, n] raw output (mu, log-scale before its shift) of one chunk."""
    n = chunk.end - chunk.start
    gathered = torch.index_select(padded, 0, chunk.index).view(-1, n)
    spatial = gathered[:plan.n_spatial]
    if chunk.ifce_layer is not None:
        weight, bias = layers.ifce[chunk.ifce_layer]
        features = torch.addmm(bias, weight, gathered[plan.n_spatial:])
    else:
        features = padded.new_zeros(plan.n_features, n)
    contexts = torch.cat([spatial, features]) if plan.n_features else spatial
    activations = [contexts]
    for weight, bias in layers.hidden:
        activations.append(torch.relu_(torch.addmm(bias, weight, activations[-1])))
    weight, bias = layers.output
    out = torch.addmm(bias, weight, activations[-1])
    if layers.stabiliser is not None:
        weight, bias = layers.stabiliser
        out = out + torch.addmm(bias, weight, contexts)
    if chunk.ifce_layer is not None:
        activations.append(gathered[plan.n_spatial:])
    return activations, out


class _ArmRate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan: ArmPlan, n_hidden: int, has_stabiliser: bool, latents: Tensor, *weights: Tensor) -> Tensor:
        layers = _Layers(n_hidden, has_stabiliser, weights)
        padded = torch.cat([latents, latents.new_zeros(1)])
        raw = latents.new_empty(2, plan.n_latents)
        ctx.activations = []
        for chunk in plan.chunks:
            activations, raw[:, chunk.start:chunk.end] = _chunk_forward(plan, layers, padded, chunk)
            ctx.activations.append(activations)
        bits, rate_terms = laplace_rate_forward(latents, raw[0], clamped_log_scale(raw[1]))
        ctx.plan, ctx.n_hidden, ctx.has_stabiliser = plan, n_hidden, has_stabiliser
        ctx.save_for_backward(raw, *rate_terms, *weights)
        return bits

    @staticmethod
    def backward(ctx, grad_bits: Tensor):
        plan: ArmPlan = ctx.plan
        raw, *saved = ctx.saved_tensors
        rate_terms, weights = saved[:RATE_TERMS], saved[RATE_TERMS:]
        layers = _Layers(ctx.n_hidden, ctx.has_stabiliser, tuple(weights))
        grad_y, grad_raw_out = _rate_gradients(rate_terms, raw, grad_bits)
        grad_padded = torch.cat([grad_y, grad_y.new_zeros(1)])
        grad_hidden = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in layers.hidden]
        grad_output = [torch.zeros_like(t) for t in layers.output]
        grad_stabiliser = [torch.zeros_like(t) for t in layers.stabiliser] if layers.stabiliser is not None else []
        grad_ifce = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in layers.ifce]
        for chunk, activations in zip(plan.chunks, ctx.activations):
            inputs = activations[-1] if chunk.ifce_layer is not None else None
            if inputs is not None:
                activations = activations[:-1]
            contexts = activations[0]
            grad_out = grad_raw_out[:, chunk.start:chunk.end]
            grad_out_columns = grad_out.sum(dim=1, keepdim=True)
            grad_output[0].addmm_(grad_out, activations[-1].t())
            grad_output[1].add_(grad_out_columns)
            grad_x = layers.output[0].t() @ grad_out
            for k in range(len(layers.hidden) - 1, -1, -1):
                grad_pre = torch.ops.aten.threshold_backward(grad_x, activations[k + 1], 0.0)
                grad_hidden[k][0].addmm_(grad_pre, activations[k].t())
                grad_hidden[k][1].add_(grad_pre.sum(dim=1, keepdim=True))
                grad_x = layers.hidden[k][0].t() @ grad_pre
            if grad_stabiliser:
                grad_stabiliser[0].addmm_(grad_out, contexts.t())
                grad_stabiliser[1].add_(grad_out_columns)
                grad_x.addmm_(layers.stabiliser[0].t(), grad_out)
            grad_gathered = grad_x[:plan.n_spatial]
            if inputs is not None:
                grad_features = grad_x[plan.n_spatial:]
                weight_grad, bias_grad = grad_ifce[chunk.ifce_layer]
                weight_grad.addmm_(grad_features, inputs.t())
                bias_grad.add_(grad_features.sum(dim=1, keepdim=True))
                grad_gathered = torch.cat([grad_gathered, layers.ifce[chunk.ifce_layer][0].t() @ grad_features])
            # scatter_add_ adds in the same order as index_add_, 1.6x faster on the CPU (measured).
            grad_padded.scatter_add_(0, chunk.index, grad_gathered.reshape(-1))
        grads = [g for pair in [*grad_hidden, grad_output, grad_stabiliser, *grad_ifce] for g in pair]
        return None, None, None, grad_padded[:-1], *(g.view_as(w) for g, w in zip(grads, weights))


def _native_arm(plan: ArmPlan, n_hidden: int, has_stabiliser: bool, weights: tuple[Tensor, ...]) -> tuple:
    """The ARM as :func:`coolchic_pl._native.arm_train_forward` takes it: NumPy views of the
    float32 parameters (hidden ones without their identity) and of the plan's segments."""
    arrays = [w.detach().numpy() for w in weights]
    pairs = [(arrays[2 * k], arrays[2 * k + 1]) for k in range(len(arrays) // 2)]
    hidden, output = tuple(pairs[:n_hidden]), pairs[n_hidden]
    stabiliser = pairs[n_hidden + 1] if has_stabiliser else None
    ifce = tuple((w, b, w.shape[1]) for w, b in pairs[n_hidden + 1 + has_stabiliser:])
    segments = tuple((s.start, s.end, -1 if s.layer is None else s.layer,
                      None if s.inputs is None else s.inputs.numpy()) for s in plan.segments)
    return output[0].shape[1], plan.n_latents, hidden, output, stabiliser, ifce, segments


class _CompiledArmRate(torch.autograd.Function):
    """:class:`_ArmRate` on the CPU in float32 with the ARM compiled (``csrc/armtrain.c``): the
    contexts, IFCE, layers and all their gradients in one call each way. Its sums run in a
    fixed order, so the gradients do not depend on the thread count."""

    @staticmethod
    def forward(ctx, plan: ArmPlan, n_hidden: int, has_stabiliser: bool, latents: Tensor, *weights: Tensor) -> Tensor:
        native = _native_arm(plan, n_hidden, has_stabiliser, weights)
        padded = torch.cat([latents.detach(), latents.new_zeros(1)])
        raw = latents.new_empty(2, plan.n_latents)
        _native.arm_train_forward(padded.numpy(), plan.spatial.numpy(), native, raw.numpy())
        bits, rate_terms = laplace_rate_forward(latents.detach(), raw[0], clamped_log_scale(raw[1]))
        ctx.plan, ctx.native = plan, native
        ctx.save_for_backward(raw, padded, *rate_terms, *weights)
        return bits

    @staticmethod
    def backward(ctx, grad_bits: Tensor):
        raw, padded, *saved = ctx.saved_tensors
        rate_terms, weights = saved[:RATE_TERMS], saved[RATE_TERMS:]
        grad_y, grad_raw = _rate_gradients(rate_terms, raw, grad_bits)
        grad_padded = torch.cat([grad_y, grad_y.new_zeros(1)])
        grads = grad_y.new_empty(sum(w.numel() for w in weights))
        _native.arm_train_backward(padded.numpy(), ctx.plan.spatial.numpy(), ctx.native, grad_raw.numpy(),
                                   grad_padded.numpy(), grads.numpy())
        parts = grads.split([w.numel() for w in weights])
        return None, None, None, grad_padded[:-1], *(g.view_as(w) for g, w in zip(parts, weights))
