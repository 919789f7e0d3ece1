"""The per-frame coding policy of a video: what each frame of the structure is coded with.

A policy is a list of :class:`FrameRule`. Each rule names the frames it applies to (a type,
optionally a depth) and the settings it gives them; every matching rule is applied in
order, so a later rule overrides the fields it sets and leaves the others alone. A frame's
settings are, from lowest to highest precedence: the defaults of :class:`FrameSettings`,
the rules of the named policy (``coding_policy``), the config's inter-frame keys when set
(``n_itr_inter``, ``n_itr_pretrain_motion``, ``inter_arch``, ``warp_filter_size``,
``motion_init``), then the config's own ``frame_rules``.

Named policies:

* ``v3.4``: the reference 3.4 rule, every frame at lambda x 1.5^depth, Cool-Chic 4.2 decoders
  (mop at depth 1, lop deeper), the 8-tap windowed-sinc warp;
* ``v4.2``: the reference 4.2 sample script's, P frames at lambda with lr 5e-3, B frames at
  lambda x 1.5^depth, same decoders and warp;
* ``default``: what measured best here (docs/video.md): the I frame at lambda x 0.33, P frames
  at lambda x 1.5 whatever their depth (a low-delay chain keeps one rate), B frames at
  lambda x 1.5^depth, the lop5 residue decoder, the vlop motion decoder, the bicubic warp and
  a warm-started warm-up candidate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Literal, Optional

from coolchic_pl.video.structure import CodedFrame

FrameSelector = Literal["I", "P", "B", "inter", "all"]
MotionInit = Literal["flow", "none"]
NetworkReuse = Literal["never", "compete", "always"]
# The Cool-Chics an inter frame may code: none (the prediction alone), one of them, or both.
FRAME_MODES = ("prediction", "residue", "motion", "motion+residue")
MOTION_MODELS = ("translation", "affine", "derived")


@dataclass
class FrameRule:
    """Settings for the frames a rule selects; null fields leave what earlier rules set.

    Args:
        frames: Which frames: I, P, B, inter (P and B) or all.
        depth: Only the frames at this depth of the coding structure (null: any depth).
        lmbda_factor: The frame's lambda is the sequence's times lmbda_factor x lmbda_depth_base^depth.
        lmbda_depth_base: See lmbda_factor (1: no change with depth).
        arch: Residue decoder of a P/B frame (or the decoder of an I frame): a named decoder, or auto.
        motion_arch: Motion decoder of a P/B frame: a named motion decoder, or auto.
        n_itr: Main-phase iterations.
        n_itr_warmup: Iterations of each warm-up candidate.
        n_itr_pretrain_motion: Iterations fitting the motion decoder to the estimated flow (P/B).
        lr: Learning rate of the warm-up and main phases.
        warp_filter_size: Motion compensation filter (2 bilinear, 4 bicubic, 6+ windowed sinc).
        motion_init: flow (warm-up candidates start from the estimated flow) or none.
        warm_start: A warm-up candidate starts from the networks of the previous inter frame of the same type.
        reuse_networks: Networks of the previous inter frame of the same type, frozen and not sent again: never,
            compete (one warm-up candidate reuses them) or always (the frame trains its latents only).
        modes: The Cool-Chics a P/B frame may code, competing on RD cost: prediction (none), residue, motion,
            motion+residue.
        motion_models: What a P/B frame's motion may start from, on top of the global translation: translation
            (nothing more), affine (six parameters per reference), derived (an earlier frame's decoded motion scaled
            by temporal distance); the best prediction is the base of the trained modes.
        network_prediction: A P/B frame's networks may be sent as differences from, or as, those of the last coded
            frame's Cool-Chic of the same role (chosen per network by the quantisation search).
    """

    frames: FrameSelector = "all"
    depth: Optional[int] = None
    lmbda_factor: Optional[float] = None
    lmbda_depth_base: Optional[float] = None
    arch: Optional[str] = None
    motion_arch: Optional[str] = None
    n_itr: Optional[int] = None
    n_itr_warmup: Optional[int] = None
    n_itr_pretrain_motion: Optional[int] = None
    lr: Optional[float] = None
    warp_filter_size: Optional[int] = None
    motion_init: Optional[MotionInit] = None
    warm_start: Optional[bool] = None
    reuse_networks: Optional[NetworkReuse] = None
    modes: Optional[list[str]] = None
    motion_models: Optional[list[str]] = None
    network_prediction: Optional[bool] = None

    def __post_init__(self) -> None:
        problems = []
        for name, known in (("modes", FRAME_MODES), ("motion_models", MOTION_MODELS)):
            values = getattr(self, name)
            if values is None:
                continue
            setattr(self, name, list(values))
            unknown = [v for v in values if v not in known]
            if unknown or not values:
                problems.append(f"{name} must be a non-empty list of {', '.join(known)}, got {list(values)}")
        if self.frames not in ("I", "P", "B", "inter", "all"):
            problems.append(f"frames must be I, P, B, inter or all, got {self.frames!r}")
        if self.depth is not None and self.depth < 0:
            problems.append(f"depth must be >= 0, got {self.depth}")
        for name in ("lmbda_factor", "lmbda_depth_base", "lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                problems.append(f"{name} must be > 0, got {value}")
        for name in ("n_itr", "n_itr_warmup", "n_itr_pretrain_motion"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1, got {value}")
        if self.warp_filter_size is not None and (self.warp_filter_size < 2 or self.warp_filter_size % 2):
            problems.append(f"warp_filter_size must be even and >= 2, got {self.warp_filter_size}")
        if self.motion_init not in (None, "flow", "none"):
            problems.append(f"motion_init must be flow or none, got {self.motion_init!r}")
        if self.reuse_networks not in (None, "never", "compete", "always"):
            problems.append(f"reuse_networks must be never, compete or always, got {self.reuse_networks!r}")
        if problems:
            raise ValueError("invalid frame rule: " + "; ".join(problems))

    def selects(self, frame: CodedFrame) -> bool:
        kind = frame.frame_type
        wanted = {"all": "IPB", "inter": "PB"}.get(self.frames, self.frames)
        return kind in wanted and (self.depth is None or self.depth == frame.depth)

    def settings(self) -> dict:
        """The fields this rule sets (lists as tuples, as :class:`FrameSettings` holds them)."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in asdict(self).items()
                if k not in ("frames", "depth") and v is not None}


