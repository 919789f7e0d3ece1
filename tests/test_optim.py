"""Cool-Chic 5's optimisation: SOAP for the networks, Adam for the latents, clipping of the
network gradients only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from pytorch_optimizer import SOAP

from coolchic_pl.config import make_preset
from coolchic_pl.io import read_frame
from coolchic_pl.model.architecture import V5_ARCHITECTURES
from coolchic_pl.training import soap
from coolchic_pl.training.module import GRADIENT_CLIP_NORM, CoolChicModule


@pytest.fixture()
def frame(kodim15: Path, tmp_path: Path):
    crop = tmp_path / "crop.png"
    with Image.open(kodim15) as image:
        image.crop((64, 32, 112, 80)).save(crop)
    return read_frame(str(crop))


def _module(frame, optimizer: str) -> CoolChicModule:
    torch.manual_seed(0)
    module = CoolChicModule(frame, V5_ARCHITECTURES["lop5"], lmbda=1e-3)
    module.phase = replace(make_preset("intra5", 1000).all_phases[0], optimizer=optimizer)
    return module


def _step(module: CoolChicModule, optimizer: torch.optim.Optimizer, clip) -> None:
    optimizer.zero_grad(set_to_none=True)
    module.training_loss().backward()
    clip()
    optimizer.step()


@pytest.mark.parametrize("kronecker_max_numel", [soap.KRONECKER_MAX_NUMEL, 0])
def test_soap_phase_steps_as_the_library_with_cool_chic_5_settings(frame, kronecker_max_numel: int,
                                                                    monkeypatch) -> None:
    """Our SOAP (:mod:`coolchic_pl.training.soap`) given the gradients of a real training
    moves the parameters as ``pytorch_optimizer.SOAP`` does, through two eigenbasis refreshes,
    to float rounding: a training phase's gradients are applied to two copies of the
    decoder's parameters, one stepped by each. With a Kronecker limit of 0 every tensor takes
    the per-dimension contractions instead."""
    monkeypatch.setattr(soap, "KRONECKER_MAX_NUMEL", kronecker_max_numel)
    module = _module(frame, "soap")
    optimizer = module.configure_optimizers()
    names = [name for name, _ in module.coolchic.named_parameters()]
    copy = [p.detach().clone().requires_grad_() for p in module.coolchic.parameters()]
    library = SOAP([
        dict(params=[p for n, p in zip(names, copy) if not n.startswith("latent.")], betas=(0.95, 0.95),
             precondition_frequency=10, max_precondition_dim=256, weight_decay=0.01),
        dict(params=[p for n, p in zip(names, copy) if n.startswith("latent.")], betas=(0.9, 0.999),
             max_precondition_dim=0, weight_decay=0.0),
    ], lr=module.phase.lr)
    start = [p.detach().clone() for p in copy]
    for _ in range(22):
        _step(module, optimizer, module.clip_gradients)
        for theirs, mine in zip(copy, module.coolchic.parameters()):
            theirs.grad = mine.grad.clone()
        library.step()
    for name, mine, theirs, before in zip(names, module.coolchic.parameters(), copy, start):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-6), name
        assert not torch.equal(mine, before), f"{name} did not move"


@pytest.mark.parametrize("optimizer", ["adam", "soap"])
def test_clipping_leaves_the_latents_alone_only_with_soap(frame, optimizer: str) -> None:
    module = _module(frame, optimizer)
    module.configure_optimizers()
    module.training_loss().backward()
    for p in module.coolchic.latent.parameters():
        p.grad.fill_(1.0)  # a norm far above the clipping threshold
    latent_grads = [p.grad.clone() for p in module.coolchic.latent.parameters()]
    module.clip_gradients()
    networks = [p.grad for n, p in module.coolchic.named_parameters() if not n.startswith("latent.")]
    everything = [p.grad for p in module.coolchic.parameters()]
    if optimizer == "soap":
        assert torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in networks])) <= GRADIENT_CLIP_NORM * 1.0001
        assert all(torch.equal(g, p.grad) for g, p in zip(latent_grads, module.coolchic.latent.parameters()))
    else:
        assert torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in everything])) <= GRADIENT_CLIP_NORM * 1.0001
