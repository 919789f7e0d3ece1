"""A process that times training steps of whichever ``coolchic_pl`` is first on its path.

``bench speed --against REV`` starts one per source tree (this checkout and each earlier
commit), so that the same steps of two versions are timed alternately, block by block, in
the same sitting. It is run by path and uses only what every version since the first
Cool-Chic 5 presets has (CoolChicModule, make_preset, read_frame, architecture_from_name,
configure_cpu_allocator),
so that it can drive older trees. Protocol: one JSON request per line on standard input,
one JSON answer per line on standard output.

- ``{"prepare": [image, arch, preset, warmup]}``: build the decoder in the preset's first
  main phase and run ``warmup`` untimed steps;
- ``{"time": [image, arch, preset, steps]}``: ms per step of ``steps`` more steps.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from coolchic_pl.config import make_preset
from coolchic_pl.io import read_frame
from coolchic_pl.model.architecture import architecture_from_name
from coolchic_pl.runtime import configure_cpu_allocator
from coolchic_pl.training.module import CoolChicModule


def _prepare(image: str, arch: str, preset: str) -> tuple[CoolChicModule, torch.optim.Optimizer]:
    torch.manual_seed(0)
    module = CoolChicModule(read_frame(image), architecture_from_name(arch), lmbda=1e-3)
    module.phase = make_preset(preset, 2000).all_phases[0]
    module.temperature.fill_(module.phase.softround_temperature[0])
    module.noise_parameter.fill_(module.phase.noise_parameter[0])
    return module, module.configure_optimizers()


def train_step(module: CoolChicModule, optimizer: torch.optim.Optimizer) -> None:
    """One raw training step, as ``bench speed`` times it in process too."""
    optimizer.zero_grad(set_to_none=True)
    module.training_loss().backward()
    module.clip_gradients()
    optimizer.step()


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]))
    configure_cpu_allocator()  # as every entry point does: without it, large steps page-fault
    decoders: dict[tuple[str, str, str], tuple[CoolChicModule, torch.optim.Optimizer]] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if "prepare" in request:
            image, arch, preset, warmup = request["prepare"]
            decoders[image, arch, preset] = decoder = _prepare(image, arch, preset)
            for _ in range(warmup):
                train_step(*decoder)
            answer = {"ready": True}
        else:
            image, arch, preset, steps = request["time"]
            decoder = decoders[image, arch, preset]
            start = time.perf_counter()
            for _ in range(steps):
                train_step(*decoder)
            answer = {"ms_per_step": (time.perf_counter() - start) / steps * 1e3}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
