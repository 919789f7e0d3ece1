"""Typed configuration: training phases, warm-up, presets and the fit command's options.

Everything that varies between training phases is data in a :class:`TrainerPhase`;
callbacks read it. Presets are functions of the main-phase length ``n_itr`` and the
starting learning rate, as in the reference encoder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Literal, Optional, Union

import jsonargparse

from coolchic_pl.extensions import check_spec
from coolchic_pl.model.architecture import ARCHITECTURES, AUTO_ARCHITECTURES, CoolChicArchitecture
from coolchic_pl.model.coolchic import split_module_name
from coolchic_pl.model.quantizer import NOISE_TYPES, QUANTIZER_TYPES, NoiseType, QuantizerType
from coolchic_pl.video.policy import POLICIES, FrameRule, MotionInit, PolicyName


OptimizerName = Literal["adam", "soap"]
OPTIMIZERS = ("adam", "soap")


@dataclass
class TrainerPhase:
    """One training phase; defaults are those of the reference's TrainerPhase (v4.2.1).

    ``optimizer`` "adam" is Cool-Chic 4's: one Adam over every optimised parameter (betas
    0.9, 0.999) and gradient clipping over every parameter. "soap" is Cool-Chic 5's: SOAP
    (``betas_network``, preconditioners refreshed every ``precondition_frequency`` steps) for
    the networks, its Adam-like mode (``betas_latent``) for the latents, and gradient
    clipping over the network parameters only. ``rdoq`` runs Cool-Chic 5's RDOQ after the
    network quantisation (see :mod:`coolchic_pl.nnquant.rdoq`), whose q-step search makes at
    most ``quantization_passes`` passes over the networks.
    """

    lr: float = 1e-2
    max_itr: int = 5000
    freq_valid: int = 100
    patience: int = 10000
    quantize_model: bool = False
    schedule_lr: bool = False
    softround_temperature: tuple[float, float] = (0.3, 0.3)
    noise_parameter: tuple[float, float] = (1.0, 1.0)
    quantizer_noise_type: NoiseType = "kumaraswamy"
    quantizer_type: QuantizerType = "softround"
    optimized_module: list[str] = field(default_factory=lambda: ["all"])
    optimizer: OptimizerName = "adam"
    betas_network: tuple[float, float] = (0.95, 0.95)
    betas_latent: tuple[float, float] = (0.9, 0.999)
    precondition_frequency: int = 10
    rdoq: bool = False
    quantization_passes: int = 3

    def __post_init__(self) -> None:
        self.softround_temperature = tuple(self.softround_temperature)
        self.noise_parameter = tuple(self.noise_parameter)
        self.optimized_module = list(self.optimized_module)
        self.betas_network, self.betas_latent = tuple(self.betas_network), tuple(self.betas_latent)
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("betas_network", "betas_latent"):
            betas = getattr(self, name)
            if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
                problems.append(f"{name} must be two values in [0, 1), got {betas}")
        if self.precondition_frequency < 1:
            problems.append(f"precondition_frequency must be >= 1, got {self.precondition_frequency}")
        if self.quantization_passes < 1:
            problems.append(f"quantization_passes must be >= 1, got {self.quantization_passes}")
        if self.rdoq and not self.quantize_model:
            problems.append("rdoq refines a quantisation: it needs quantize_model")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        for name in ("max_itr", "freq_valid", "patience"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.softround_temperature) != 2 or min(self.softround_temperature) <= 0:
            problems.append(f"softround_temperature must be two values > 0, got {self.softround_temperature}")
        if len(self.noise_parameter) != 2 or min(self.noise_parameter) < 0:
            problems.append(f"noise_parameter must be two values >= 0, got {self.noise_parameter}")
        if self.quantizer_noise_type == "kumaraswamy" and min(self.noise_parameter) <= 0:
            problems.append("kumaraswamy noise needs noise_parameter > 0")
        if self.quantizer_type not in QUANTIZER_TYPES:
            problems.append(f"quantizer_type must be one of {QUANTIZER_TYPES}, got {self.quantizer_type!r}")
        if self.quantizer_noise_type not in NOISE_TYPES:
            problems.append(f"quantizer_noise_type must be one of {NOISE_TYPES}, got {self.quantizer_noise_type!r}")
        if not self.optimized_module:
            problems.append("optimized_module must name at least one module")
        for name in self.optimized_module:
            try:
                split_module_name(name)
            except ValueError as error:
                problems.append(f"optimized_module: {error}")
        if problems:
            raise ValueError("invalid training phase: " + "; ".join(problems))


@dataclass
class WarmupPhase:
    """Train ``candidates`` survivors with ``training_phase``, then keep the best."""

    candidates: int
    training_phase: TrainerPhase

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ValueError(f"a warm-up phase needs at least one candidate, got {self.candidates}")


@dataclass
class Warmup:
    phases: list[WarmupPhase] = field(default_factory=list)

    def __post_init__(self) -> None:
        counts = [p.candidates for p in self.phases]
        if any(later > earlier for earlier, later in zip(counts, counts[1:])):
            raise ValueError(f"warm-up candidate counts cannot grow from phase to phase, got {counts}")

    @property
    def total_iterations(self) -> int:
        return sum(p.candidates * p.training_phase.max_itr for p in self.phases)

    @property
    def n_candidates(self) -> int:
        return self.phases[0].candidates if self.phases else 1


@dataclass
class Preset:
    """Warm-up and main phases of a frame's encode. ``motion_pretrain`` is the phase that
    fits an inter frame's motion Cool-Chic to an optical flow before its warm-up (only
    inter presets have one); ``transmitted`` presets must quantise their networks;
    ``gain_from_lambda`` presets pick the latents' encoder gain from lambda (Cool-Chic 5)."""

    name: str
    all_phases: list[TrainerPhase]
    warmup: Warmup = field(default_factory=Warmup)
    motion_pretrain: Optional[TrainerPhase] = None
    transmitted: bool = True
    gain_from_lambda: bool = False

    def __post_init__(self) -> None:
        if not self.all_phases:
            raise ValueError(f"preset '{self.name}' has no training phase")
        if self.transmitted and not any(p.quantize_model for p in self.all_phases):
            raise ValueError(f"preset '{self.name}' never quantizes the networks: set quantize_model on a phase")

    @property
    def total_iterations(self) -> int:
        """Upper bound: patience may end phases earlier."""
        pretrain = self.motion_pretrain.max_itr if self.motion_pretrain is not None else 0
        return pretrain + self.warmup.total_iterations + sum(p.max_itr for p in self.all_phases)

    def table(self) -> str:
        """Human-readable table of every stage, printed at start and saved with the run."""
        header = ("stage", "cand.", "optim.", "lr", "max_itr", "patience", "valid", "cosine", "quantizer", "T",
                  "noise", "noise param", "modules", "quantize")
        rows = [
            (f"warm-up {i}", str(w.candidates), *_phase_cells(w.training_phase))
            for i, w in enumerate(self.warmup.phases)
        ]
        rows += [(f"phase {i}", "1", *_phase_cells(p)) for i, p in enumerate(self.all_phases)]
        if self.motion_pretrain is not None:
            rows.insert(0, ("motion pretrain", "1", *_phase_cells(self.motion_pretrain)))
        widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
        lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
        lines.insert(1, "-+-".join("-" * width for width in widths))
        total = (f"preset {self.name}: warm-up {self.warmup.total_iterations} iterations, "
                 f"at most {self.total_iterations} in all")
        return total + "\n" + "\n".join(lines)


