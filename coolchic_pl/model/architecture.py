"""Decoder architectures as plain data, and the four named sizes of Cool-Chic 4.2."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_N_FT_PER_RES = (1, 1, 1, 1, 1, 1, 1)


@dataclass(frozen=True)
class CoolChicArchitecture:
    """Everything that fixes the shape of one Cool-Chic decoder (not its image size).

    Field names follow the reference command-line options so that configs read the same.
    """

    n_ft_per_res: tuple[int, ...] = DEFAULT_N_FT_PER_RES
    dim_arm: int = 16
    n_hidden_layers_arm: int = 2
    ups_k_size: int = 8
    ups_preconcat_k_size: int = 7
    layers_synthesis: str = "48-1-linear-relu,X-1-linear-none,X-3-residual-relu,X-3-residual-none"


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


def architecture_from_name(name: str) -> CoolChicArchitecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture '{name}', expected one of {', '.join(ARCHITECTURES)}") from None


# Motion Cool-Chics (cfg/dec/motion/{lop,mop}.cfg): no latents in the two finest grids, so
# the synthesis runs at a quarter of the resolution and the flows are constant on 4x4 blocks.
MOTION_N_FT_PER_RES = (0, 0, 1, 1, 1, 1, 1)
MOTION_ARCHITECTURES: dict[str, CoolChicArchitecture] = {
    "lop": CoolChicArchitecture(n_ft_per_res=MOTION_N_FT_PER_RES, dim_arm=8, n_hidden_layers_arm=1,
                                layers_synthesis="8-1-linear-relu,X-1-linear-none,X-3-residual-none"),
    "mop": CoolChicArchitecture(n_ft_per_res=MOTION_N_FT_PER_RES, dim_arm=8, n_hidden_layers_arm=2,
                                layers_synthesis="16-1-linear-relu,X-1-linear-none,X-3-residual-none"),
}
