"""The synthesis layer string, ``<out_ch|X>-<kernel>-<linear|residual>-<none|relu>`` per
layer: its parsing and what it costs, from the string alone (no torch: the decoder checks a
file's layers before it builds anything)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_LAYER = re.compile(r"^(?P<out>\d+|X)-(?P<kernel>\d+)-(?P<mode>linear|residual)-(?P<act>none|relu)$")
LAYER_SYNTAX = "<out_ch|X>-<kernel>-<linear|residual>-<none|relu>"


@dataclass(frozen=True)
class SynthesisLayerSpec:
    out_channels: int
    kernel_size: int
    residual: bool
    relu: bool


def parse_synthesis_layers(layers: str, n_inputs: int, n_outputs: int) -> list[SynthesisLayerSpec]:
    """Parse and validate a layer string; errors name the offending item."""
    if not layers.strip():
        raise ValueError("synthesis layer string is empty")
    specs: list[SynthesisLayerSpec] = []
    in_channels = n_inputs
    for position, item in enumerate(layers.split(","), start=1):
        match = _LAYER.match(item.strip())
        if match is None:
            raise ValueError(f"synthesis layer {position} '{item}' is malformed: expected {LAYER_SYNTAX}")
        out = n_outputs if match["out"] == "X" else int(match["out"])
        kernel = int(match["kernel"])
        if out < 1:
            raise ValueError(f"synthesis layer {position} '{item}' needs at least one output channel")
        if kernel % 2 == 0:
            raise ValueError(f"synthesis layer {position} '{item}' has an even kernel: replicate padding needs it odd")
        residual = match["mode"] == "residual"
        if residual and out != in_channels:
            raise ValueError(
                f"synthesis layer {position} '{item}' is residual but maps {in_channels} to {out} channels"
            )
        specs.append(SynthesisLayerSpec(out, kernel, residual, match["act"] == "relu"))
        in_channels = out
    if in_channels != n_outputs:
        raise ValueError(f"synthesis ends with {in_channels} channels but the frame needs {n_outputs} (use X)")
    return specs


def synthesis_parameter_counts(n_inputs: int, layers: str, n_outputs: int, stabiliser: bool) -> tuple[int, int]:
    """(weights, biases) of the synthesis a layer string describes, from the string alone: a
    decoder checks them against a file before building anything. The weights are also its
    multiplications per pixel."""
    specs = parse_synthesis_layers(layers, n_inputs, n_outputs)
    in_channels = [n_inputs] + [spec.out_channels for spec in specs[:-1]]
    weights = sum(c * spec.out_channels * spec.kernel_size**2 for c, spec in zip(in_channels, specs))
    biases = sum(spec.out_channels for spec in specs)
    if stabiliser:
        weights, biases = weights + n_inputs * n_outputs, biases + n_outputs
    return weights, biases
