"""CoolChic: latent pyramid + ARM + upsampling + synthesis for one frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.model.arm import Arm, clamped_log_scale, context_index
from coolchic_pl.model.contexts import context_offsets
from coolchic_pl.model.armrate import ArmPlan, arm_rate_bits
from coolchic_pl.model.evalcache import VersionedCache
from coolchic_pl.model.ifce import InterFeatureContext
from coolchic_pl.model.laplace import laplace_rate_bits
from coolchic_pl.model.latents import ENCODER_GAIN, LatentPyramid
from coolchic_pl.model.layout import NETWORK_NAMES, mac_per_pixel
from coolchic_pl.model.quantizer import NoiseType, QuantizerType
from coolchic_pl.model.synthesis import Synthesis
from coolchic_pl.model.upsampling import Upsampling

if TYPE_CHECKING:
    from coolchic_pl.nnquant import ModuleQuantization
    from coolchic_pl.nnquant.quantize import NetworkPrediction

ModuleName = Literal["all", "latent", "arm", "upsampling", "synthesis"]
MODULE_NAMES: tuple[ModuleName, ...] = ("all", "latent", "arm", "upsampling", "synthesis")
# Cool-Chics of a frame a phase can select by prefix: "residue.latent", "motion.all",
# "all.arm" (every Cool-Chic of the frame). A bare module name means "all.<module>".
COOLCHIC_NAMES = ("residue", "motion", "all")


def split_module_name(name: str) -> tuple[str, ModuleName]:
    """"motion.arm" -> ("motion", "arm"), "latent" -> ("all", "latent"); ValueError if unknown."""
    coolchic, _, module = name.rpartition(".")
    coolchic = coolchic or "all"
    if coolchic not in COOLCHIC_NAMES or module not in MODULE_NAMES:
        raise ValueError(f"unknown module '{name}': expected one of {', '.join(MODULE_NAMES)}, optionally prefixed "
                         f"by {', '.join(c + '.' for c in COOLCHIC_NAMES)}")
    return coolchic, module  # type: ignore[return-value]


def select_parameters(coolchics: dict[str, nn.Module], names: Iterable[str]) -> list[nn.Parameter]:
    """Trainable parameters of the named sub-modules of the named Cool-Chics, without
    duplicates: how a training phase selects what it optimises (e.g. "all.latent").
    Networks shared with an earlier frame are frozen, hence never selected."""
    selected: dict[int, nn.Parameter] = {}
    for name in names:
        coolchic, module = split_module_name(name)
        for key, model in coolchics.items():
            if coolchic in ("all", key):
                params = model.parameters() if module == "all" else getattr(model, module).parameters()
                selected.update((id(p), p) for p in params if p.requires_grad)
    return list(selected.values())




@dataclass(frozen=True)
class NetworkSource:
    """The Cool-Chic of an earlier frame (display index ``frame``), same role, whose quantised
    networks this Cool-Chic's are predicted from: each network of the same shapes can be
    sent as differences from its counterpart or as that network unchanged. ``quantization``
    is the source's, whose value grids the predictions lie on."""

    frame: int
    coolchic: "CoolChic"
    quantization: dict[str, "ModuleQuantization"]

    def predicts(self, name: str, module: nn.Module) -> bool:
        """Whether the source's network ``name`` has the shapes of ``module``."""
        theirs = [p.shape for p in getattr(self.coolchic, name).parameters()]
        return theirs == [p.shape for p in module.parameters()]


@dataclass
class CoolChicOutput:
    """Raw synthesis output [1, n_outputs, H, W] (not clamped) and the latent rate.

    ``rate_bits`` holds -log2 P of every latent of every non-empty grid, grid 0 first.
    """

    image: Tensor
    rate_bits: Tensor
    latents: Tensor


