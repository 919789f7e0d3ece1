"""``python -m coolchic_pl.bench quantize RUN_DIR``: wall time of the network quantisation
(q-step search, then RDOQ) of a finished image encode's decoder.

The search and RDOQ evaluate the whole decoder once per try, thousands of times on a large
image, so their cost is the cost of one try. This reloads the final decoder of a run
folder (``model.pt``, and the image named in ``results.json`` unless ``--image`` is
given), quantises its networks again as the encoder does, on one thread by default, and
prints the time of each part with the loss before and after RDOQ and a digest of the
result, so that two versions of the code can be compared on the same decoder: same
digest, same result. The parameters of a finished decoder are already on a quantisation
grid, so RDOQ finds fewer changes than in the encode, but every try costs what it costs
there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from coolchic_pl.encode import RESULTS_FILE
from coolchic_pl.io import FrameFormatError, read_frame
from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.nnquant.quantize import QStepSearch, network_rate_bits
from coolchic_pl.nnquant.rdoq import Rdoq
from coolchic_pl.training.module import CoolChicModule


def load_run(run_dir: Path, image: str | None) -> CoolChicModule:
    """The decoder a finished encode saved, with the frame it was fitted to."""
    model_file = run_dir / "model.pt"
    if not model_file.is_file():
        raise ValueError(f"{run_dir}: no model.pt (not the folder of a finished image encode)")
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    if image is None:
        image = json.loads((run_dir / RESULTS_FILE).read_text())["image"]
    frame = read_frame(image)
    if (frame.height, frame.width) != tuple(state["image_size"]):
        raise ValueError(f"{image}: {frame.width}x{frame.height}, the decoder was fitted to "
                         f"{state['image_size'][1]}x{state['image_size'][0]}")
    module = CoolChicModule(frame, CoolChicArchitecture(**state["architecture"]), state["lmbda"])
    module.load_codec_state(state)
    return module.eval()


@torch.no_grad()
def time_quantization(module: CoolChicModule) -> dict[str, float | int | str]:
    start = time.perf_counter()
    quantization = QStepSearch(module.coolchic, module.evaluate_loss).run()
    search_s = time.perf_counter() - start
    before = module.evaluate_loss(network_rate_bits(quantization))
    rdoq = Rdoq(module.coolchic, quantization, module.evaluate_loss)
    start = time.perf_counter()
    quantization = rdoq.run()
    rdoq_s = time.perf_counter() - start
    after = module.evaluate_loss(network_rate_bits(quantization))
    digest = hashlib.sha256(repr(sorted(quantization.items())).encode())
    for parameter in module.coolchic.parameters():
        digest.update(parameter.detach().cpu().numpy().tobytes())
    return {"search_s": search_s, "rdoq_s": rdoq_s, "rdoq_tries": rdoq.tries, "loss_before_rdoq": before,
            "loss_after_rdoq": after, "digest": digest.hexdigest()[:16]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coolchic-bench quantize", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run folder of a finished image encode (holds model.pt)")
    parser.add_argument("--image", default=None, help="the encoded image (default: the one results.json names)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        module = load_run(args.run_dir, args.image)
    except (FrameFormatError, ValueError, OSError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = time_quantization(module)
    print(f"q-step search {result['search_s']:.1f} s, RDOQ {result['rdoq_s']:.1f} s ({result['rdoq_tries']} tries), "
          f"loss {result['loss_before_rdoq']:.9g} -> {result['loss_after_rdoq']:.9g}, digest {result['digest']}")
    return 0