@dataclass(frozen=True)
class FrameSettings:
    """Everything the policy decides for one frame. ``None`` iterations mean the preset's
    own (B frames: fewer with depth); ``arch`` None means the config's ``arch`` for an I
    frame."""

    lmbda_factor: float = 1.0
    lmbda_depth_base: float = 1.0
    arch: Optional[str] = None
    motion_arch: Optional[str] = None
    n_itr: Optional[int] = None
    n_itr_warmup: Optional[int] = None
    n_itr_pretrain_motion: Optional[int] = None
    lr: Optional[float] = None
    warp_filter_size: int = 8
    motion_init: MotionInit = "flow"
    warm_start: bool = False
    reuse_networks: NetworkReuse = "never"
    modes: tuple[str, ...] = ("motion+residue",)
    motion_models: tuple[str, ...] = ("translation",)
    network_prediction: bool = False

    def lmbda(self, sequence_lmbda: float, depth: int) -> float:
        return sequence_lmbda * self.lmbda_factor * self.lmbda_depth_base**depth


def _rules(*rules: dict) -> tuple[FrameRule, ...]:
    return tuple(FrameRule(**rule) for rule in rules)


_CC42_DECODERS = ({"frames": "inter", "arch": "lop", "motion_arch": "lop"},
                  {"frames": "inter", "depth": 1, "arch": "mop", "motion_arch": "mop"})
POLICIES: dict[str, tuple[FrameRule, ...]] = {
    "v3.4": _rules({"frames": "all", "lmbda_depth_base": 1.5}, *_CC42_DECODERS),
    "v4.2": _rules({"frames": "B", "lmbda_depth_base": 1.5}, *_CC42_DECODERS, {"frames": "P", "lr": 5e-3}),
    "default": _rules({"frames": "I", "lmbda_factor": 0.33}, {"frames": "P", "lmbda_factor": 1.5},
                      {"frames": "B", "lmbda_depth_base": 1.5},
                      {"frames": "inter", "arch": "lop5", "motion_arch": "vlop", "warp_filter_size": 4,
                       "warm_start": True, "modes": list(FRAME_MODES), "motion_models": list(MOTION_MODELS),
                       "network_prediction": True}),
}
PolicyName = Literal["default", "v3.4", "v4.2"]


def resolve_settings(frame: CodedFrame, rules: list[FrameRule] | tuple[FrameRule, ...]) -> FrameSettings:
    """Apply every rule that selects ``frame``, in order."""
    values: dict = {}
    for rule in rules:
        if rule.selects(frame):
            values.update(rule.settings())
    return replace(FrameSettings(), **values)


def settings_row(settings: FrameSettings) -> dict:
    """The settings as plain values, for results and the structure table."""
    return {field.name: getattr(settings, field.name) for field in fields(settings)}