def _range(values: tuple[float, float]) -> str:
    start, end = values
    return f"{start:g}" if start == end else f"{start:g}->{end:g}"


def _phase_cells(p: TrainerPhase) -> tuple[str, ...]:
    return (p.optimizer, f"{p.lr:g}", str(p.max_itr), str(p.patience), str(p.freq_valid),
            "yes" if p.schedule_lr else "no", p.quantizer_type, _range(p.softround_temperature),
            p.quantizer_noise_type, _range(p.noise_parameter), ",".join(p.optimized_module),
            ("yes, rdoq" if p.rdoq else "yes") if p.quantize_model else "no")


# ----------------------------------------------------------------------------- presets

def _main_phase(lr: float, n_itr: int, **overrides) -> TrainerPhase:
    """The long phase of every preset: cosine LR, softround 0.3 -> 0.1, Gaussian 0.25 -> 0.1."""
    values = dict(lr=lr, max_itr=n_itr, patience=5000, freq_valid=100, schedule_lr=True,
                  softround_temperature=(0.3, 0.1), noise_parameter=(0.25, 0.1), quantizer_noise_type="gaussian")
    values.update(overrides)
    return TrainerPhase(**values)


def _ste_phase(max_itr: int, patience: int, quantize: bool, **overrides) -> TrainerPhase:
    """Straight-through phase at lr 1e-4 with T = 1e-4 and no noise."""
    values = dict(lr=1e-4, max_itr=max_itr, patience=patience, freq_valid=100, schedule_lr=True,
                  quantizer_type="ste", softround_temperature=(1e-4, 1e-4), quantizer_noise_type="none",
                  quantize_model=quantize)
    values.update(overrides)
    return TrainerPhase(**values)


