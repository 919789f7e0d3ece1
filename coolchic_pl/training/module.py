"""CoolChicModule: one Cool-Chic being overfitted to one frame, as a LightningModule.

The module is reused across phases: the runner sets ``phase`` (a TrainerPhase) before
each ``Trainer.fit`` and callbacks drive the schedules. Optimisation is manual because
the reference clips the gradient norm over *all* parameters, including those the phase
does not optimise, and because it keeps the per-step path to exactly what a training
step needs.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Callable, Iterator, Union

import lightning.pytorch as pl
import torch
from torch import Tensor

from coolchic_pl.config import TrainerPhase
from coolchic_pl.fixedpoint.modules import decoded_planes
from coolchic_pl.io import FrameData
from coolchic_pl.metrics import psnr_db
from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.model.coolchic import CoolChic, CoolChicOutput
from coolchic_pl.model.interframe import InterCoolChic
from coolchic_pl.model.latents import ENCODER_GAIN
from coolchic_pl.nnquant import ModuleQuantization
from coolchic_pl.nnquant.quantize import difference_bits, network_rate_bits
from coolchic_pl.training.loss import mse, output_planes, rate_distortion_loss
from coolchic_pl.training.soap import Soap

GRADIENT_CLIP_NORM = 0.1
# Cool-Chic 5's SOAP settings for the network parameters.
SOAP_MAX_PRECONDITION_DIM = 256
SOAP_WEIGHT_DECAY = 0.01


Decoder = Union[CoolChic, InterCoolChic]


def sample_range(frame: FrameData) -> tuple[Tensor, Tensor]:
    """Per output channel, the lowest and highest sample of the frame, on its sample grid
    (so that the bitstream can carry them as integers)."""
    max_value = 2**frame.bitdepth - 1
    low = torch.cat([plane.amin(dim=(0, 2, 3)) for plane in frame.planes])
    high = torch.cat([plane.amax(dim=(0, 2, 3)) for plane in frame.planes])
    return torch.round(low * max_value) / max_value, torch.round(high * max_value) / max_value


def intra_coolchic(frame: FrameData, architecture: CoolChicArchitecture,
                   encoder_gain: float = ENCODER_GAIN) -> CoolChic:
    """A CoolChic for an intra frame, with its output range set when the architecture has one."""
    model = CoolChic((frame.height, frame.width), architecture, encoder_gain=encoder_gain)
    if model.architecture.output_range:
        model.synthesis.set_output_range(*sample_range(frame))
    return model


class CoolChicModule(pl.LightningModule):
    def __init__(self, frame: FrameData, decoder: Decoder | CoolChicArchitecture, lmbda: float,
                 encoder_gain: float = ENCODER_GAIN):
        """``decoder`` is the model to overfit to ``frame``: a CoolChic or an inter frame's
        InterCoolChic, or the architecture of a CoolChic to build (with ``encoder_gain``)."""
        super().__init__()
        if isinstance(decoder, CoolChicArchitecture):
            decoder = intra_coolchic(frame, decoder, encoder_gain)
        self.coolchic = decoder
        self.color_space = frame.color_space
        self.bitdepth = frame.bitdepth
        self.n_pixels = frame.n_pixels
        self.lmbda = lmbda
        for index, plane in enumerate(frame.planes):
            self.register_buffer(f"target_{index}", plane.clone(), persistent=False)
        self.n_planes = len(frame.planes)
        # Schedules write these 0-d tensors in place, so a compiled forward never sees a new value type.
        self.register_buffer("temperature", torch.tensor(0.3), persistent=False)
        self.register_buffer("noise_parameter", torch.tensor(1.0), persistent=False)
        self.phase = TrainerPhase()
        self.quantization: dict[str, ModuleQuantization] = {}
        # A plain callable, not a sub-module, so the compiled variant registers nothing twice.
        self.decoder_forward: Callable[..., CoolChicOutput] = self.coolchic.__call__
        self.last_metrics: dict[str, float] = {}
        self._phase_end_requested = False
        self._clipped_parameters: list[torch.nn.Parameter] = []
        self._difference_terms: list[tuple[Tensor, Tensor, float]] = []
        self.automatic_optimization = False

    @property
    def target(self) -> tuple[Tensor, ...]:
        return tuple(getattr(self, f"target_{i}") for i in range(self.n_planes))

    @property
    def network_bits(self) -> int:
        return network_rate_bits(self.quantization)

    def use_compiled_decoder(self) -> None:
        """Route training steps through torch.compile (once); the parameters stay shared."""
        if self.decoder_forward == self.coolchic.__call__:
            self.decoder_forward = torch.compile(self.coolchic.forward)

    # ------------------------------------------------------------------ training

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """A fresh optimiser over the phase's modules, as the reference builds one per phase."""
        phase = self.phase
        params = self.coolchic.module_parameters(phase.optimized_module)
        self._clipped_parameters = (self.coolchic.module_parameters(["all.arm", "all.upsampling", "all.synthesis"])
                                    if phase.optimizer == "soap" else list(self.coolchic.parameters()))
        self._difference_terms = self.coolchic.difference_rate_terms()
        if phase.optimizer == "adam":
            return torch.optim.Adam(params, lr=phase.lr, fused=self.device.type in ("cpu", "cuda"))
        latents = {id(p) for p in self.coolchic.module_parameters(["all.latent"])}
        groups = [
            dict(params=[p for p in params if id(p) not in latents], betas=phase.betas_network,
                 precondition_frequency=phase.precondition_frequency, max_precondition_dim=SOAP_MAX_PRECONDITION_DIM,
                 weight_decay=SOAP_WEIGHT_DECAY),
            # A largest preconditioned dimension of 0 turns SOAP into Adam for the latents.
            dict(params=[p for p in params if id(p) in latents], betas=phase.betas_latent, max_precondition_dim=0,
                 weight_decay=0.0),
        ]
        return Soap([g for g in groups if g["params"]], lr=phase.lr)

    def training_loss(self) -> Tensor:
        """D + lambda * R_latent / N with the phase's quantiser. A network's own rate is
        left out (the reference's choice: it does not depend on training much); the rate of
        networks trained from those of an earlier frame, sent as differences from them, is
        counted (:func:`~coolchic_pl.nnquant.quantize.difference_bits`)."""
        phase = self.phase
        out = self.decoder_forward(
            phase.quantizer_type, self.temperature, phase.quantizer_noise_type, self.noise_parameter
        )
        decoded = self.planes(out.image, rounded=False)
        rate = out.rate_bits.sum()
        if self._difference_terms:
            rate = rate + difference_bits(self._difference_terms)
        return rate_distortion_loss(mse(decoded, self.target), rate, self.lmbda, self.n_pixels)

    def clip_gradients(self) -> None:
        """Cool-Chic 4 clips the norm over every parameter, Cool-Chic 5 (SOAP phases) over
        the networks' only: the latents' gradients are not clipped. The parameter list is
        chosen once per phase, by :meth:`configure_optimizers`."""
        torch.nn.utils.clip_grad_norm_(self._clipped_parameters, GRADIENT_CLIP_NORM)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(self.training_loss())
        self.clip_gradients()
        optimizer.step()

    def request_phase_end(self) -> None:
        """End the phase before its next iteration, with no further validation."""
        self._phase_end_requested = True

    def on_train_start(self) -> None:
        self._phase_end_requested = False

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        # -1 makes Lightning end the epoch, hence the stage, before this batch runs.
        return -1 if self._phase_end_requested else None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning validates every freq_valid steps but not after a last partial block,
        # which the reference does validate; a stop request at that last step makes
        # Lightning validate once more before it ends the stage.
        if self.trainer.global_step == self.phase.max_itr and self.phase.max_itr % self.phase.freq_valid:
            self.trainer.should_stop = True

    # ---------------------------------------------------------------- evaluation

    def planes(self, raw: Tensor, rounded: bool) -> tuple[Tensor, ...]:
        """The decoder's output as the frame's planes, comparable with the target."""
        return output_planes(raw, self.color_space, self.bitdepth, rounded)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """The decoder in eval mode for a whole block. Switching a module tree's mode walks
        every submodule, and the quantisation search and RDOQ evaluate the decoder thousands
        of times: they switch it once, around all their tries (a tenth of RDOQ's time)."""
        was_training = self.coolchic.training
        self.coolchic.eval()
        try:
            yield
        finally:
            self.coolchic.train(was_training)

    @torch.no_grad()
    def _eval_output(self) -> CoolChicOutput:
        if not self.coolchic.training:
            return self.coolchic()
        with self.evaluating():
            return self.coolchic()

    def decode(self) -> tuple[Tensor, ...]:
        """The frame planes a decoder produces from the bitstream: the integer decoding
        of the hard-rounded latents and the (quantised) networks."""
        return decoded_planes(self.coolchic, self.color_space, self.bitdepth)

    @torch.no_grad()
    def _test(self) -> tuple[tuple[Tensor, ...], float, CoolChicOutput]:
        out = self._eval_output()
        decoded = self.planes(out.image, rounded=True)
        return decoded, mse(decoded, self.target).item(), out

    def _loss(self, distortion: float, latent_bits: float, network_bits: float) -> float:
        return distortion + self.lmbda * (latent_bits + network_bits) / self.n_pixels

    def evaluate(self) -> dict[str, float]:
        """Hard-rounded test metrics with the current network quantisation."""
        decoded, distortion, out = self._test()
        latent_bits, nn_bits = out.rate_bits.sum().item(), self.network_bits
        metrics = {
            "loss": self._loss(distortion, latent_bits, nn_bits),
            "mse": distortion,
            "psnr_db": psnr_db(decoded, self.target),
            "bpp": (latent_bits + nn_bits) / self.n_pixels,
            "bpp_latent": latent_bits / self.n_pixels,
            "bpp_nn": nn_bits / self.n_pixels,
        }
        for grid, bits in enumerate(self.coolchic.rate_per_grid(out.rate_bits)):
            metrics[f"bpp_grid_{grid}"] = bits.item() / self.n_pixels
        if isinstance(self.coolchic, InterCoolChic):
            for name, bits in self.coolchic.latent_bits(out.rate_bits).items():
                metrics[f"bpp_latent_{name}"] = bits.item() / self.n_pixels
        return metrics

    def evaluate_loss(self, network_bits: float) -> float:
        """Test loss for a given network rate: what the quantisation search minimises."""
        _, distortion, out = self._test()
        return self._loss(distortion, out.rate_bits.sum().item(), network_bits)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.last_metrics = self.evaluate()

    # --------------------------------------------------------------- persistence

    def codec_state(self) -> dict:
        """Everything the runner needs to resume this candidate at a stage boundary."""
        return {
            "coolchic": {k: v.detach().clone() for k, v in self.coolchic.state_dict().items()},
            "quantization": {k: asdict(v) for k, v in self.quantization.items()},
        }

    def load_codec_state(self, state: dict) -> None:
        self.coolchic.load_state_dict(state["coolchic"])
        self.quantization = {k: ModuleQuantization(**v) for k, v in state["quantization"].items()}
