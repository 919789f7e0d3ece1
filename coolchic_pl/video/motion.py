"""The motion side of an inter frame before its warm-up: where its motion starts (global
translation, dense flow, an affine model fitted to it), how good the predictions are at each
step, and the pre-training of the motion Cool-Chic.

For every reference the encoder measures the luma PSNR of the prediction with zero motion,
with the global translation, with the estimated flow, with the pre-trained motion
Cool-Chic and (after training, :func:`final_prediction_psnrs`) with the decoded motion:
the numbers that say whether a frame's rate goes into motion that predicts, or into a
residue that replaces a prediction that failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from coolchic_pl.fixedpoint.motionmodel import AFFINE_SCALE_BITS
from coolchic_pl.fixedpoint.warp import FLOW_PRECISION_BITS
from coolchic_pl.io import FrameData
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.model.interframe import InterCoolChic, blend_weight
from coolchic_pl.model.interparams import FLOW_ACCURACY
from coolchic_pl.model.warp import global_translation, quantize_flow, shift, warp
from coolchic_pl.training.module import CoolChicModule
from coolchic_pl.video.flow import estimate_flow


def estimate_motion(target: Tensor, reference: Tensor) -> tuple[tuple[int, int], Tensor]:
    """Where the motion of an inter frame starts: the integer global translation (sent in
    the frame header), then the dense flow from the frame to the reference shifted by it.
    The translation brings large camera motion within the reach of the flow's pyramid, so
    together they follow displacements of tens of pixels (a 30-pixel shift, or a 5 % zoom
    with a 12-pixel shift, of a BQSquare frame are recovered to 0.05-0.15 pixel on average).
    The total motion is translation + flow."""
    translation = global_translation(reference, target)
    return translation, estimate_flow(target, shift(reference, *translation))


def fit_affine(flow: Tensor, iterations: int = 8, scale_px: float = 1.0) -> tuple[int, ...]:
    """The six integer parameters (:mod:`coolchic_pl.fixedpoint.motionmodel`) of the affine
    motion closest to a dense flow [1, 2, H, W] (pixels): iteratively reweighted least squares
    with Cauchy weights of scale ``scale_px`` pixels, so that the camera's motion is fitted
    and objects moving on their own, whose flow disagrees with it, count less and less."""
    _, _, height, width = flow.shape
    double = dict(dtype=torch.float64, device=flow.device)
    xs = torch.arange(width, **double) - width // 2
    ys = torch.arange(height, **double) - height // 2
    basis = torch.stack([torch.ones(height, width, **double), xs.expand(height, width),
                         ys.view(-1, 1).expand(height, width)], dim=-1).reshape(-1, 3)
    targets = flow[0].detach().double().reshape(2, -1).t()
    weights = torch.ones(len(basis), 1, **double)
    for _ in range(iterations):
        solution = torch.linalg.lstsq(basis * weights.sqrt(), targets * weights.sqrt()).solution  # [3, 2]
        residual = (basis @ solution - targets).norm(dim=1, keepdim=True)
        weights = 1.0 / (1.0 + (residual / scale_px) ** 2)
    linear = 2**(FLOW_PRECISION_BITS + AFFINE_SCALE_BITS)
    (a0, b0), (a1, b1), (a2, b2) = solution.tolist()
    return (round(a0 * FLOW_ACCURACY), round(a1 * linear), round(a2 * linear),
            round(b0 * FLOW_ACCURACY), round(b1 * linear), round(b2 * linear))


def luma_psnr(prediction: Tensor, target: Tensor) -> float:
    """PSNR (dB) of the luma (channel 0) of two [1, 3, H, W] frames in [0, 1]."""
    mse = torch.mean((prediction[:, :1].clamp(0, 1) - target[:, :1]) ** 2).item()
    return 100.0 if mse == 0 else 10 * math.log10(1 / mse)


def flow_target(flows: list[Tensor]) -> Tensor:
    """What the motion Cool-Chic of a frame with these reference flows outputs: the flows,
    then for a B frame a zero raw beta (an even blend)."""
    if len(flows) == 2:
        flows = [*flows, torch.zeros_like(flows[0][:, :1])]
    return torch.cat(flows, dim=1)


def motion_predictions(motion: Tensor | None, references: list[Tensor], filter_size: int,
                       base: Tensor | None = None) -> list[Tensor]:
    """Each (shifted) reference warped by its base flow ([references, 2, H, W] pixels, None:
    zero) plus its flow in a motion Cool-Chic's output (None: none), flows at 1/64 pel."""
    flows = [torch.zeros_like(r[:, :2]) if base is None else base[i:i + 1] for i, r in enumerate(references)]
    if motion is not None:
        quantized = quantize_flow(motion, FLOW_ACCURACY)
        flows = [f + quantized[:, 2 * i:2 * i + 2] for i, f in enumerate(flows)]
    return [warp(reference, f, filter_size) for reference, f in zip(references, flows)]