def _latent_retune(max_itr: int, patience: int) -> TrainerPhase:
    """Latent-only re-tune after quantisation (v3.4 c3x): constant lr 1e-4, STE, valid every 10."""
    return _ste_phase(max_itr, patience, False, freq_valid=10, schedule_lr=False, optimized_module=["latent"])


def _warmup_phase(lr: float, max_itr: int, patience: int, freq_valid: int) -> TrainerPhase:
    return TrainerPhase(lr=lr, max_itr=max_itr, patience=patience, freq_valid=freq_valid,
                        softround_temperature=(0.3, 0.3), noise_parameter=(2.0, 2.0))


def c3x_intra(n_itr: int, start_lr: float) -> Preset:
    """Cool-Chic 4.2.1 image preset: 5 then 2 candidates x 400, main phase, STE + quantise."""
    warm = _warmup_phase(start_lr, 400, 400, 100)
    return Preset("c3x_intra",
                  [_main_phase(start_lr, n_itr), _ste_phase(1500, 1500, True)],
                  Warmup([WarmupPhase(5, warm), WarmupPhase(2, warm)]))


def c3x(n_itr: int, start_lr: float) -> Preset:
    """Cool-Chic 3.4 preset: as c3x_intra (validation every 400 in warm-up), plus a
    latent-only re-tune after the networks are quantised."""
    warm = _warmup_phase(start_lr, 400, 100000, 400)
    return Preset("c3x",
                  [_main_phase(start_lr, n_itr), _ste_phase(1500, 1500, True), _latent_retune(1000, 50)],
                  Warmup([WarmupPhase(5, warm), WarmupPhase(2, warm)]))


def fast(n_itr: int, start_lr: float) -> Preset:
    """CPU-friendly default, about 2600 iterations in all with n_itr = 1500: a short
    3 then 2 candidate warm-up (100 iterations each), the main phase, a 300-iteration STE
    phase with quantisation and a short latent re-tune."""
    warm = _warmup_phase(start_lr, 100, 100, 100)
    return Preset("fast",
                  [_main_phase(start_lr, n_itr), _ste_phase(300, 300, True, freq_valid=50),
                   _latent_retune(300, 50)],
                  Warmup([WarmupPhase(3, warm), WarmupPhase(2, warm)]))


def debug(n_itr: int, start_lr: float, n_itr_pretrain_motion: int = 50) -> Preset:
    """Seconds: the reference debug preset (its phase 0 length is fixed at 50), for I and
    inter frames alike."""
    warm = TrainerPhase(max_itr=10)
    return Preset("debug",
                  [_main_phase(start_lr, 50, patience=100000),
                   _ste_phase(10, 10, True, schedule_lr=False),
                   _latent_retune(10, 5)],
                  Warmup([WarmupPhase(3, warm), WarmupPhase(2, warm)]),
                  motion_pretrain=_main_phase(1e-2, n_itr_pretrain_motion, patience=n_itr_pretrain_motion))


def _motion_pretrain(max_itr: int) -> TrainerPhase:
    """Fit the motion Cool-Chic to the optical flow: constant lr 1e-2, warm-up quantiser."""
    return TrainerPhase(lr=1e-2, max_itr=max_itr, patience=max_itr, softround_temperature=(0.3, 0.3),
                        noise_parameter=(2.0, 2.0))


def c3x_inter(n_itr: int, start_lr: float, n_itr_pretrain_motion: int = 1000) -> Preset:
    """Cool-Chic 4.2.1 P/B frame preset: motion pre-training, 2 candidates x 600, then one
    main phase followed by the quantisation (no STE phase)."""
    warm = _warmup_phase(start_lr, 600, 100000, 600)
    return Preset("c3x_inter", [_main_phase(start_lr, n_itr, quantize_model=True)],
                  Warmup([WarmupPhase(2, warm)]), motion_pretrain=_motion_pretrain(n_itr_pretrain_motion))


def fast_inter(n_itr: int, start_lr: float, n_itr_pretrain_motion: int = 200) -> Preset:
    """CPU-friendly P/B frame preset, the inter counterpart of ``fast``: a short motion
    pre-training, 2 candidates x 100, the main phase with quantisation, a latent re-tune."""
    warm = _warmup_phase(start_lr, 100, 100000, 100)
    return Preset("fast_inter", [_main_phase(start_lr, n_itr, quantize_model=True), _latent_retune(100, 50)],
                  Warmup([WarmupPhase(2, warm)]), motion_pretrain=_motion_pretrain(n_itr_pretrain_motion))


