"""Decoder architectures as plain data: the four named sizes of Cool-Chic 4.2 and the four
of Cool-Chic 5 (``lop5``, ``mop5``, ``hop5``, ``vhop5``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

DEFAULT_N_FT_PER_RES = (1, 1, 1, 1, 1, 1, 1)


@dataclass(frozen=True)
class CoolChicArchitecture:
    """Everything that fixes the shape of one Cool-Chic decoder (not its image size).

    Field names follow the reference command-line options so that configs read the same.
    The defaults are Cool-Chic 4.2's; the fields after ``layers_synthesis`` add Cool-Chic 5's
    modules and are off by default, so a 4.2 architecture is unchanged by them.

    ``context_order`` picks the ARM's spatial context: "v4" the fixed patterns of 8, 16, 24
    or 32 neighbours, "v5" the first ``dim_arm`` positions of Cool-Chic 5's priority order.
    ``n_ifce_features`` inter-feature contexts (from the coarser grids) are appended to the
    spatial ones in the ``n_ifce_grids`` finest grids. ``hyper_per_res`` adds latent grids
    (0 or 1 per resolution) that only the entropy model sees. With ``auto_resolution`` the
    image size chooses the grids, as Cool-Chic 5's "auto": resolutions 0 to 6 below one
    megapixel, to 7 below three, else to 8, with hyper-latents from resolution 4 on when
    ``hyper_per_res`` is non-empty. ``output_range`` maps the synthesis output onto each
    plane's sample range (frozen, sent in the bitstream).
    """

    n_ft_per_res: tuple[int, ...] = DEFAULT_N_FT_PER_RES
    dim_arm: int = 16
    n_hidden_layers_arm: int = 2
    ups_k_size: int = 8
    ups_preconcat_k_size: int = 7
    layers_synthesis: str = "48-1-linear-relu,X-1-linear-none,X-3-residual-relu,X-3-residual-none"
    context_order: Literal["v4", "v5"] = "v4"
    arm_stabiliser: bool = False
    n_ifce_features: int = 0
    n_ifce_grids: int = 0
    synthesis_stabiliser: bool = False
    hyper_per_res: tuple[int, ...] = ()
    auto_resolution: bool = False
    output_range: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_ft_per_res", tuple(self.n_ft_per_res))
        object.__setattr__(self, "hyper_per_res", tuple(self.hyper_per_res))
        if self.context_order not in ("v4", "v5"):
            raise ValueError(f"context_order must be v4 or v5, got {self.context_order!r}")
        if self.n_ifce_features < 0 or self.n_ifce_grids < 0:
            raise ValueError("n_ifce_features and n_ifce_grids must be >= 0")
        if bool(self.n_ifce_features) != bool(self.n_ifce_grids):
            raise ValueError("n_ifce_features and n_ifce_grids must both be 0 or both be positive")
        if any(c not in (0, 1) for c in self.hyper_per_res):
            raise ValueError(f"hyper_per_res entries must be 0 or 1, got {list(self.hyper_per_res)}")

    @property
    def uses_v5_modules(self) -> bool:
        """Whether any of Cool-Chic 5's modules is on (such a decoder needs bitstream version 2)."""
        v4 = CoolChicArchitecture()
        return any(getattr(self, name) != getattr(v4, name) for name in _V5_FIELDS)

    def for_image(self, image_size: tuple[int, int]) -> CoolChicArchitecture:
        """The architecture with its grids fixed for an image of ``image_size`` (H, W)."""
        if not self.auto_resolution:
            return self
        n_pixels = image_size[0] * image_size[1]
        coarsest = 6 if n_pixels < 1_000_000 else 7 if n_pixels < 3_000_000 else 8
        hyper = tuple(int(r >= AUTO_FIRST_HYPER_RESOLUTION) for r in range(coarsest + 1)) if self.hyper_per_res else ()
        return replace(self, n_ft_per_res=(1,) * (coarsest + 1), hyper_per_res=hyper, auto_resolution=False)


AUTO_FIRST_HYPER_RESOLUTION = 4
_V5_FIELDS = ("context_order", "arm_stabiliser", "n_ifce_features", "n_ifce_grids", "synthesis_stabiliser",
              "hyper_per_res", "auto_resolution", "output_range")