@dataclass
class PredictionReport:
    """Luma PSNR of the prediction from each reference at each step, and of the B-frame blend."""

    refs: tuple[int, ...]
    steps: dict[str, list[float]]

    def add(self, step: str, values: list[float]) -> None:
        self.steps[step] = [round(v, 3) for v in values]

    def as_dict(self) -> dict[str, dict[str, float]]:
        """{"ref 0": {"zero": ..., "global": ..., ...}, ...} for the results."""
        rows = {f"ref {ref}": {step: values[i] for step, values in self.steps.items() if i < len(values)}
                for i, ref in enumerate(self.refs)}
        blends = {step: values[-1] for step, values in self.steps.items() if len(values) > len(self.refs)}
        if blends:
            rows["blend"] = blends
        return rows


def initial_report(refs: tuple[int, ...], target: Tensor, references: list[Tensor],
                   translations: tuple[tuple[int, int], ...], flows: list[Tensor] | None,
                   filter_size: int) -> PredictionReport:
    """Zero motion, global translation and (when estimated) the flow, per reference."""
    report = PredictionReport(refs, {})
    shifted = [shift(r, dx, dy) for r, (dx, dy) in zip(references, translations)]
    report.add("zero", [luma_psnr(r, target) for r in references])
    report.add("global", [luma_psnr(r, target) for r in shifted])
    if flows is not None:
        report.add("flow", [luma_psnr(warp(r, f, filter_size), target) for r, f in zip(shifted, flows)])
    return report


@torch.no_grad()
def decoded_motion_psnrs(motion: CoolChic | None, target: Tensor, shifted_references: list[Tensor],
                         filter_size: int, base: Tensor | None = None) -> list[float]:
    """Per reference, then the blend for a B frame: the predictions a motion Cool-Chic (None:
    none) gives on top of the base flows (pixels)."""
    output = None
    if motion is not None:
        motion.eval()
        output = motion().image
    predictions = motion_predictions(output, shifted_references, filter_size, base)
    psnrs = [luma_psnr(p, target) for p in predictions]
    if len(predictions) == 2:
        beta = 0.5 if output is None else blend_weight(quantize_flow(output, FLOW_ACCURACY)[:, 4:5])
        psnrs.append(luma_psnr(beta * predictions[0] + (1 - beta) * predictions[1], target))
    return psnrs


def final_prediction_psnrs(decoder: InterCoolChic, target: Tensor) -> list[float]:
    """The decoded motion's predictions of a trained (quantised) inter frame."""
    references = [getattr(decoder, f"reference_{i}") for i in range(decoder.n_references)]
    return decoded_motion_psnrs(decoder.motion, target, references, decoder.frame_parameters.warp_filter_size,
                                decoder.base_flow)


class FlowTargetModule(CoolChicModule):
    """A motion Cool-Chic fitted to an estimated flow (the motion pre-training of an inter
    frame): the target is the flow itself in pixels, nothing is clamped or rounded, and
    the distortion is the mean squared flow error in square pixels."""

    def __init__(self, flow: Tensor, decoder: CoolChic, lmbda: float):
        super().__init__(FrameData((flow,), bitdepth=8, color_space="yuv444"), decoder, lmbda)

    def planes(self, raw: Tensor, rounded: bool) -> tuple[Tensor, ...]:
        return (raw,)