def measure_speed(n_itr: int, start_lr: float) -> Preset:
    """One warm-up iteration, then the main phase only, quantised: for timing."""
    warm = TrainerPhase(max_itr=1, freq_valid=1, noise_parameter=(2.0, 2.0))
    return Preset("measure_speed", [_main_phase(start_lr, n_itr, quantize_model=True)],
                  Warmup([WarmupPhase(1, warm)]))


def v5_warmup_iterations(n_itr: int) -> int:
    """Cool-Chic 5's warm-up length per candidate, from the total budget."""
    return 50 if n_itr < 4000 else 100 if n_itr < 9000 else 200 if n_itr < 12000 else 400


V5_FINAL_ITERATIONS = 500
V5_MIN_N_ITR = 1000


def _soap_phase(**values) -> TrainerPhase:
    return TrainerPhase(optimizer="soap", betas_network=(0.95, 0.95), **values)


def intra5(n_itr: int, start_lr: float, lmbda: float) -> Preset:
    """Cool-Chic 5's intra preset; ``n_itr`` is the whole budget. Warm-up 5 then 2
    candidates of a length set by the budget (SOAP refreshing its preconditioners every
    step, Gaussian noise whose level falls with lambda), a core phase of what is left
    (cosine LR, softround 0.35 -> 0.08, noise 0.22 -> 0.15), then 500 hard-rounded
    iterations at lr 1e-4, the network quantisation and RDOQ."""
    if n_itr < V5_MIN_N_ITR:
        raise ValueError(f"preset intra5 needs n_itr >= {V5_MIN_N_ITR} (its whole budget), got {n_itr}")
    warmup_itr = v5_warmup_iterations(n_itr)
    noise = (-0.432 * math.log10(lmbda) + 0.747) / 10.0
    warm = _soap_phase(lr=start_lr, max_itr=warmup_itr, freq_valid=100, patience=warmup_itr,
                       softround_temperature=(0.35, 0.35), noise_parameter=(noise, noise),
                       quantizer_noise_type="gaussian", betas_latent=(0.725, 0.97), precondition_frequency=1)
    core = _soap_phase(lr=start_lr, max_itr=n_itr - V5_FINAL_ITERATIONS - 7 * warmup_itr, patience=5000,
                       schedule_lr=True, softround_temperature=(0.35, 0.08), noise_parameter=(0.22, 0.15),
                       quantizer_noise_type="gaussian")
    final = _soap_phase(lr=1e-4, max_itr=V5_FINAL_ITERATIONS, patience=V5_FINAL_ITERATIONS, schedule_lr=True,
                        quantizer_type="hardround", quantizer_noise_type="none", quantize_model=True, rdoq=True)
    return Preset("intra5", [core, final], Warmup([WarmupPhase(5, warm), WarmupPhase(2, warm)]),
                  gain_from_lambda=True)