class CoolChic(nn.Module):
    def __init__(
        self,
        image_size: tuple[int, int],
        architecture: CoolChicArchitecture = CoolChicArchitecture(),
        n_outputs: int = 3,
        encoder_gain: float = ENCODER_GAIN,
    ):
        super().__init__()
        self.image_size = tuple(image_size)
        architecture = architecture.for_image(self.image_size)
        self.architecture = architecture
        self.latent = LatentPyramid(self.image_size, architecture.n_ft_per_res, encoder_gain,
                                    architecture.hyper_per_res)
        latent = self.latent
        shapes = [(c, h, w) for c, (h, w) in zip(latent.channels, latent.sizes)]
        ifce = None
        if architecture.n_ifce_features:
            coded = latent.coded_grids()
            ifce = InterFeatureContext([latent.sizes[g] for g in coded], [latent.resolutions[g] for g in coded],
                                       architecture.n_ifce_grids, architecture.n_ifce_features)
        self.arm = Arm(architecture.dim_arm, architecture.n_hidden_layers_arm, ifce, architecture.arm_stabiliser)
        self.upsampling = Upsampling(shapes[:latent.n_synthesis_grids], architecture.ups_k_size,
                                     architecture.ups_preconcat_k_size)
        self.synthesis = Synthesis(sum(architecture.n_ft_per_res), architecture.layers_synthesis, n_outputs,
                                   architecture.synthesis_stabiliser)
        # Built at the first rate evaluation (a decoder never needs it: a tenth of a second at
        # 768x512); its context pattern is checked now, so an impossible ARM fails here.
        context_offsets(architecture.dim_arm, architecture.context_order)
        self.register_buffer("_context_index", None, persistent=False)
        self._arm_plan: ArmPlan | None = None
        self._eval_latents: VersionedCache[Tensor] = VersionedCache()
        self._eval_rate: VersionedCache[Tensor] = VersionedCache()
        self._eval_upsampled: VersionedCache[Tensor] = VersionedCache()
        self._eval_image: VersionedCache[Tensor] = VersionedCache()
        self.network_source: NetworkSource | None = None
        self.networks_frozen = False
        self.networks_warm_started = False

    def predict_networks(self, source: NetworkSource, frozen: bool = False, warm: bool = True) -> None:
        """Predict the networks from ``source``'s, so that the quantisation may code each of
        the same shapes as differences from its counterpart or as that network. ``warm``
        starts those networks as the source's; ``frozen`` takes every network as it is,
        untrained and not sent again (only the latents are trained)."""
        predicted = [name for name in NETWORK_NAMES if source.predicts(name, getattr(self, name))]
        if frozen and len(predicted) < len(NETWORK_NAMES):
            raise ValueError("networks can only be reused between Cool-Chics of the same architecture and outputs")
        if warm or frozen:
            self.start_networks_from(source)
        if frozen:
            for name in NETWORK_NAMES:
                getattr(self, name).requires_grad_(False)
        self.network_source, self.networks_frozen, self.networks_warm_started = source, frozen, warm and not frozen

    def start_networks_from(self, source: NetworkSource) -> None:
        """Load the source's networks that have the shapes of this Cool-Chic's (a warm start)."""
        with torch.no_grad():
            for name in NETWORK_NAMES:
                if source.predicts(name, getattr(self, name)):
                    getattr(self, name).load_state_dict(getattr(source.coolchic, name).state_dict())

    @property
    def n_outputs(self) -> int:
        return self.synthesis.layers[-1].weight.shape[0]

    def module_parameters(self, names: Iterable[str]) -> list[nn.Parameter]:
        """Parameters a phase optimises; a Cool-Chic alone is the residue Cool-Chic of an I frame."""
        return select_parameters({"residue": self}, names)

    def quantizable_modules(self) -> dict[str, nn.Module]:
        """The networks whose parameters are quantised and transmitted, in the order the
        reference searches their quantisation steps (sorted names), which is also their
        order in the bitstream. None when the networks are reused, frozen, from an earlier frame."""
        if self.networks_frozen:
            return {}
        return {name: getattr(self, name) for name in NETWORK_NAMES}

    def network_predictions(self) -> dict[str, NetworkPrediction]:
        """The networks that can be sent as differences from (or as) their source's, with
        the source's values on this Cool-Chic's device."""
        from coolchic_pl.nnquant.quantize import NetworkPrediction, split_weights_and_biases

        source = self.network_source
        if source is None:
            return {}
        predictions = {}
        for name, module in self.quantizable_modules().items():
            if source.predicts(name, module):
                device = next(module.parameters()).device
                weights, biases = ([p.detach().to(device) for p in group]
                                   for group in split_weights_and_biases(getattr(source.coolchic, name)))
                predictions[name] = NetworkPrediction(weights, biases, source.quantization[name].value_steps)
        return predictions

    def difference_rate_terms(self) -> list[tuple[Tensor, Tensor, float]]:
        """What the training loss counts of networks trained from those they are predicted from
        (warm-started): see :func:`~coolchic_pl.nnquant.quantize.difference_bits`."""
        from coolchic_pl.nnquant.quantize import prediction_terms

        return prediction_terms(self) if self.networks_warm_started else []

    def frozen_quantization(self) -> dict[str, ModuleQuantization]:
        """How reused (frozen) networks are coded: each as its source's, for no bits."""
        from coolchic_pl.nnquant import ModuleQuantization

        if not self.networks_frozen:
            return {}
        return {name: ModuleQuantization.same_as(self.network_source.quantization[name].value_steps)
                for name in NETWORK_NAMES}

    def forward(
        self,
        quantizer_type: QuantizerType = "softround",
        temperature: Tensor | float = 0.3,
        noise_type: NoiseType = "kumaraswamy",
        noise_parameter: Tensor | float = 1.0,
    ) -> CoolChicOutput:
        """Decode the frame from its latents with a training-time quantiser.

        In eval mode the latents are hard-rounded without noise whatever the arguments; during
        the quantisation search and RDOQ the latents, the rate, the upsampled latents and the
        image, and inside the ARM and the synthesis each layer's output, are recomputed only
        when a parameter they depend on has changed (see :mod:`coolchic_pl.model.evalcache`).
        """
        if self.training:
            latents = self.latent(quantizer_type, temperature, noise_type, noise_parameter)
            return CoolChicOutput(image=self._image(latents), rate_bits=self._training_rate(latents), latents=latents)
        grids = list(self.latent.parameters())
        latents = self._eval_latents.get(grids, lambda: self.latent(quantizer_type, temperature, noise_type,
                                                                    noise_parameter))
        upsampling = grids + list(self.upsampling.parameters())
        rate_bits = self._eval_rate.get(grids + list(self.arm.parameters()), lambda: self._rate(latents))
        image = self._eval_image.get(upsampling + list(self.synthesis.parameters()), lambda: self._synthesise(
            self._eval_upsampled.get(upsampling, lambda: self._upsample(latents))))
        return CoolChicOutput(image=image, rate_bits=rate_bits, latents=latents)

    @property
    def context_index(self) -> Tensor:
        """[dim_arm, N] index of every latent's contexts (channels first, as the ARM works)."""
        if self._context_index is None:
            shapes = [(c, h, w) for c, (h, w) in zip(self.latent.channels, self.latent.sizes)]
            index = context_index(shapes, self.architecture.dim_arm, self.architecture.context_order)
            self._context_index = index.t().contiguous().to(self.latent.grids[0].device)
        return self._context_index

    def _training_rate(self, latents: Tensor) -> Tensor:
        """The rate as one autograd node, differentiated by hand (:mod:`coolchic_pl.model.armrate`)."""
        index = self.context_index
        if self._arm_plan is None or self._arm_plan.device != index.device:
            self._arm_plan = ArmPlan.build(index, self.arm.ifce)
        return arm_rate_bits(self._arm_plan, self.arm, latents)

    def _rate(self, latents: Tensor) -> Tensor:
        mu, raw_log_scale = self.arm(self.arm.contexts(latents, self.context_index))
        return laplace_rate_bits(latents, mu, clamped_log_scale(raw_log_scale))

    def _image(self, latents: Tensor) -> Tensor:
        return self._synthesise(self._upsample(latents))

    def _upsample(self, latents: Tensor) -> Tensor:
        return self.upsampling(self.latent.unflatten(latents)[:self.latent.n_synthesis_grids])

    def _synthesise(self, upsampled: Tensor) -> Tensor:
        image = self.synthesis(upsampled)
        if image.shape[-2:] != self.image_size:
            image = F.interpolate(image, size=self.image_size, mode="nearest")
        return image

    def rate_per_grid(self, rate_bits: Tensor) -> list[Tensor]:
        """Total bits of each grid (0 for empty grids), finest first."""
        return [part.sum() for part in rate_bits.split(self.latent.numels)]

    def mac_per_pixel(self) -> float:
        """Multiply-accumulates per image pixel of one decoding (:func:`~coolchic_pl.model.layout.mac_per_pixel`)."""
        return mac_per_pixel(self.architecture, self.image_size, self.n_outputs)
