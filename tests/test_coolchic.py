import pytest
import torch

from coolchic_pl.model.architecture import (
    ARCHITECTURES, MOTION_ARCHITECTURES, CoolChicArchitecture, architecture_from_name,
)
from coolchic_pl.model.coolchic import MODULE_NAMES, CoolChic
from coolchic_pl.model.layout import NETWORK_NAMES, network_shapes

DOCUMENTED_MAC_PER_PIXEL = {"vlop": 330, "lop": 580, "mop": 1110, "hop": 1430}


@pytest.mark.parametrize("name", sorted(DOCUMENTED_MAC_PER_PIXEL))
def test_mac_per_pixel_matches_documentation(name: str) -> None:
    model = CoolChic((512, 768), architecture_from_name(name))
    assert model.mac_per_pixel() == pytest.approx(DOCUMENTED_MAC_PER_PIXEL[name], rel=0.05)


def test_unknown_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'huge'"):
        architecture_from_name("huge")


def test_forward_shapes_and_rate_for_odd_size() -> None:
    model = CoolChic((127, 191))
    out = model("softround", 0.3, "kumaraswamy", 2.0)
    assert out.image.shape == (1, 3, 127, 191)
    n_latents = sum(h * w for h, w in model.latent.sizes)
    assert out.rate_bits.shape == (n_latents,)
    assert len(model.rate_per_grid(out.rate_bits)) == 7
    assert (out.rate_bits >= 0).all() and (out.rate_bits <= 16).all()


def test_eval_hard_rounds_without_noise() -> None:
    model = CoolChic((32, 48))
    with torch.no_grad():
        for grid in model.latent.grids:
            grid.normal_(0, 0.2)
    model.eval()
    first = model("softround", 0.3, "gaussian", 5.0)
    second = model("none", 0.3, "kumaraswamy", 1.0)
    assert torch.equal(first.latents, torch.round(model.latent.flat()))
    assert torch.equal(first.image, second.image)
    model.train()
    assert not torch.equal(model("softround", 0.3, "gaussian", 5.0).latents, first.latents)


def test_parameter_groups_partition_the_model_and_all_train() -> None:
    model = CoolChic((32, 48))
    groups = {name: {id(p) for p in model.module_parameters([name])} for name in MODULE_NAMES if name != "all"}
    everything = {id(p) for p in model.module_parameters(["all"])}
    assert set().union(*groups.values()) == everything
    assert sum(len(g) for g in groups.values()) == len(everything)
    assert len(model.module_parameters(["arm", "arm", "latent"])) == len(groups["arm"]) + len(groups["latent"])
    out = model("softround", 0.3, "gaussian", 0.25)
    (out.image.square().mean() + out.rate_bits.sum() * 1e-4).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.count_nonzero(param.grad) > 0, name
    with pytest.raises(ValueError, match="unknown module 'warper'"):
        model.module_parameters(["warper"])


def test_empty_finest_grids_decode_at_full_size() -> None:
    # Motion-style pyramid: the synthesis runs at 1/4 resolution and is upsampled.
    model = CoolChic((30, 44), CoolChicArchitecture(n_ft_per_res=(0, 0, 1, 1, 1), dim_arm=8, n_hidden_layers_arm=1,
                                                    layers_synthesis="8-1-linear-relu,X-1-linear-none"), n_outputs=2)
    out = model()
    assert out.image.shape == (1, 2, 30, 44)
    assert out.rate_bits.numel() == sum(h * w for h, w in model.latent.sizes[2:])
    assert torch.equal(out.image[..., 0, 0], out.image[..., 3, 3])  # 4x4 block-constant


def test_all_named_architectures_build() -> None:
    for name, arch in ARCHITECTURES.items():
        model = CoolChic((16, 24), arch)
        assert model().image.shape == (1, 3, 16, 24), name


@pytest.mark.parametrize("name,role", [(name, "image") for name in ARCHITECTURES]
                         + [(name, "motion") for name in MOTION_ARCHITECTURES])
def test_the_torch_free_layout_is_the_modules_layout(name: str, role: str) -> None:
    """The decoder reads a file's networks by :func:`network_shapes` alone, without building
    the modules the encoder trained: the shapes and their order must be the modules'."""
    architecture = (ARCHITECTURES if role == "image" else MOTION_ARCHITECTURES)[name]
    size, n_outputs = (75, 101), 3 if role == "image" else 5
    model = CoolChic(size, architecture, n_outputs=n_outputs)
    shapes = network_shapes(architecture, size, n_outputs)
    for network in NETWORK_NAMES:
        built = [(n, tuple(p.shape)) for n, p in getattr(model, network).named_parameters()]
        assert shapes[network] == built