def inter5(n_itr: int, start_lr: float, n_itr_pretrain_motion: int = 200) -> Preset:
    """Cool-Chic 5's training tools for a P or B frame: the motion pre-training, a warm-up
    of 2 candidates x 100 and ``n_itr`` core iterations with SOAP (intra5's schedules),
    then hard-rounded iterations at lr 1e-4, the network quantisation and RDOQ. The q-step
    search makes one pass: on inter frames further passes changed nothing measured and
    cost 40 % of the search."""
    warm = _soap_phase(lr=start_lr, max_itr=100, freq_valid=100, patience=100, softround_temperature=(0.35, 0.35),
                       noise_parameter=(0.2, 0.2), quantizer_noise_type="gaussian", betas_latent=(0.725, 0.97),
                       precondition_frequency=1)
    core = _soap_phase(lr=start_lr, max_itr=n_itr, patience=5000, schedule_lr=True, softround_temperature=(0.35, 0.08),
                       noise_parameter=(0.22, 0.15), quantizer_noise_type="gaussian")
    final_itr = max(100, n_itr // 6)
    final = _soap_phase(lr=1e-4, max_itr=final_itr, patience=final_itr, schedule_lr=True, quantizer_type="hardround",
                        quantizer_noise_type="none", quantize_model=True, rdoq=True, quantization_passes=1)
    return Preset("inter5", [core, final], Warmup([WarmupPhase(2, warm)]),
                  motion_pretrain=_motion_pretrain(n_itr_pretrain_motion))


PRESETS: dict[str, Callable[[int, float], Preset]] = {
    "c3x": c3x, "c3x_intra": c3x_intra, "fast": fast, "debug": debug, "measure_speed": measure_speed,
}
# Cool-Chic 5 presets depend on lambda too.
LAMBDA_PRESETS: dict[str, Callable[[int, float, float], Preset]] = {"intra5": intra5}
DEFAULT_N_ITR = {"c3x": 10000, "c3x_intra": 10000, "fast": 1500, "debug": 50, "measure_speed": 1500,
                 "intra5": 10000}
INTER_PRESETS: dict[str, Callable[[int, float, int], Preset]] = {
    "c3x_inter": c3x_inter, "fast_inter": fast_inter, "inter5": inter5, "debug": debug,
}
DEFAULT_N_ITR_INTER = {"c3x_inter": 10000, "fast_inter": 1000, "inter5": 1000, "debug": 50}
DEFAULT_N_ITR_PRETRAIN_MOTION = {"c3x_inter": 1000, "fast_inter": 200, "inter5": 200, "debug": 50}
# The inter preset that goes with an image preset when the config names none.
INTER_PRESET_FOR = {"c3x": "c3x_inter", "c3x_intra": "c3x_inter", "fast": "fast_inter", "debug": "debug",
                    "measure_speed": "fast_inter", "intra5": "inter5"}


def depth_budget(n_itr: int, depth: int, floor_fraction: float) -> int:
    """Iterations of a B frame at ``depth``: 20 % fewer per level, never under
    ``floor_fraction`` of the budget (spec 14.2: max(10000 - 2000 d, 1000) for the main
    phase, max(5000 - 1000 d, 1000) for the motion pre-training)."""
    return max(round(n_itr * (1 - 0.2 * depth)), round(n_itr * floor_fraction), 1)


def inter_budgets(name: str, depth: int, is_b_frame: bool, n_itr: Optional[int] = None,
                  n_itr_pretrain_motion: Optional[int] = None) -> tuple[int, int]:
    """Main-phase and motion pre-training iterations of a P or B frame: the given values
    (or the preset's) for a P frame, fewer with depth for a B frame."""
    if name not in INTER_PRESETS:
        raise ValueError(f"unknown inter preset '{name}', expected one of {', '.join(INTER_PRESETS)}")
    n_itr = DEFAULT_N_ITR_INTER[name] if n_itr is None else n_itr
    pretrain = DEFAULT_N_ITR_PRETRAIN_MOTION[name] if n_itr_pretrain_motion is None else n_itr_pretrain_motion
    if n_itr < 1 or pretrain < 1:
        raise ValueError(f"inter iterations must be >= 1, got n_itr_inter {n_itr}, n_itr_pretrain_motion {pretrain}")
    if is_b_frame:
        n_itr, pretrain = depth_budget(n_itr, depth, 0.1), depth_budget(pretrain, depth, 0.2)
    return n_itr, pretrain


def make_inter_preset(name: str, depth: int, is_b_frame: bool, n_itr: Optional[int] = None,
                      n_itr_pretrain_motion: Optional[int] = None, start_lr: float = 1e-2) -> Preset:
    """The preset of a P or B frame; B frames get a budget that shrinks with depth."""
    n_itr, pretrain = inter_budgets(name, depth, is_b_frame, n_itr, n_itr_pretrain_motion)
    return INTER_PRESETS[name](n_itr, start_lr, pretrain)


def with_warmup_iterations(preset: Preset, max_itr: Optional[int]) -> Preset:
    """``preset`` with every warm-up candidate trained ``max_itr`` iterations (None: unchanged)."""
    if max_itr is None:
        return preset
    phases = [WarmupPhase(w.candidates, replace(w.training_phase, max_itr=max_itr,
                                                freq_valid=min(w.training_phase.freq_valid, max_itr),
                                                patience=max(w.training_phase.patience, max_itr)))
              for w in preset.warmup.phases]
    return replace(preset, warmup=Warmup(phases))


def make_preset(name: str, n_itr: Optional[int] = None, start_lr: float = 1e-2, lmbda: float = 1e-3) -> Preset:
    if name not in DEFAULT_N_ITR:
        raise ValueError(f"unknown preset '{name}', expected one of {', '.join(DEFAULT_N_ITR)}")
    n_itr = DEFAULT_N_ITR[name] if n_itr is None else n_itr
    if n_itr < 1:
        raise ValueError(f"n_itr must be >= 1, got {n_itr}")
    if name in LAMBDA_PRESETS:
        return LAMBDA_PRESETS[name](n_itr, start_lr, lmbda)
    return PRESETS[name](n_itr, start_lr)


# ----------------------------------------------------------------------------- fit

InterPresetName = Literal["c3x_inter", "fast_inter", "inter5", "debug"]
ArchName = Literal["vlop", "lop", "mop", "hop", "lop5", "mop5", "hop5", "vhop5", "auto", "auto5"]
InterArchName = Literal["lop", "mop"]


@dataclass
class ArchitectureFields:
    """Decoder fields that replace those of the named decoder ``arch``; null keeps its value.

    Args:
        n_ft_per_res: Latent channels (0 or 1) per resolution, finest first.
        dim_arm: ARM spatial contexts (v4 order: 8, 16, 24 or 32; v5 order: 1 to 40).
        n_hidden_layers_arm: Hidden layers of the ARM.
        ups_k_size: Kernel size of the x2 upsampling filters.
        ups_preconcat_k_size: Kernel size of the refinement filters.
        layers_synthesis: Synthesis layers, e.g. 48-1-linear-relu,X-1-linear-none,X-3-residual-none.
        context_order: ARM spatial context positions: v4 (fixed patterns) or v5 (priority order).
        arm_stabiliser: Linear branch from the ARM's contexts to its outputs (Cool-Chic 5).
        n_ifce_features: Inter-feature contexts from the coarser grids (0: no IFCE).
        n_ifce_grids: Finest grids that get inter-feature contexts.
        synthesis_stabiliser: Linear 1x1 branch from the latents to the synthesis outputs (Cool-Chic 5).
        hyper_per_res: Hyper-latent channels (0 or 1) per resolution, read by the entropy model only.
        auto_resolution: Latent (and hyper-latent) grids chosen from the image size, as Cool-Chic 5's "auto".
        output_range: Map the synthesis output onto each plane's sample range (frozen, sent in the bitstream).
    """

    n_ft_per_res: Optional[tuple[int, ...]] = None
    dim_arm: Optional[int] = None
    n_hidden_layers_arm: Optional[int] = None
    ups_k_size: Optional[int] = None
    ups_preconcat_k_size: Optional[int] = None
    layers_synthesis: Optional[str] = None
    context_order: Optional[Literal["v4", "v5"]] = None
    arm_stabiliser: Optional[bool] = None
    n_ifce_features: Optional[int] = None
    n_ifce_grids: Optional[int] = None
    synthesis_stabiliser: Optional[bool] = None
    hyper_per_res: Optional[tuple[int, ...]] = None
    auto_resolution: Optional[bool] = None
    output_range: Optional[bool] = None

    def __post_init__(self) -> None:
        for name in ("n_ft_per_res", "hyper_per_res"):
            if getattr(self, name) is not None:
                setattr(self, name, tuple(getattr(self, name)))


@dataclass
class FitConfig:
    """Options of ``coolchic-fit``; every key can come from YAML or the command line.

    Args:
        input: Image to encode (.png, .ppm, .yuv, or any 8-bit RGB image Pillow reads).
        output_dir: Parent folder of the run folders, one per (image, lambda).
        lmbda: Rate-distortion trade-off: loss = MSE + lmbda * bits / pixels.
        preset: Training schedule: a name (c3x, c3x_intra, fast, debug, measure_speed; Cool-Chic 5: intra5, n_itr =
            budget) or a preset written out as a mapping (warm-up and phases, see coolchic_pl/preset_file.py).
        n_itr: Main-phase iterations of a named preset (default: the preset's).
        preset_file: YAML preset, the same mapping in a file, used instead of preset.
        start_lr: Learning rate of the warm-up and main phases.
        arch: Named decoder the architecture starts from: Cool-Chic 4.2's vlop, lop, mop, hop or Cool-Chic 5's
            lop5, mop5, hop5, vhop5 (null: hop's fields); auto (lop, mop, hop) or auto5 (lop5, mop5, hop5):
            those decoders compete in the warm-up.
        architecture: Decoder fields that replace the named decoder's (e.g. --architecture.dim_arm 8).
        n_loops: Independent encodes (warm-up included); the best final loss is kept.
        seed: Seed of the random initialisations and noise.
        frame_index: Frame of a multi-frame .yuv file.
        device: cpu, cuda or auto.
        compile: torch.compile the decoder after warm-up (off: it crashes on CPU with torch 2.13).
        checkpoint_interval_s: Most seconds of encoding between two checkpoints (0: only at stage ends).
        job_duration_min: Checkpoint and exit with the requeue code 42 after this many minutes (null: no limit).
        n_frames: Frames of a .yuv sequence to code from frame_index on (1: one image; more: video).
        intra_pos: Video: I frames in display order, e.g. 0,4-7,-2 (ranges inclusive, negatives from the end).
        p_pos: Video: P frames, same syntax; every other frame is a B frame.
        inter_preset: Video: training schedule of P and B frames (null: the one that goes with preset).
        n_itr_inter: Video: main-phase iterations of a P frame; B frames get fewer with depth (null: the preset's).
        n_itr_pretrain_motion: Video: iterations fitting the motion Cool-Chic to the optical flow (null: the preset's).
        inter_arch: Video: residue and motion decoders of every P/B frame (null: the coding policy's).
        warp_filter_size: Video: motion compensation filter of every P/B frame, 2 bilinear, 4 bicubic, 6+ windowed
            sinc (null: the coding policy's).
        motion_init: Video: flow (warm-up candidates start from the estimated flow) or none (null: the policy's).
        coding_policy: Video: per-frame settings: default, v3.4 (lambda x 1.5^depth for every frame) or v4.2.
        frame_rules: Video: rules applied after the coding policy, e.g. [{frames: B, depth: 2, lmbda_factor: 2}].
        callbacks: Your Lightning callbacks, [{class_path: module.Class, init_args: {...}}], added to every stage.
        loggers: Lightning loggers in the same form (null: TensorBoard and CSV in the run folder; []: none).
    """

    input: str = ""
    output_dir: str = "runs"
    lmbda: float = 1e-3
    preset: Union[str, dict[str, Any]] = "fast"
    n_itr: Optional[int] = None
    preset_file: Optional[str] = None
    start_lr: float = 1e-2
    arch: Optional[ArchName] = "hop"
    architecture: ArchitectureFields = field(default_factory=ArchitectureFields)
    n_loops: int = 1
    seed: int = 0
    frame_index: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    checkpoint_interval_s: float = 60.0
    job_duration_min: Optional[float] = None
    n_frames: int = 1
    intra_pos: str = "0"
    p_pos: str = ""
    inter_preset: Optional[InterPresetName] = None
    n_itr_inter: Optional[int] = None
    n_itr_pretrain_motion: Optional[int] = None
    inter_arch: Optional[InterArchName] = None
    warp_filter_size: Optional[int] = None
    motion_init: Optional[MotionInit] = None
    coding_policy: PolicyName = "default"
    frame_rules: list[FrameRule] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    loggers: Optional[list[dict[str, Any]]] = None

    def __post_init__(self) -> None:
        if isinstance(self.preset, dict):
            if self.preset_file:
                raise ValueError("preset is a mapping and preset_file is set: give one of them")
            self.preset_object()  # a bad mapping fails here, with its one-line message
        elif self.preset not in DEFAULT_N_ITR:
            raise ValueError(f"unknown preset '{self.preset}', expected one of {', '.join(DEFAULT_N_ITR)} "
                             "or a preset mapping")
        for kind in ("callbacks", "loggers"):
            for index, spec in enumerate(getattr(self, kind) or []):
                check_spec(spec, f"{kind}[{index}]")
        self.intra_pos, self.p_pos = str(self.intra_pos), str(self.p_pos)
        if self.n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {self.n_frames}")
        if self.coding_policy not in POLICIES:
            raise ValueError(f"coding_policy must be one of {', '.join(POLICIES)}, got {self.coding_policy!r}")
        self.frame_rules = [r if isinstance(r, FrameRule) else FrameRule(**r) for r in self.frame_rules]
        self.frame_policy()  # a config key out of range fails here, with the rule's message
        if not self.lmbda > 0:
            raise ValueError(f"lmbda must be > 0, got {self.lmbda}")
        if self.n_loops < 1:
            raise ValueError(f"n_loops must be >= 1, got {self.n_loops}")
        if self.n_itr is not None and self.n_itr < 1:
            raise ValueError(f"n_itr must be >= 1, got {self.n_itr}")
        if not self.start_lr > 0:
            raise ValueError(f"start_lr must be > 0, got {self.start_lr}")
        if self.frame_index < 0:
            raise ValueError(f"frame_index must be >= 0, got {self.frame_index}")
        if not self.checkpoint_interval_s >= 0:
            raise ValueError(f"checkpoint_interval_s must be >= 0, got {self.checkpoint_interval_s}")
        if self.job_duration_min is not None and not self.job_duration_min > 0:
            raise ValueError(f"job_duration_min must be > 0 (or null for no limit), got {self.job_duration_min}")

    def resolved_architectures(self, arch: Optional[str] = None) -> list[CoolChicArchitecture]:
        """The decoders of the warm-up candidates: one, or those of ``arch: auto``; ``arch``
        replaces the config's (a video frame's policy may name another)."""
        arch = self.arch if arch is None else arch
        names = AUTO_ARCHITECTURES.get(arch or "", (arch,))
        overrides = {k: v for k, v in asdict(self.architecture).items() if v is not None}
        return [replace(ARCHITECTURES[name] if name else CoolChicArchitecture(), **overrides) for name in names]

    def resolved_architecture(self) -> CoolChicArchitecture:
        """The decoder of an encode with one named decoder."""
        if self.arch in AUTO_ARCHITECTURES:
            raise ValueError(f"arch {self.arch} names several decoders")
        return self.resolved_architectures()[0]

    def preset_object(self, n_itr: Optional[int] = None, start_lr: Optional[float] = None,
                      lmbda: Optional[float] = None) -> Preset:
        """The intra preset: the preset file's or mapping's as written, else the named one for
        these iterations, learning rate and lambda (by default the config's)."""
        from coolchic_pl.preset_file import load_preset, preset_from_mapping  # they build on this module

        if self.preset_file:
            return load_preset(self.preset_file)
        if isinstance(self.preset, dict):
            try:
                return preset_from_mapping(self.preset)
            except ValueError as error:
                raise ValueError(f"preset: {error}") from None
        return make_preset(self.preset, self.n_itr if n_itr is None else n_itr,
                           self.start_lr if start_lr is None else start_lr, self.lmbda if lmbda is None else lmbda)

    @property
    def is_video(self) -> bool:
        return self.n_frames > 1

    def frame_policy(self) -> list[FrameRule]:
        """The rules that decide each video frame's settings: the named policy's, the inter
        frame keys that are set, then ``frame_rules`` (see :mod:`coolchic_pl.video.policy`)."""
        keys = {"warp_filter_size": self.warp_filter_size, "motion_init": self.motion_init,
                "arch": self.inter_arch, "motion_arch": self.inter_arch}
        keys = {k: v for k, v in keys.items() if v is not None}
        from_keys = [FrameRule(frames="inter", **keys)] if keys else []
        return [*POLICIES[self.coding_policy], *from_keys, *self.frame_rules]

    @property
    def preset_name(self) -> str:
        return self.preset["name"] if isinstance(self.preset, dict) else self.preset

    @property
    def inter_preset_name(self) -> str:
        """The P/B frame preset: the config's, else the one that goes with the intra preset's name."""
        name = self.inter_preset or INTER_PRESET_FOR.get(self.preset_name)
        if name is None:
            raise ValueError(f"preset {self.preset_name} has no inter preset that goes with it: set inter_preset")
        return name

    def as_dict(self) -> dict:
        """Every option, with the architecture fields resolved (with ``arch: auto``, the
        overrides as given: each competing decoder resolves them)."""
        values = asdict(self)
        if self.arch not in AUTO_ARCHITECTURES:
            values["architecture"] = asdict(self.resolved_architecture())
        for name in ("n_ft_per_res", "hyper_per_res"):
            if values["architecture"][name] is not None:
                values["architecture"][name] = list(values["architecture"][name])
        return values


def arch_label(architecture: CoolChicArchitecture) -> str:
    """The named decoder ``architecture`` is, or "custom"."""
    return next((name for name, arch in ARCHITECTURES.items() if arch == architecture), "custom")


# ----------------------------------------------------------------------------- YAML and command line

def build_parser(prog: str = "coolchic-fit") -> jsonargparse.ArgumentParser:
    description = ("Encode an image or a video with Cool-Chic. --print_config prints the config with its preset "
                   "written out (what --config reads back); --print_preset prints the preset alone (what "
                   "--preset_file reads).")
    parser = jsonargparse.ArgumentParser(prog=prog, description=description, exit_on_error=False, print_config=None)
    parser.add_argument("--config", action=jsonargparse.ActionConfigFile, help="YAML config file(s)")
    parser.add_class_arguments(FitConfig, nested_key=None, fail_untyped=True)
    return parser


def parse_config(argv: list[str] | None) -> FitConfig:
    """Parse command line and YAML into a FitConfig that names its input; raise ValueError
    with one line."""
    config = read_config(argv)
    if not config.input:
        raise ValueError("no input image: pass --input PATH or set input in the config")
    return config


def read_config(argv: list[str] | None) -> FitConfig:
    """Command line and YAML into a FitConfig (the input may be left unset); ValueError with one line."""
    parser = build_parser()
    try:
        namespace = parser.parse_args(argv)
        values = vars(parser.instantiate(namespace))
    except jsonargparse.ArgumentError as error:
        raise ValueError(" ".join(line.strip() for line in str(error).splitlines() if line.strip())) from None
    values.pop("config", None)
    values.pop("__path__", None)
    return FitConfig(**values)


def dump_config(config: FitConfig) -> str:
    """YAML that ``--config`` reads back into the same encode (architecture fields resolved)."""
    return build_parser().dump(jsonargparse.Namespace(**config.as_dict()))