# Decoder configurations cfg/dec/intra/{vlop,lop,mop,hop}.cfg; documented cost
# 330, 580, 1110 and 1430 MAC per pixel.
ARCHITECTURES: dict[str, CoolChicArchitecture] = {
    "vlop": CoolChicArchitecture(
        dim_arm=8, n_hidden_layers_arm=1, layers_synthesis="8-1-linear-relu,X-1-linear-none,X-3-residual-none"
    ),
    "lop": CoolChicArchitecture(
        dim_arm=8,
        n_hidden_layers_arm=2,
        layers_synthesis="16-1-linear-relu,X-1-linear-none,X-3-residual-relu,X-3-residual-none",
    ),
    "mop": CoolChicArchitecture(
        dim_arm=16,
        n_hidden_layers_arm=2,
        layers_synthesis="16-1-linear-relu,X-1-linear-none,X-3-residual-relu,X-3-residual-none",
    ),
    "hop": CoolChicArchitecture(),
}


def _v5(dim_arm: int, n_ifce_features: int, first_layer: str, residual_relu: bool) -> CoolChicArchitecture:
    """Cool-Chic 5 intra decoders (cfg/dec/intra): ARM "<dim_arm>,2/stabiliser", IFCE on
    grids 0 to 2, auto latent and hyper-latent resolutions, stabilised synthesis."""
    middle = "X-3-residual-relu," if residual_relu else ""
    return CoolChicArchitecture(
        dim_arm=dim_arm, n_hidden_layers_arm=2,
        layers_synthesis=f"{first_layer}-1-linear-relu,X-1-linear-none,{middle}X-3-residual-none",
        context_order="v5", arm_stabiliser=True, n_ifce_features=n_ifce_features, n_ifce_grids=3,
        synthesis_stabiliser=True, hyper_per_res=(1,), auto_resolution=True, output_range=True)


# Documented cost: 500, 1000, 2000 and 3000 MAC per pixel.
V5_ARCHITECTURES: dict[str, CoolChicArchitecture] = {
    "lop5": _v5(6, 2, "8", residual_relu=False),
    "mop5": _v5(10, 4, "16", residual_relu=True),
    "hop5": _v5(14, 6, "48", residual_relu=True),
    "vhop5": _v5(20, 6, "64", residual_relu=True),
}
ARCHITECTURES.update(V5_ARCHITECTURES)

# ``arch: auto`` / ``auto5``: decoders of these sizes compete in the warm-up, candidate i
# getting decoder i modulo their number; the RD loss (with an estimate of the network
# rate) picks the one that suits the image and the rate.
AUTO_ARCHITECTURES: dict[str, tuple[str, ...]] = {"auto": ("lop", "mop", "hop"), "auto5": ("lop5", "mop5", "hop5")}


def architecture_from_name(name: str) -> CoolChicArchitecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture '{name}', expected one of {', '.join(ARCHITECTURES)}") from None


# Motion Cool-Chics (cfg/dec/motion/{lop,mop}.cfg): no latents in the two finest grids, so
# the synthesis runs at a quarter of the resolution and the flows are constant on 4x4 blocks.
# vlop (this project's) drops the 3x3 layer and an ARM layer: a third of lop's parameters,
# for small frames whose networks cost as much as their latents.
MOTION_N_FT_PER_RES = (0, 0, 1, 1, 1, 1, 1)
MOTION_ARCHITECTURES: dict[str, CoolChicArchitecture] = {
    "vlop": CoolChicArchitecture(n_ft_per_res=MOTION_N_FT_PER_RES, dim_arm=8, n_hidden_layers_arm=1,
                                 layers_synthesis="8-1-linear-relu,X-1-linear-none"),
    "lop": CoolChicArchitecture(n_ft_per_res=MOTION_N_FT_PER_RES, dim_arm=8, n_hidden_layers_arm=1,
                                layers_synthesis="8-1-linear-relu,X-1-linear-none,X-3-residual-none"),
    "mop": CoolChicArchitecture(n_ft_per_res=MOTION_N_FT_PER_RES, dim_arm=8, n_hidden_layers_arm=2,
                                layers_synthesis="16-1-linear-relu,X-1-linear-none,X-3-residual-none"),
}

# ``arch: auto`` and ``motion_arch: auto`` for the P and B frames of a video: these residue
# and motion decoders compete in the frame's warm-up (see coolchic_pl.video.encoder).
AUTO_RESIDUE_ARCHITECTURES = ("vlop", "lop", "mop", "lop5")
AUTO_MOTION_ARCHITECTURES = ("lop", "mop")
